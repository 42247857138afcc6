"""`cotkit show METHOD`: every option of a method with its default and help (or a run's status)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def show(
    name: str = typer.Argument(..., help="A method name (`cotkit plugins`), or a run directory."),
    yaml_output: bool = typer.Option(False, "--yaml", help="Print the defaults as a YAML config file to edit."),
) -> None:
    """List a method's options (flag, type, default, help), or the progress of a run directory."""
    if (Path(name) / "config.yaml").exists():
        _show_run(Path(name))
        return
    from cotkit.config import RunConfig, dump_yaml, iter_options, to_dict
    from cotkit.console import out
    from cotkit.plugins import host

    cls = host().get("method", name)
    cfg_cls = cls.Config
    if yaml_output:
        data: dict[str, Any] = {"method": name, "task": "TASK"}
        run_defaults = {o.path[0]: o.default for o in iter_options(RunConfig) if not o.required}
        data.update(run_defaults)
        data[name] = to_dict(cfg_cls())
        out.print(dump_yaml(data), markup=False, highlight=False, end="")
        return
    from rich.table import Table

    out.print(f"[bold]{name}[/bold]: {cls.summary()}")
    if cls.paper:
        out.print(f"paper: {cls.paper}")
    for title, options in (
        (f"options of --method {name}", list(iter_options(cfg_cls))),
        ("run options (every method)", list(iter_options(RunConfig))),
    ):
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("option", no_wrap=True)
        table.add_column("type")
        table.add_column("default")
        table.add_column("help", overflow="fold")
        for o in options:
            choices = f" ({'|'.join(map(str, o.choices))})" if o.choices else ""
            default = "(required)" if o.required else _fmt(o.default)
            table.add_row(o.flag, o.type_name(), default, o.help + choices)
        out.print(table)
    out.print(
        "Flags override --config YAML, which overrides defaults; in YAML, method options sit under "
        f"`{name}:` (nested sections as nested mappings)."
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "[]"
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items()) or "{}"
    return str(v)


def _show_run(path: Path) -> None:
    from rich.table import Table

    from cotkit.console import out
    from cotkit.report import fmt_acc, iteration_rows, iteration_table
    from cotkit.run import load_run

    config, state = load_run(path)
    out.print(f"[bold]{path}[/bold]: {config.run.method} on {config.run.task} with {config.run.model} — status {state.status}")
    table = Table(title="phases", title_justify="left")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("finished")
    for name, rec in state.phases.items():
        table.add_row(name, f"{rec.get('seconds', 0):.1f}", str(rec.get("finished", "")))
    if state.running:
        table.add_row(f"{state.running} (not completed)", "–", "–")
    out.print(table)
    from cotkit.run import RunContext

    ctx = RunContext(config, path)
    rows = iteration_rows(ctx.metrics_rows())
    if rows:
        out.print(iteration_table(rows))
    for r in rows:
        if "heldout" in r:
            out.print(f"held-out after iteration {r['iteration']}: {fmt_acc(r['heldout'])}")


def register(app: typer.Typer) -> None:
    """Add the command."""
    app.command("show")(show)
