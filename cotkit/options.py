"""Typed options: `option(...)` dataclass fields, and the one coercion of option values to their types.

Every plugin kind declares its options the same way: a stdlib dataclass (the plugin's `Config`)
whose fields are made with `option(default, help=...)`. One path turns what a user gives into
typed values, whatever the source: `--iterations 3`, `-O level=5`, `-B batch_size=8`,
`-S neutral=1`, a YAML mapping, or keyword arguments in Python. A bad value or an unknown key is a
one-line `ConfigError` naming the option, with the closest names suggested.

Methods' options are resolved with the run's (defaults < YAML < flags) by `cotkit.config`; the
other kinds get theirs when built: `plugin_config` is what the `Task`, `Verifier`, `StepScorer`
and `Backend` constructors call. This module sits at the bottom of the package (it imports only
`cotkit.errors`), so the plugin contracts can use it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from cotkit.errors import ConfigError, CotkitError, UnknownNameError, suggest

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
NONE_WORDS = frozenset({"none", "null", "~"})


def option(
    default: Any = MISSING,
    *,
    help: str,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    default_factory: Any = MISSING,
    extra_keys: bool = False,
):
    """A dataclass field with help text for `cotkit show`, flags and KEY=VALUE options.

    `choices` lists the allowed values; `minimum` / `maximum` bound a number (a bounded number
    must also be finite). These are checked whenever a value is given as an option. A
    `dict[str, Any]` field with `extra_keys=True` takes every key its Config does not declare
    (a backend that passes them on to its engine); a Config has at most one.
    """
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if minimum is not None:
        metadata["minimum"] = minimum
    if maximum is not None:
        metadata["maximum"] = maximum
    if extra_keys:
        metadata["extra_keys"] = True
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class NoOptions:
    """The options of a plugin that declares none (the default `Config` of every plugin contract)."""


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
    minimum: float | None = None
    maximum: float | None = None
    extra_keys: bool = False

    @property
    def dotted(self) -> str:
        """`sft.learning_rate`."""
        return ".".join(self.path)

    @property
    def flag(self) -> str:
        """`--sft.learning-rate`; `--backend-option` for a KEY=VALUE mapping `backend_options` (one pair per use)."""
        flag = "--" + ".".join(p.replace("_", "-") for p in self.path)
        return flag[:-1] if self.repeated_pairs else flag

    @property
    def repeated_pairs(self) -> bool:
        """A mapping named `*_options`, given as one KEY=VALUE per flag (its flag is the singular)."""
        return self.path[-1].endswith("_options") and self.type_name() == "KEY=VALUE"

    def type_name(self) -> str:
        """A short readable type: int, float, str, bool, list[str], ..."""
        return type_name(self.type)

    def coerce(self, value: Any, where: str) -> Any:
        """`value` as this option's type, with its choices and bounds checked."""
        return coerce(value, self.type, where, self.choices, self.minimum, self.maximum)

    def limits(self) -> str:
        """`one of a, b`, `at least 1`, ... (empty when the option declares none), for `cotkit show`."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        return _range_text(self.minimum, self.maximum)


def is_config_class(tp: Any) -> bool:
    """True for a dataclass type used as a nested config section."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def iter_options(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[OptionInfo]:
    """Every leaf option of a config dataclass, nested sections flattened to dotted paths."""
    hints = typing.get_type_hints(cls)
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
        meta = f.metadata
        yield OptionInfo(
            path, tp, default, meta.get("help", ""), meta.get("choices"), required,
            meta.get("minimum"), meta.get("maximum"), bool(meta.get("extra_keys")),
        )  # fmt: skip


