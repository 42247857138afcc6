"""`cotkit plugins`: every registered task, verifier, step scorer, backend and method."""

from __future__ import annotations

import typer

from cotkit.cli import options


def plugins(json_output: options.Json = False) -> None:
    """List registered plugins with their provider, version and description."""
    from cotkit import plugins as plugin_host
    from cotkit.console import out, print_json

    entries = plugin_host.host().all_entries()
    if json_output:
        print_json([e.to_dict() for e in entries])
        return
    from rich.markup import escape
    from rich.table import Table

    from cotkit.plugins import KIND_LABELS

    table = Table(title="cotkit plugins", show_lines=False)
    for col in ("kind", "name", "provider", "version", "description"):
        table.add_column(col, overflow="fold")
    for e in entries:
        name = escape(e.name)
        subsets = getattr(e.cls, "subsets", ())
        if subsets:
            name += f" [dim](:{len(subsets)} subsets)[/dim]"
        # Third-party names and docstrings are text, not rich markup: `[vllm]` must print as written.
        table.add_row(KIND_LABELS[e.kind], name, *(escape(str(v)) for v in (e.provider.name, e.provider.version, e.cls.summary())))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add the command."""
    app.command("plugins")(plugins)
