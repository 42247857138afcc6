"""User-facing errors: each prints as one line and exits with code 2 (traceback only with --debug)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CotkitError(Exception):
    """An error the user can fix; the CLI prints its message on one line and exits 2."""

    exit_code = 2


class UnknownNameError(CotkitError):
    """A task, verifier, backend, method or option name that nothing registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name = kind, name
        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listing = f" (known: {', '.join(known)})" if known and len(known) <= 12 and not close else ""
        super().__init__(f"unknown {kind} {name!r}{hint}{listing}")


class DuplicateNameError(CotkitError):
    """Two plugins registered the same name for the same kind."""

    def __init__(self, kind: str, name: str, first: str, second: str):
        super().__init__(f"duplicate {kind} {name!r}: registered by both {first} and {second}")


class PluginLoadError(CotkitError):
    """A plugin module or entry point raised while importing or registering."""

    def __init__(self, plugin: str, exc: BaseException):
        self.plugin, self.exc = plugin, exc
        super().__init__(f"plugin {plugin} failed to load: {type(exc).__name__}: {exc}")


class DataError(CotkitError):
    """Task data is missing or malformed (the message names the file and row)."""


class ConfigError(CotkitError):
    """A configuration value or option is wrong."""


class ModelError(CotkitError):
    """A model cannot be found, loaded or run."""


def suggest(name: str, known: Iterable[str]) -> list[str]:
    """Return up to three known names close to `name`."""
    return difflib.get_close_matches(name, sorted(set(known)), n=3, cutoff=0.5)


class OutputError(CotkitError):
    """An output path named on the command line cannot be written (found before any work starts)."""


class ResultsNotSavedError(CotkitError):
    """The work is done but its output could not be written; the message names where the results were kept."""

    exit_code = 1  # not a usage error (2): the command was right, the disk or device refused


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run, which is marked interrupted; `resume` is the command that continues it."""

    def __init__(self, resume: str = ""):
        super().__init__(resume)
        self.resume = resume


def first_line(e: BaseException) -> str:
    """An exception's first line (at most 300 characters), for one-line error messages."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