def type_name(tp: Any) -> str:
    """A short readable name of an option's type: `int`, `float | None`, `list[str]`, `KEY=VALUE`."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        name = " | ".join(type_name(a) for a in inner)
        return f"{name} | None" if len(inner) < len(args) else name
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"list[{type_name(args[0]) if args else 'str'}]"
    if origin is dict:
        return "KEY=VALUE"
    return getattr(tp, "__name__", str(tp))


# ----------------------------------------------------------------------------------- coercion


def coerce(
    value: Any,
    tp: Any,
    where: str,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """Convert a command-line string, YAML value or Python value to the type `tp`; a bad value names `where`."""
    out = _coerce(value, tp, where)
    if choices is not None and out is not None and out not in choices:
        raise ConfigError(f"{where}: {out!r} is not one of {', '.join(map(str, choices))}")
    if (minimum is not None or maximum is not None) and isinstance(out, (int, float)) and not isinstance(out, bool):
        if not math.isfinite(out):
            raise ConfigError(f"{where}: must be a finite number, got {out!r}")
        if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
            raise ConfigError(f"{where}: must be {_range_text(minimum, maximum)}, got {out!r}")
    return out


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"between {minimum:g} and {maximum:g}"
    if minimum is not None:
        return f"at least {minimum:g}"
    if maximum is not None:
        return f"at most {maximum:g}"
    return ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            if len(inner) < len(args):
                return None
            raise ConfigError(f"{where}: a value is required")
        errors = []
        for a in inner:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not a {type_name(tp)}")
    if origin is Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
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
            raise ConfigError(f"{where}: must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where}: must be a number, got {value!r}")
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
            value = read_scalars(parse_key_values([value], where))
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of KEY: VALUE, got {value!r}")
        return dict(value)
    return value


# ------------------------------------------------------------------------------ KEY=VALUE


def parse_key_values(items: Iterable[str] | None, where: str) -> dict[str, str]:
    """['a=1', 'b-c=x'] -> {'a': '1', 'b_c': 'x'}: the one parser of KEY=VALUE options; values stay text.

    The option they set gives them their type (`coerce`); a value with no declared type is read
    as a YAML scalar by `read_scalars`. A malformed item names `where` (the flag).
    """
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where} {item!r}: expected KEY=VALUE")
        out[key.strip().replace("-", "_")] = value
    return out


def read_scalars(values: Mapping[str, Any]) -> dict[str, Any]:
    """Text values read as YAML scalars (`8` -> 8, `true` -> True, `cpu` -> 'cpu'); other values as they are.

    For options whose type nothing declares (a run's `backend_options`, a method's dict options,
    a backend's `extra_keys`), so `batch_size=8` is saved and passed on as the number 8.
    """
    return {key: read_scalar(value) if isinstance(value, str) else value for key, value in values.items()}


def read_scalar(text: str) -> Any:
    """One text value as a YAML scalar; text that YAML reads as a list, mapping or nothing stays text."""
    import yaml

    if not text.strip():
        return ""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return parsed if isinstance(parsed, (str, int, float, bool)) or parsed is None else text


# --------------------------------------------------------------------------------- dict <-> obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as a plain nested dict (in field order)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else plain_value(v)
    return out


def plain_value(v: Any) -> Any:
    """An option value as YAML writes it: tuples as lists, paths as strings."""
    if isinstance(v, (tuple, list)):
        return [plain_value(x) for x in v]
    if isinstance(v, dict):
        return {k: plain_value(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return v


def build(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Construct a config dataclass from a nested dict of already-coerced values (defaults fill gaps)."""
    hints = typing.get_type_hints(cls)
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
    return _construct(cls, kwargs)


def _construct(cls: type, kwargs: dict[str, Any]) -> Any:
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {cls.__name__}: {e}") from e


# ------------------------------------------------------------------------------ plugin options


class UnknownOptionError(UnknownNameError, ConfigError):
    """A key a plugin's Config does not declare: a bad option (ConfigError) with the closest names suggested."""

    def __init__(self, owner: str, key: str, known: Iterable[str]):
        self.kind, self.name = "option", key
        known = sorted(set(known))
        close = suggest(key, known)
        if close:
            tail = f"; did you mean {' or '.join(repr(c) for c in close)}?"
        elif known:
            tail = f" (known: {', '.join(known)})"
        else:
            tail = " (it takes no options)"
        # Both phrasings are kept: messages of earlier releases said either, and scripts match them.
        CotkitError.__init__(self, f"unknown option {key!r}: {owner} has no option {key!r}{tail}")


def plugin_config(config_cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """A plugin's typed options: `values` (KEY=VALUE text, YAML values or Python values) checked and
    coerced against its `Config` dataclass, every option not given at its default.

    `owner` names the plugin in errors (`backend hf`). Keys may use `-` for `_`. An unknown key
    is refused unless the Config has an `extra_keys` field, which then takes it (text read as a
    YAML scalar).
    """
    if not is_config_class(config_cls):
        raise ConfigError(f"{owner}: its Config is not a dataclass ({config_cls!r})")
    infos = {o.path[0]: o for o in iter_options(config_cls)}
    if any(len(o.path) > 1 for o in infos.values()):
        raise ConfigError(f"{owner}: plugin options are flat KEY=VALUE pairs; its Config nests a section")
    extra = next((o.path[0] for o in infos.values() if o.extra_keys), None)
    given: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        info = infos.get(key)
        if info is not None and not info.extra_keys:
            given[key] = info.coerce(value, f"{owner} option {key}")
        elif extra is None:
            raise UnknownOptionError(owner, str(raw_key), infos)
        else:  # the extra field itself given as a mapping (a saved config) merges into it
            more = value if info is not None and isinstance(value, Mapping) else {key: value}
            given.setdefault(extra, {}).update(read_scalars(more))
    missing = [name for name, o in infos.items() if o.required and name not in given]
    if missing:
        raise ConfigError(f"{owner} needs the option {missing[0]} (KEY=VALUE)")
    return _construct(config_cls, given)
