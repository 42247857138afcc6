"""API keys stay out of messages, options and run files.

A key reaches cotkit only through an environment variable whose NAME is an option
(`api_key_env=OPENAI_API_KEY`). Options are written to config.yaml and the manifest, so a key pasted
where the name belongs, or given as an option of its own, is refused before anything is written,
and the refusal never repeats the value. Text from a server is scrubbed of the key, and of long
pieces of it, before it is shortened for a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from cotkit.errors import ConfigError

MASK = "[API key]"

#: Shortest piece of a key that is masked when a server echoes only part of it.
MIN_FRAGMENT = 8

#: Prefixes of common providers' keys (OpenAI, Anthropic, Hugging Face, Groq, xAI, GitHub, AWS, Google, ...).
KEY_PREFIXES = (
    "sk-", "sk_", "rk_", "pk_", "hf_", "gsk_", "xai-", "ghp_", "gho_", "github_pat_", "glpat-",
    "AKIA", "AIza", "r8_", "nvapi-", "pplx-",
)  # fmt: skip

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Option names that would put a secret itself into config.yaml.
SECRET_OPTION_NAMES = {"api_key", "apikey", "key", "secret", "password", "token", "access_token", "auth_token", "bearer_token"}


def looks_like_key(value: str) -> bool:
    """True when `value` reads as a secret rather than an environment variable's name."""
    if value in os.environ:  # a variable of that name exists: it is a name
        return False
    if value.startswith(KEY_PREFIXES) and len(value) >= 16:
        return True
    if len(value) >= 20 and "_" not in value and any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
        return True  # a long unbroken run of letters and digits: names have words, keys have entropy
    # The value of some variable pasted in place of its name (`api_key_env=$OPENAI_API_KEY`).
    return len(value) >= 16 and any(v == value for v in os.environ.values())


def check_key_env_name(value: Any, where: str) -> str:
    """`value` if it is a usable environment variable name; else a ConfigError that does not repeat it."""
    text = str(value)
    if looks_like_key(text):
        raise ConfigError(
            f"{where}: the value looks like an API key itself (not shown); put the key in an environment "
            "variable (export OPENAI_API_KEY=...) and give the variable's name"
        )
    if not _ENV_NAME.match(text):
        raise ConfigError(
            f"{where}: expected the NAME of an environment variable (letters, digits, _), e.g. OPENAI_API_KEY; "
            "the value given is not one (not shown, in case it is the key itself)"
        )
    return text


def refuse_secrets_in_options(options: Mapping[str, Any], where: str) -> None:
    """Refuse KEY=VALUE options that carry a key (`api_key=...`) or a key where a variable name goes (`*_key_env`)."""
    for name, value in options.items():
        norm = str(name).lower().replace("-", "_")
        if norm in SECRET_OPTION_NAMES or norm.endswith("_api_key"):
            raise ConfigError(
                f"{where} {name}: secrets are not options (options are saved in config.yaml); "
                "put the key in an environment variable and give its name with api_key_env=NAME"
            )
        if norm.endswith("_env") and "key" in norm:
            check_key_env_name(value, f"{where} {name}")


def scrub_key(text: str, key: str | None) -> str:
    """`text` with the key, and every piece of it of MIN_FRAGMENT characters or more, masked."""
    if not key:
        return text
    text = text.replace(key, MASK)
    shortest = min(len(key), MIN_FRAGMENT)
    # Longest pieces first, so the mask covers as much of an echoed piece as possible.
    for size in range(len(key) - 1, shortest - 1, -1):
        for start in range(len(key) - size + 1):
            piece = key[start : start + size]
            if piece in text:
                text = text.replace(piece, MASK)
    return text


def scrub_and_shorten(text: str, key: str | None, limit: int) -> str:
    """Scrub first, then cut to `limit` characters: cutting first can leave part of the key unscrubbed."""
    return scrub_key(text, key)[:limit]
