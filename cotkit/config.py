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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from cotkit.errors import ConfigError, UnknownNameError
from cotkit.models import DEFAULT_MODEL

# The option machinery is `cotkit.options`: it sits below the plugin contracts, which use it too.
from cotkit.options import (
    FALSE_WORDS,
    NONE_WORDS,
    TRUE_WORDS,
    OptionInfo,
    build,
    coerce,
    is_config_class,
    iter_options,
    option,
    parse_key_values,
    read_scalars,
    to_dict,
)

# ------------------------------------------------------------------------------------ run-level


@dataclass
class RunConfig:
    """Options of every training run, whatever the method (top level of the YAML file)."""

    method: str = option(help="Training method; `cotkit plugins` lists them, `cotkit show METHOD` its options.")
    task: str = option(help="Task, e.g. gsm8k, bbh:sports_understanding, arc:challenge.")
    model: str = option(DEFAULT_MODEL, help="Model to train: hub id, local folder, .gguf file or alias.")
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
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio", "none"]] = option(
        default_factory=list,
        help="Experiment trackers that get the config, metrics, step losses and accuracy plot (repeatable or comma-separated).",
    )

    def __post_init__(self) -> None:
        if self.dev_size is not None and self.dev_size < 1:
            raise ConfigError(f"dev_size must be at least 1, got {self.dev_size}")
        if "none" in self.report_to and len(set(self.report_to)) > 1:
            raise ConfigError(f"--report-to {','.join(self.report_to)}: `none` cannot be combined with a tracker")
        from cotkit.apikeys import refuse_secrets_in_options

        # Checked here, before config.yaml is written: a key given as an option would be saved there.
        refuse_secrets_in_options(self.backend_options, "--backend-option")


#: Run-level keys that may differ when a run is resumed (where the data lives, where the run is, where it reports).
RESUME_FREE_KEYS = ("output_dir", "data_dir", "report_to")


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


# ------------------------------------------------------------------------------------ merging


def merge_into(cls: type, target: dict[str, Any], data: Any, source: str, prefix: tuple[str, ...] = ()) -> None:
    """Validate a nested dict (from YAML) against `cls` and merge its coerced values into `target`."""
    where_section = ".".join(prefix) or "top level"
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where_section} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
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
            meta = f.metadata
            where = f"{source}: {'.'.join(path)}"
            target[key] = coerce(value, tp, where, meta.get("choices"), meta.get("minimum"), meta.get("maximum"))


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
        for spelling in _spellings(o):
            table[spelling] = ("run", o)
    for o in iter_options(method_cls):
        name = o.flag[2:]
        if name in run_opts:
            raise ConfigError(
                f"method {method_name!r} declares option {o.dotted!r}, which is also a run option; rename it"
            )
        for spelling in _spellings(o):
            table[spelling] = ("method", o)
            table[f"{method_name}.{spelling}"] = ("method", o)
    return table


def _spellings(o: OptionInfo) -> list[str]:
    """Flag names (no dashes) of an option: `backend-option` (one KEY=VALUE per use) also answers to `backend-options`."""
    name = o.flag[2:]
    return [name, name + "s"] if o.repeated_pairs else [name]


#: The short forms `cotkit sample` and `cotkit eval` give these run options, accepted by `train` too.
SHORT_FLAGS = {"-b": "--backend", "-B": "--backend-option", "-O": "--task-option"}


def parse_flags(tokens: Sequence[str], method_name: str, method_cls: type) -> list[Flag]:
    """Parse `--name value`, `--name=value`, `--flag`, `--no-flag` (and SHORT_FLAGS) against the known options."""
    table = option_table(method_name, method_cls)
    flags: list[Flag] = []
    i = 0
    tokens = [SHORT_FLAGS.get(tok, tok) for tok in tokens]
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
            # suggest each option once, by its own flag (not `--star.x` or a plural alias)
            visible = [k for k, (_, o) in table.items() if k == o.flag[2:]]
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
        elif base is bool and (i + 1 >= len(tokens) or tokens[i + 1].strip().lower() not in TRUE_WORDS | FALSE_WORDS | NONE_WORDS):
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


def resolve(
    tokens: Sequence[str] = (),
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    method_cls: type | None = None,
    find_method: Callable[[str], type] | None = None,
) -> TrainConfig:
    """Defaults < the YAML file < `overrides` (run-level values from declared CLI options) < `tokens`.

    `tokens` are the remaining command-line options (`--iterations 3 --sft.learning-rate 1e-5`).
    The method's class is `method_cls`, else `find_method(name)`: the caller's plugin registry
    (this module reads none), which also tells a YAML section of another method from a typo.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    data = load_yaml(config_file) if config_file else {}
    source = str(config_file) if config_file else "config"
    method_name = overrides.get("method") or data.get("method")
    if not method_name:
        raise ConfigError("missing required option --method (or `method:` in the config file)")
    method_name = str(method_name)
    if method_cls is None:
        method_cls = _find_method(find_method, method_name)
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
                if key != method_name and isinstance(value, dict) and find_method is not None and find_method(key):
                    raise ConfigError(
                        f"{source}: options for method {key!r} given, but the method is {method_name!r}"
                    )
            except UnknownNameError:
                pass
            raise UnknownNameError(f"key in {source}:", str(raw_key), [*run_field_names, method_name])

    run_infos = {o.path[0]: o for o in iter_options(RunConfig)}
    for key, value in overrides.items():
        info = run_infos[key]
        run_values[key] = info.coerce(value, f"--{key.replace('_', '-')}")

    repeated: set[tuple[str, ...]] = set()  # list options given once already: a repeat adds to them
    for flag in parse_flags(tokens, method_name, mcfg_cls):
        info = flag.info
        where = flag.text.partition("=")[0]
        current_target = run_values if flag.section == "run" else method_values
        if _bare(info.type) is dict:
            prev = _get_path(current_target, info.path) or {}
            value = {**prev, **read_scalars(parse_key_values([flag.raw], where))}
        elif _bare(info.type) is list and info.path in repeated:
            value = [*_get_path(current_target, info.path), *info.coerce(flag.raw, where)]
        else:
            value = info.coerce(flag.raw, where)
            if _bare(info.type) is list:
                repeated.add(info.path)
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


def _find_method(find_method: Callable[[str], type] | None, name: str) -> type:
    if find_method is None:
        raise TypeError("pass the method's class (method_cls) or a registry lookup (find_method)")
    return find_method(name)


def _get_path(d: dict[str, Any], path: Sequence[str]) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def from_saved(
    data: dict[str, Any], source: str, method_cls: type | None = None, find_method: Callable[[str], type] | None = None
) -> TrainConfig:
    """Rebuild a TrainConfig from a run directory's config.yaml contents (the method found as in `resolve`)."""
    method_name = str(data.get("method") or "")
    if not method_name:
        raise ConfigError(f"{source}: no `method:` key")
    if method_cls is None:
        method_cls = _find_method(find_method, method_name)
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
