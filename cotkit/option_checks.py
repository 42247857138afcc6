"""Value checks of sampling options, shared by `cotkit sample`, `cotkit eval` and `cotkit train`.

They run before any data or model loads, so `--top-p 0` or `--temperature -1` costs a moment, not
a model load followed by a backend's traceback, and the one-line error names the option.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from cotkit.errors import ConfigError

Rule = Callable[[Any], "str | None"]


def temperature(value: float) -> str | None:
    """0 is greedy decoding; below 0 (or NaN, inf) no backend can sample."""
    return None if math.isfinite(value) and value >= 0 else "must be a number of 0 or more (0 is greedy)"


def top_p(value: float) -> str | None:
    """Nucleus mass: 0 keeps no token at all, above 1 is not a probability."""
    return None if 0 < value <= 1 else "must be more than 0 and at most 1"


def at_least_one(value: int) -> str | None:
    """A count of samples, tokens or questions."""
    return None if value >= 1 else "must be at least 1"


def check_values(*checks: tuple[str, Any, Rule]) -> None:
    """Raise ConfigError for the first (option, value, rule) whose value breaks its rule; None values are unset options."""
    for option, value, rule in checks:
        if value is None:
            continue
        problem = rule(value)
        if problem:
            raise ConfigError(f"{option} {value}: {problem}")


def rule_for_field(name: str) -> Rule | None:
    """The rule of a method config field, by the naming convention every built-in method follows."""
    if name == "temperature" or name.endswith("_temperature"):
        return temperature
    if name == "top_p" or name.endswith("_top_p"):
        return top_p
    if name in ("n", "limit", "samples_per_question") or name.endswith(("max_new_tokens", "_limit")):
        return at_least_one
    return None


def check_config_values(values: dict[str, Any], options: Any, section: str) -> None:
    """Check the sampling options a user set (`values`: nested, from flags and YAML), naming the flag and the YAML key.

    `options` is the method config's `iter_options`; values not set keep their defaults, which are valid.
    """
    for info in options:
        rule = rule_for_field(info.path[-1])
        value: Any = values
        for part in info.path:
            value = value.get(part) if isinstance(value, dict) else None
        if rule is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        problem = rule(value)
        if problem:
            raise ConfigError(f"{info.flag} {value}: {problem} (`{info.dotted}:` under `{section}:` in a config file)")
