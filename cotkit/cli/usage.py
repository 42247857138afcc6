"""Usage errors (no command, an unknown command or option, a missing or malformed value) as one line.

Typer raises click's exceptions when `main` runs the app with standalone_mode=False. Since typer
0.2x those come from a copy of click vendored as `typer._click`, which `except click.ClickException`
does not catch, so the CLI printed a traceback; this module knows both families.
"""

from __future__ import annotations

from typing import Any

import typer


def _click_classes(name: str) -> tuple[type, ...]:
    """The class `name` of click.exceptions and of typer's vendored click, whichever are installed."""
    found: list[type] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            mod = __import__(module, fromlist=[name])
        except ImportError:
            continue
        cls = getattr(mod, name, None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def click_error_types() -> tuple[type, ...]:
    """Exceptions that are a bad command line (or a file click could not open): caught and shown as one line."""
    return _click_classes("ClickException")


def exit_types() -> tuple[type, ...]:
    """`typer.Exit` and click's Exit (raised for --help, --version, and explicit exits)."""
    return tuple({typer.Exit, *_click_classes("Exit")})


def abort_types() -> tuple[type, ...]:
    """`typer.Abort` and click's Abort (Ctrl-C or end of input at a prompt)."""
    return tuple({typer.Abort, *_click_classes("Abort")})


def _commands(ctx: Any) -> list[str]:
    command = getattr(ctx, "command", None)
    lister = getattr(command, "list_commands", None)
    try:
        return list(lister(ctx)) if lister else []
    except Exception:  # a help listing must never turn a usage error into a crash
        return []


def missing_command(ctx: Any) -> str:
    """`missing command (one of: score, sample, ...)`: what a bare `cotkit` says."""
    names = _commands(ctx)
    return f"missing command (one of: {', '.join(names)})" if names else "missing command"


def _is_global_option(ctx: Any, name: str) -> bool:
    """Whether `name` (`--debug`, `-v`) is an option of the root command, given after a sub-command."""
    root = ctx.find_root()
    return ctx is not root and any(name in param.opts for param in root.command.params)


def one_line(exc: Any) -> str:
    """`error: cotkit score: Missing option '--task' / '-t'. (see `cotkit score --help`)`: the message on one line."""
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", None) or "cotkit"
    if type(exc).__name__ == "NoArgsIsHelpError":
        # Its message is the whole help page; say what is missing and where the help is instead.
        message = missing_command(ctx)
    elif type(exc).__name__ == "NoSuchOption" and ctx is not None and _is_global_option(ctx, exc.option_name):
        command = ctx.info_name or "COMMAND"
        return f"error: {exc.option_name} is a global option: put it before the command (`cotkit {exc.option_name} ... {command} ...`)"
    else:
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        message = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return f"error: {where}: {message} (see `{where} --help`)"
