"""Entry point: pre-scan global options, load plugins, build the Typer app, run it.

Plugins load before Typer parses the command line because plugin files may add commands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from cotkit import __version__
from cotkit.cli import state
from cotkit.errors import CotkitError

HELP = (
    "cotkit: train and evaluate chain-of-thought reasoning.\n\n"
    "Tasks, verifiers, backends and methods are plugins; `cotkit plugins` lists them."
)


def _root_callback(
    ctx: typer.Context,
    plugin: Optional[list[Path]] = typer.Option(None, "--plugin", help="Load a single-file plugin (repeatable)."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Folder of the publishers' data files (else $COTKIT_DATA_DIR, else the hub)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        typer.echo(f"cotkit {__version__}")
        raise typer.Exit()
    state.options.debug = debug
    if data_dir is not None:
        state.options.data_dir = data_dir
    if ctx.invoked_subcommand is None:
        from cotkit.cli.usage import missing_command

        # A usage error like any other (one line, exit 2), not the help page of no_args_is_help.
        ctx.fail(missing_command(ctx))


def build_app() -> typer.Typer:
    """The Typer app with every built-in command (plugin commands are added by `main`)."""
    from cotkit.cli import commands

    app = typer.Typer(help=HELP, add_completion=False, pretty_exceptions_enable=False)
    app.callback(invoke_without_command=True)(_root_callback)
    commands.register_all(app)
    return app


def _prescan(argv: list[str]) -> tuple[list[str], bool, Optional[str]]:
    """Plugin files, --debug and --data-dir from argv, before Typer parses it."""
    files, debug, data_dir = [], False, None
    it = iter(range(len(argv)))
    for i in it:
        arg = argv[i]
        if arg == "--debug":
            debug = True
        elif arg == "--plugin" and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            files.append(arg.split("=", 1)[1])
        elif arg == "--data-dir" and i + 1 < len(argv):
            data_dir = argv[i + 1]
        elif arg.startswith("--data-dir="):
            data_dir = arg.split("=", 1)[1]
    return files, debug, data_dir


def main(argv: Optional[list[str]] = None) -> None:
    """Run the CLI; a CotkitError or a usage error prints one line and exits 2 (traceback with --debug)."""
    from cotkit.cli import usage

    argv = list(sys.argv[1:] if argv is None else argv)
    files, debug, data_dir = _prescan(argv)
    debug = debug or bool(os.environ.get("COTKIT_DEBUG"))
    state.options.debug = debug
    state.options.plugin_files = files
    state.options.data_dir = Path(data_dir) if data_dir else None
    try:
        from cotkit import plugins

        host = plugins.configure(files)
        app = build_app()
        host.add_commands(app)
        result = app(args=argv, prog_name="cotkit", standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except CotkitError as e:
        if debug:
            raise
        typer.secho(f"error: {e}", err=True, fg="red")
        sys.exit(e.exit_code)
    except usage.exit_types() as e:
        sys.exit(e.exit_code)
    except usage.abort_types():
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except usage.click_error_types() as e:
        if debug:
            raise
        typer.secho(usage.one_line(e), err=True, fg="red")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
