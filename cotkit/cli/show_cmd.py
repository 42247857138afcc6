"""`cotkit show NAME`: the typed options of any plugin (task, verifier, step scorer, backend, method), or a run's status.

A name is looked up in every kind; one that several kinds register is shown for each, and
`KIND:NAME` (`backend:hf`, `step-scorer:arith`) picks one. A task may be named with its subset
(`math:algebra`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cotkit.cli import options

#: How each kind is given its options, printed above its table.
HOW_GIVEN = {
    "task": "-O/--task-option KEY=VALUE, or `task_options:` in a run config",
    "verifier": "KEY=VALUE options of the method that uses it (PaD, sft: --verifier-option KEY=VALUE)",
    "step_scorer": "-S/--scorer-option KEY=VALUE (cotkit eval), or a method's step scorer options",
    "backend": "-B/--backend-option KEY=VALUE, or `backend_options:` in a run config",
}
#: The run-config key that holds a kind's options (`--yaml` prints them under it).
RUN_CONFIG_KEY = {"task": "task_options", "backend": "backend_options"}


def show(
    names: list[str] = typer.Argument(
        ...,
        metavar="NAME...",
        help="Plugin names (`cotkit plugins`; KIND:NAME when several kinds share one), or run directories "
        "(several: compared side by side).",
    ),
    yaml_output: bool = typer.Option(False, "--yaml", help="Print the defaults as YAML to paste into a config file."),
    json_output: options.Json = False,
) -> None:
    """List a plugin's options (name, type, default, help), or a run directory's progress; several runs side by side."""
    from cotkit.errors import ConfigError

    runs = [Path(n) for n in names if (Path(n) / "config.yaml").exists()]
    if runs and len(runs) < len(names):
        others = ", ".join(n for n in names if Path(n) not in runs)
        raise ConfigError(f"cotkit show: give either run directories or plugin names, not both ({others} is not a run directory)")
    if runs:
        if yaml_output:
            raise ConfigError("--yaml prints a plugin's defaults; a run's options are in its config.yaml")
        summaries = [run_summary(r) for r in runs]
        if json_output:
            from cotkit.console import print_json

            print_json(summaries[0] if len(summaries) == 1 else {"runs": summaries})
        elif len(runs) == 1:
            _show_run(runs[0])
        else:
            _compare_runs(summaries)
        return
    if json_output:
        raise ConfigError("--json is for run directories; `cotkit plugins --json` lists every plugin")
    for name in names:
        _show_name(name, yaml_output)


def _show_name(name: str, yaml_output: bool) -> None:
    from cotkit.errors import ConfigError

    found = find_plugins(name)
    if yaml_output:
        if len(found) > 1:
            kinds = " or ".join(f"{kind}:{name}" for kind, _ in found)
            raise ConfigError(f"--yaml: {name!r} names a plugin of {len(found)} kinds; say which: {kinds}")
        kind, cls = found[0]
        _print_yaml(kind, cls)
        return
    for kind, cls in found:
        if kind == "method":
            _show_method(cls)
        else:
            _show_plugin(kind, cls)


def find_plugins(spec: str) -> list[tuple[str, type]]:
    """(kind, class) of each plugin `spec` names: `NAME` in every kind, `KIND:NAME`, or a task's `name:subset`."""
    from cotkit.contracts import KINDS
    from cotkit.errors import UnknownNameError
    from cotkit.plugins import host

    h = host()
    head, sep, rest = spec.partition(":")
    if sep and head.replace("-", "_") in KINDS:
        kind = head.replace("-", "_")
        return [(kind, h.get(kind, rest))]
    found = [(kind, h.entries[kind][spec].cls) for kind in KINDS if spec in h.entries[kind]]
    if not found and sep and head in h.entries["task"]:
        found = [("task", h.get("task", head))]
    if not found:
        raise UnknownNameError("plugin", spec, [n for kind in KINDS for n in h.entries[kind]])
    return found


def _show_method(cls: type) -> None:
    from rich.markup import escape

    from cotkit.config import RunConfig
    from cotkit.console import out
    from cotkit.options import iter_options

    out.print(f"[bold]{cls.name}[/bold] (method): {escape(cls.summary())}")
    if cls.paper:
        out.print(f"paper: {escape(cls.paper)}")
    for title, options in (
        (f"options of --method {cls.name}", list(iter_options(cls.Config))),
        ("run options (every method)", list(iter_options(RunConfig))),
    ):
        out.print(_table(title, [(o.flag, o) for o in options]))
    out.print(
        "Flags override --config YAML, which overrides defaults; in YAML, method options sit under "
        f"`{cls.name}:` (nested sections as nested mappings)."
    )


