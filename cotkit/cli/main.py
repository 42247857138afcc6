"""Entry point: the global options, the Typer app with every command (plugins' too), and `main`.

The global options are declared and parsed here only, by the root command, and kept in
`cotkit.cli.state.options`. Plugin files may add commands, so the root loads the plugins when it
first looks a command up: by then click has parsed the root's options (and only the root's).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from cotkit import __version__
from cotkit.cli import state
from cotkit.errors import CotkitError

HELP = (
    "cotkit: train and evaluate chain-of-thought reasoning.\n\n"
    "Tasks, verifiers, backends and methods are plugins; `cotkit plugins` lists them."
)

# `--help` lists the commands while the options are parsed, as soon as click reaches it: --plugin
# and --debug are eager so that they are read first (when they come before --help).
PluginFiles = Annotated[
    Optional[list[str]], typer.Option("--plugin", metavar="FILE", is_eager=True, help="Load a single-file plugin (repeatable).")
]
DataDir = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder of the publishers' data files (else $COTKIT_DATA_DIR, else the hub)."),
]
Debug = Annotated[bool, typer.Option("--debug", is_eager=True, help="Show tracebacks instead of one-line errors.")]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also show third-party logging and progress bars (lm-eval, transformers).")
]
Version = Annotated[bool, typer.Option("--version", help="Print the version and exit.")]


def _root_callback(
    ctx: typer.Context,
    plugin: PluginFiles = None,
    data_dir: DataDir = None,
    debug: Debug = False,
    verbose: Verbose = False,
    version: Version = False,
) -> None:
    # The options were stored by `_RootGroup` when it looked the command up (see `_remember_global_options`).
    if version:
        typer.echo(f"cotkit {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        from cotkit.cli.usage import missing_command

        # A usage error like any other (one line, exit 2), not the help page of no_args_is_help.
        ctx.fail(missing_command(ctx))


def _debug_from_environment() -> bool:
    return bool(os.environ.get("COTKIT_DEBUG"))


def _remember_global_options(params: dict[str, Any]) -> None:
    """Keep the root's parsed options where commands and runs read them (-v also for the library and launched processes)."""
    state.options = state.GlobalOptions(
        debug=bool(params.get("debug")) or _debug_from_environment(),
        verbose=bool(params.get("verbose")),
        data_dir=params.get("data_dir"),
        plugin_files=list(params.get("plugin") or []),
    )


def _no_type_for_switches(command: Any) -> Any:
    """Show no value type beside a switch such as `--resume` in `--help` (typer writes `<bool>`): it takes no value.

    Applied to each command (and sub-command) as it is looked up, and to the `--help` option that
    click creates when help is shown.
    """
    if getattr(command, "_switch_types_hidden", False):  # a command can be looked up again
        return command
    command._switch_types_hidden = True
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False):
            _no_metavar(param)
    make_help_option = command.get_help_option
    command.get_help_option = lambda ctx: _no_metavar(make_help_option(ctx))
    for sub in getattr(command, "commands", {}).values():
        _no_type_for_switches(sub)
    return command


def _no_metavar(option: Any) -> Any:
    if option is not None and option.metavar is None:
        option.metavar = ""
    return option


class _RootGroup(TyperGroup):
    """`cotkit`: loads the plugins, and adds their commands, before the first command look-up."""

    _plugins_loaded = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _no_type_for_switches(self)

    def get_params(self, ctx: Any) -> list[Any]:
        # typer appends --install-completion and --show-completion after the group is built
        return [_no_metavar(p) if getattr(p, "is_flag", False) else p for p in super().get_params(ctx)]

    def list_commands(self, ctx: Any) -> list[str]:
        self._load_plugins(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        self._load_plugins(ctx)
        command = super().get_command(ctx, cmd_name)
        return _no_type_for_switches(command) if command is not None else None

    def _load_plugins(self, ctx: Any) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        _remember_global_options(ctx.params)
        from cotkit import plugins

        host = plugins.configure(state.options.plugin_files)
        plugin_app = typer.Typer()
        host.add_commands(plugin_app)
        for name, command in typer.main.get_group(plugin_app).commands.items():
            self.add_command(command, name)


def build_app() -> typer.Typer:
    """The Typer app with every built-in command (plugins add theirs when it runs)."""
    from cotkit.cli import commands

    app = typer.Typer(cls=_RootGroup, help=HELP, add_completion=True, pretty_exceptions_enable=False)
    app.callback(invoke_without_command=True)(_root_callback)
    commands.register_all(app)
    return app


def main(argv: Optional[list[str]] = None) -> None:
    """Run the CLI; a CotkitError or a usage error prints one line and exits 2 (traceback with --debug)."""
    from cotkit.cli import usage

    argv = list(sys.argv[1:] if argv is None else argv)
    state.options = state.GlobalOptions(debug=_debug_from_environment())  # until the root's options are parsed
    try:
        app = build_app()
        result = app(args=argv, prog_name="cotkit", standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except CotkitError as e:
        if state.options.debug:
            raise
        typer.secho(f"error: {e}", err=True, fg="red")
        sys.exit(e.exit_code)
    except usage.exit_types() as e:
        sys.exit(e.exit_code)
    except usage.abort_types():
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except usage.click_error_types() as e:
        if state.options.debug:
            raise
        typer.secho(usage.one_line(e), err=True, fg="red")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
