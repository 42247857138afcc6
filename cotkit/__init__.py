"""cotkit: train and evaluate chain-of-thought reasoning in language models."""

from __future__ import annotations

__version__ = "0.1.0"

from cotkit.hookspecs import hookimpl  # noqa: E402  (the one import a plugin needs)

__all__ = ["__version__", "hookimpl"]