def _show_plugin(kind: str, cls: type) -> None:
    from rich.markup import escape

    from cotkit.console import out
    from cotkit.options import iter_options
    from cotkit.plugins import KIND_LABELS

    label = f"{KIND_LABELS[kind]} {cls.name}"
    out.print(f"[bold]{cls.name}[/bold] ({KIND_LABELS[kind]}): {escape(cls.summary())}", highlight=False)
    if kind == "task" and cls.subsets:
        out.print(f"subsets ({cls.name}:SUBSET): {', '.join(cls.subsets)}", highlight=False)
    options = list(iter_options(cls.Config))
    if not options:
        out.print(f"{label} takes no options.", highlight=False)
        return
    rows = [("(any other)" if o.extra_keys else o.dotted, o) for o in options]
    out.print(_table(f"options of {label}: {HOW_GIVEN[kind]}", rows))


def _table(title: str, rows: list[tuple[str, Any]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), title_justify="left", show_lines=False)
    table.add_column("option", no_wrap=True)
    table.add_column("type")
    table.add_column("default")
    table.add_column("help", overflow="fold")
    for shown, o in rows:
        limits = f" ({o.limits()})" if o.limits() else ""
        default = "(required)" if o.required else "" if o.extra_keys else _fmt(o.default)
        # Escaped: `list[str]` or a help text's [brackets] are not rich markup.
        table.add_row(*(escape(cell) for cell in (shown, o.type_name(), default, o.help + limits)))
    return table


def _print_yaml(kind: str, cls: type) -> None:
    from cotkit.config import RunConfig, dump_yaml
    from cotkit.console import out
    from cotkit.options import iter_options, plain_value, to_dict

    if kind == "method":
        data: dict[str, Any] = {"method": cls.name, "task": "TASK"}
        data.update({o.path[0]: o.default for o in iter_options(RunConfig) if not o.required})
        data[cls.name] = to_dict(cls.Config())
    else:
        data = {o.dotted: plain_value(o.default) for o in iter_options(cls.Config) if not (o.required or o.extra_keys)}
        if kind in RUN_CONFIG_KEY:
            data = {kind: cls.name, RUN_CONFIG_KEY[kind]: data}
    out.print(dump_yaml(data), markup=False, highlight=False, end="")


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


def run_summary(path: Path) -> dict[str, Any]:
    """A run as JSON: its options, status, phases, and per iteration the dev / held-out evaluations and the funnel."""
    from cotkit.run import RunContext, load_run
    from cotkit.run.report import accuracy_dict, iteration_rows

    config, state = load_run(path)
    rows = iteration_rows(RunContext(config, path).metrics_rows())

    heldout = [r for r in rows if "heldout" in r]
    return {
        "path": str(path), "method": config.run.method, "task": config.run.task, "model": config.run.model,
        "status": state.status, "running": state.running, "config": config.to_dict(),
        "phases": {name: {"seconds": rec.get("seconds"), "finished": rec.get("finished")} for name, rec in state.phases.items()},
        "iterations": [
            {"iteration": r["iteration"], "dev": accuracy_dict(r.get("dev")), "heldout": accuracy_dict(r.get("heldout")), "summary": r.get("summary")}
            for r in rows
        ],
        "base_heldout": accuracy_dict(heldout[0]["heldout"]) if heldout and heldout[0]["iteration"] == 0 else None,
        "final_heldout": accuracy_dict(heldout[-1]["heldout"]) if heldout and heldout[-1]["iteration"] > 0 else None,
    }  # fmt: skip


def _compare_runs(summaries: list[dict[str, Any]]) -> None:
    """One row per run: what it trained, how far it got, and its base and final accuracies with their intervals."""
    from rich.markup import escape
    from rich.table import Table

    from cotkit.console import out
    from cotkit.run.report import fmt_accuracy

    table = Table(title="runs side by side", title_justify="left")
    for col in ("run", "method", "task", "model", "status", "iterations"):
        table.add_column(col, overflow="fold")
    for col in ("last dev accuracy", "base held-out", "final held-out"):
        table.add_column(col, no_wrap=True)  # a figure is read whole, paths may wrap
    for s in summaries:
        its = [i for i in s["iterations"] if i["dev"] is not None]
        table.add_row(
            escape(s["path"]), s["method"], s["task"], escape(str(s["model"])), s["status"],
            str(max((i["iteration"] for i in s["iterations"]), default=0)), fmt_accuracy(its[-1]["dev"]) if its else "–",
            fmt_accuracy(s["base_heldout"]), fmt_accuracy(s["final_heldout"]),
        )  # fmt: skip
    out.print(table)
    out.print("Intervals are 95% Wilson intervals; runs on different questions (tasks, limits, seeds) are not comparable row by row.")


def _show_run(path: Path) -> None:
    from rich.table import Table

    from cotkit.console import out
    from cotkit.run import load_run
    from cotkit.run.report import fmt_acc, iteration_rows, iteration_table

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
