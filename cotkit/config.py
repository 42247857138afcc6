"""Typed run configuration: dataclasses with help text, resolved from defaults < YAML < flags.

A method declares its options as a stdlib dataclass (`Method.Config`) whose fields carry their
help in `metadata["help"]` (use `option(...)`). Nested dataclasses become dotted options:
`SFTConfig` inside STaR's config is `--sft.learning-rate` on the command line and

    star:
      sft:
        learning_rate: 1.0e-5

in a YAML file. Run-level options (task, model, seed, ...) are `RunConfig` fields and sit at the
top level of the YAML. Every unknown key or flag is a ConfigError that suggests the closest names.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from cotkit.errors import ConfigError, UnknownNameError, suggest

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~"}


def option(default: Any = MISSING, *, help: str, choices: Sequence[Any] | None = None, default_factory: Any = MISSING):
    """A dataclass field with help text (and optional allowed values) for `cotkit show` and flags."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ------------------------------------------------------------------------------------ run-level


@dataclass
class RunConfig:
    """Options of every training run, whatever the method (top level of the YAML file)."""

    method: str = option(help="Training method; `cotkit plugins` lists them, `cotkit show METHOD` its options.")
    task: str = option(help="Task, e.g. gsm8k, bbh:sports_understanding, arc:challenge.")
    model: str = option("smollm2-135m", help="Model to train: hub id, local folder, .gguf file or alias.")
    backend: str = option("hf", help="Sampling backend (hf, vllm, ...).")
    backend_options: dict[str, Any] = option(
        default_factory=dict, help="Backend options KEY=VALUE (repeatable), e.g. batch_size=16."
    )
    task_options: dict[str, Any] = option(default_factory=dict, help="Task options KEY=VALUE (repeatable).")
    output_dir: str | None = option(None, help="Run directory (default runs/<method>-<task>-<model>).")
    data_dir: str | None = option(
        None, help="Folder of the publishers' data files (else --data-dir before the command, $COTKIT_DATA_DIR, the hub)."
    )
    seed: int = option(0, help="Seed of sampling, data order and initialisation; same seed, same run.")
    split_seed: int = option(1234, help="Seed of the dev/fit carving of the task's training split.")
    dev_size: int | None = option(None, help="Size of the dev split carved from train (default: the task's, 10%).")

    def __post_init__(self) -> None:
        if self.dev_size is not None and self.dev_size < 1:
            raise ConfigError(f"dev_size must be at least 1, got {self.dev_size}")
        from cotkit.apikeys import refuse_secrets_in_options

        # Checked here, before config.yaml is written: a key given as an option would be saved there.
        refuse_secrets_in_options(self.backend_options, "--backend-option")


#: Run-level keys that may differ when a run is resumed (where the data lives, where the run is).
RESUME_FREE_KEYS = ("output_dir", "data_dir")


@dataclass
class TrainConfig:
    """A resolved run: the run-level options and the method's own options."""

    run: RunConfig
    method: Any

    def to_dict(self) -> dict[str, Any]:
        """The YAML-ready nested dict: run-level keys, then the method's options under its name."""
        d = to_dict(self.run)
        d[self.run.method] = to_dict(self.method)
        return d

    def to_yaml(self) -> str:
        """The resolved config as YAML, every default filled in."""
        return dump_yaml(self.to_dict())


# ------------------------------------------------------------------------------------ schemas


@dataclass(frozen=True)
class OptionInfo:
    """One leaf option of a config dataclass, for flags, `cotkit show` and validation."""

    path: tuple[str, ...]
    type: Any
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    required: bool

    @property
    def dotted(self) -> str:
        """`sft.learning_rate`."""
        return ".".join(self.path)

    @property
    def flag(self) -> str:
        """`--sft.learning-rate`."""
        return "--" + ".".join(p.replace("_", "-") for p in self.path)

    def type_name(self) -> str:
        """A short readable type: int, float, str, bool, list[str], ..."""
        return _type_name(self.type)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def is_config_class(tp: Any) -> bool:
    """True for a dataclass type used as a nested config section."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def iter_options(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[OptionInfo]:
    """Every leaf option of a config dataclass, nested sections flattened to dotted paths."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        path = (*prefix, f.name)
        if is_config_class(tp):
            yield from iter_options(tp, path)
            continue
        if f.default is not MISSING:
            default, required = f.default, False
        elif f.default_factory is not MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        yield OptionInfo(path, tp, default, f.metadata.get("help", ""), f.metadata.get("choices"), required)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        name = " | ".join(_type_name(a) for a in inner)
        return f"{name} | None" if len(inner) < len(args) else name
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"list[{_type_name(args[0]) if args else 'str'}]"
    if origin is dict:
        return "KEY=VALUE"
    return getattr(tp, "__name__", str(tp))


# ----------------------------------------------------------------------------------- coercion


def coerce(value: Any, tp: Any, where: str, choices: Sequence[Any] | None = None) -> Any:
    """Convert a YAML or command-line value to the field's type; a bad value names `where`."""
    out = _coerce(value, tp, where)
    if choices is not None and out is not None and out not in choices:
        raise ConfigError(f"{where}: {out!r} is not one of {', '.join(map(str, choices))}")
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if len(inner) < len(args):
                return None
            raise ConfigError(f"{where}: a value is required")
        errors = []
        for a in inner:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
        return str(value)
    if origin in (list, tuple) or tp in (list, tuple):
        item = args[0] if args else str
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = parse_key_value_list([value], where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of KEY: VALUE, got {value!r}")
        return dict(value)
    return value


def parse_key_value_list(items: Sequence[str], where: str) -> dict[str, Any]:
    """['a=1', 'b=x'] -> {'a': 1, 'b': 'x'} (values read as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} {item!r}: expected KEY=VALUE")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        out[key.strip().replace("-", "_")] = parsed if isinstance(parsed, (str, int, float, bool)) or parsed is None else value
    return out


# --------------------------------------------------------------------------------- dict <-> obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as a plain nested dict (in field order)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else _plain(v)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return v


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Construct a config dataclass from a nested dict of already-coerced values (defaults fill gaps)."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if is_config_class(tp):
            kwargs[f.name] = build(tp, values.get(f.name, {}) or {}, f"{where}{f.name}.")
        elif f.name in values:
            kwargs[f.name] = values[f.name]
        elif f.default is MISSING and f.default_factory is MISSING:
            flag = "--" + (where + f.name).replace("_", "-")
            raise ConfigError(f"missing required option {flag} (or `{where}{f.name}:` in the config file)")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {cls.__name__}: {e}") from e


def merge_into(cls: type, target: dict[str, Any], data: Any, source: str, prefix: tuple[str, ...] = ()) -> None:
    """Validate a nested dict (from YAML) against `cls` and merge its coerced values into `target`."""
    where_section = ".".join(prefix) or "top level"
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where_section} must be a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    fields_by_name = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        f = fields_by_name.get(key)
        path = (*prefix, key)
        if f is None:
            raise UnknownNameError(f"key in {source} at {where_section}:", str(raw_key), fields_by_name)
        tp = hints[key]
        if is_config_class(tp):
            sub = target.setdefault(key, {})
            merge_into(tp, sub, value, source, path)
        else:
            target[key] = coerce(value, tp, f"{source}: {'.'.join(path)}", f.metadata.get("choices"))


def set_path(target: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """target[a][b][c] = value, creating sections."""
    for p in path[:-1]:
        target = target.setdefault(p, {})
    target[path[-1]] = value


# -------------------------------------------------------------------------------------- YAML


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a dict; a syntax error names the file, line and column."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read ({e.strerror or e})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        loc = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{loc}: invalid YAML ({e.problem or e})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level, got {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML in key order, block style (what config.yaml and --dry-run show)."""
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


# -------------------------------------------------------------------------------------- flags


@dataclass
class Flag:
    """One parsed command-line option: the option it sets and its raw value."""

    info: OptionInfo
    section: str  # "run" or "method"
    raw: Any
    text: str  # as typed, for error messages


def option_table(method_name: str, method_cls: type) -> dict[str, tuple[str, OptionInfo]]:
    """Flag name (no dashes, kebab case) -> (section, option), for run-level and method options.

    Method options are also reachable with the method's name as prefix (`--star.iterations`).
    """
    table: dict[str, tuple[str, OptionInfo]] = {}
    run_opts = {o.flag[2:]: o for o in iter_options(RunConfig)}
    for name, o in run_opts.items():
        table[name] = ("run", o)
        if name.endswith("-options"):  # --task-option K=V, repeatable, reads better than the plural
            table[name[: -len("s")]] = ("run", o)
    for o in iter_options(method_cls):
        name = o.flag[2:]
        if name in run_opts:
            raise ConfigError(
                f"method {method_name!r} declares option {o.dotted!r}, which is also a run option; rename it"
            )
        table[name] = ("method", o)
        table[f"{method_name}.{name}"] = ("method", o)
    return table


def parse_flags(tokens: Sequence[str], method_name: str, method_cls: type) -> list[Flag]:
    """Parse `--name value`, `--name=value`, `--flag`, `--no-flag` against the known options."""
    table = option_table(method_name, method_cls)
    flags: list[Flag] = []
    i = 0
    tokens = list(tokens)
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            raise ConfigError(f"unexpected argument {tok!r}: options look like --name VALUE")
        name, eq, value = tok[2:].partition("=")
        key = name.replace("_", "-")
        negated = False
        if key not in table and key.startswith("no-") and key[3:] in table:
            key, negated = key[3:], True
        elif key not in table and ".no-" in key:
            head, _, tail = key.rpartition(".no-")
            if f"{head}.{tail}" in table:
                key, negated = f"{head}.{tail}", True
        if key not in table:
            visible = [k for k in table if not k.startswith(f"{method_name}.")]
            raise UnknownNameError(f"option of `cotkit train --method {method_name}`", "--" + key, ["--" + k for k in visible])
        section, info = table[key]
        base = _bare(info.type)
        if negated:
            if base is not bool:
                raise ConfigError(f"--no-{key}: only true/false options have a --no- form")
            if eq:
                raise ConfigError(f"{tok}: --no-{key} takes no value")
            flags.append(Flag(info, section, False, tok))
            i += 1
            continue
        if eq:
            raw = value
            i += 1
        elif base is bool and (i + 1 >= len(tokens) or tokens[i + 1].strip().lower() not in _TRUE | _FALSE | _NONE):
            raw = True
            i += 1
        elif base is dict:
            if i + 1 >= len(tokens):
                raise ConfigError(f"--{key} needs a KEY=VALUE argument")
            raw = tokens[i + 1]
            i += 2
        else:
            if i + 1 >= len(tokens) or (tokens[i + 1].startswith("--") and len(tokens[i + 1]) > 2):
                raise ConfigError(f"--{key} needs a value ({info.type_name()})")
            raw = tokens[i + 1]
            i += 2
        flags.append(Flag(info, section, raw, tok))
    return flags


def _bare(tp: Any) -> Any:
    """The type inside Optional[...]; the origin for generics."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _bare(inner[0]) if len(inner) == 1 else tp
    return origin or tp


# ------------------------------------------------------------------------------------ resolve


def method_class(name: str) -> type:
    """The registered Method class of that name (its `Config` holds its options)."""
    from cotkit.plugins import host

    return host().get("method", name)


def resolve(
    tokens: Sequence[str] = (),
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    method_cls: type | None = None,
) -> TrainConfig:
    """Defaults < the YAML file < `overrides` (run-level values from declared CLI options) < `tokens`.

    `tokens` are the remaining command-line options (`--iterations 3 --sft.learning-rate 1e-5`).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    data = load_yaml(config_file) if config_file else {}
    source = str(config_file) if config_file else "config"
    method_name = overrides.get("method") or data.get("method")
    if not method_name:
        raise ConfigError("missing required option --method (or `method:` in the config file)")
    method_name = str(method_name)
    if method_cls is None:
        method_cls = method_class(method_name)
    mcfg_cls = getattr(method_cls, "Config", None)
    if not is_config_class(mcfg_cls):
        raise ConfigError(f"method {method_name!r} has no Config dataclass")

    run_values: dict[str, Any] = {}
    method_values: dict[str, Any] = {}
    run_field_names = {f.name for f in dataclasses.fields(RunConfig)}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key == method_name.replace("-", "_"):  # a method named with a hyphen (finetune-cot) keeps it in YAML
            merge_into(mcfg_cls, method_values, value, source, (method_name,))
        elif key in run_field_names:
            merge_into(RunConfig, run_values, {key: value}, source)
        else:
            try:
                if key != method_name and isinstance(value, dict) and method_class(key):
                    raise ConfigError(
                        f"{source}: options for method {key!r} given, but the method is {method_name!r}"
                    )
            except UnknownNameError:
                pass
            raise UnknownNameError(f"key in {source}:", str(raw_key), [*run_field_names, method_name])

    run_infos = {o.path[0]: o for o in iter_options(RunConfig)}
    for key, value in overrides.items():
        info = run_infos[key]
        run_values[key] = coerce(value, info.type, f"--{key.replace('_', '-')}", info.choices)

    for flag in parse_flags(tokens, method_name, mcfg_cls):
        info = flag.info
        where = flag.text.partition("=")[0]
        current_target = run_values if flag.section == "run" else method_values
        if _bare(info.type) is dict:
            prev = _get_path(current_target, info.path) or {}
            value = {**prev, **parse_key_value_list([flag.raw], where)}
        else:
            value = coerce(flag.raw, info.type, where, info.choices)
        set_path(current_target, info.path, value)

    if run_values.get("method", method_name) != method_name:
        raise ConfigError(f"--method {method_name!r} but the config sets method {run_values['method']!r}")
    run_values["method"] = method_name
    run = build(RunConfig, run_values)
    from cotkit.option_checks import check_config_values

    # Before the method's own checks (whose messages assume sane values) and long before sampling.
    check_config_values(method_values, iter_options(mcfg_cls), method_name)
    method_cfg = build(mcfg_cls, method_values, f"{method_name}.")
    return TrainConfig(run=run, method=method_cfg)


def _get_path(d: dict[str, Any], path: Sequence[str]) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def from_saved(data: dict[str, Any], source: str, method_cls: type | None = None) -> TrainConfig:
    """Rebuild a TrainConfig from a run directory's config.yaml contents."""
    method_name = str(data.get("method") or "")
    if not method_name:
        raise ConfigError(f"{source}: no `method:` key")
    if method_cls is None:
        method_cls = method_class(method_name)
    run_values: dict[str, Any] = {}
    method_values: dict[str, Any] = {}
    for key, value in data.items():
        if key == method_name:
            merge_into(method_cls.Config, method_values, value, source, (method_name,))
        else:
            merge_into(RunConfig, run_values, {key: value}, source)
    return TrainConfig(build(RunConfig, run_values), build(method_cls.Config, method_values, f"{method_name}."))


# --------------------------------------------------------------------------------------- diff


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: Sequence[str] = RESUME_FREE_KEYS) -> list[str]:
    """Readable lines `key: old -> new` for every option that differs (ignoring `ignore` keys)."""
    a, b = _flat_options(old), _flat_options(new)
    lines = []
    for key in [*a, *(k for k in b if k not in a)]:
        if key.split(".")[0] in ignore:
            continue
        if key not in a:
            lines.append(f"  {key}: (absent) -> {b[key]!r}")
        elif key not in b:
            lines.append(f"  {key}: {a[key]!r} -> (absent)")
        elif a[key] != b[key]:
            lines.append(f"  {key}: {a[key]!r} -> {b[key]!r}")
    return lines


def _flat_options(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("task_options", "backend_options"):
            out.update(_flat_options(v, key + "."))
        else:
            out[key] = v
    return out


def closest_flags(name: str, method_name: str, method_cls: type) -> list[str]:
    """Known flags close to `name` (for messages outside the parser)."""
    table = option_table(method_name, method_cls)
    return ["--" + s for s in suggest(name.lstrip("-"), table)]
