"""`cotkit score`: re-score saved completions from any tool with a cotkit verifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cotkit.cli import options


def score(
    task: options.Task,
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL: the task's raw fields plus `completion`.")],
    verifier: options.Verifier = None,
    output: options.Output = None,
    json_output: options.Json = False,
    task_option: options.TaskOptions = None,
) -> None:
    """Score completions: a verdict per row and a summary (accuracy over all n rows; unparseable, timeout, error counts)."""
    from cotkit.cli.common import make_task
    from cotkit.console import out, print_json
    from cotkit.harness.score import score_file
    from cotkit.outputs import check_output_file

    check_output_file(output, "--output")  # before scoring: a bad path must not cost the verdicts
    task_obj = make_task(task, task_option)
    summary = score_file(task_obj, input, verifier, output)
    if json_output:
        print_json(summary)
        return
    if not summary["n"]:
        out.print(f"{input}: no rows to score (the file holds only blank lines)", highlight=False)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"cotkit score: {task_obj.full_name} with {summary['verifier']}")
    # accuracy counts every row (errors too); the verdicts without a judged answer are shown beside it
    columns = ("n", "accuracy (correct / n)", "95% CI", "accuracy of parsed answers", "unparseable", "timeouts", "errors",
               "most common answer")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="right")
    top = summary["top_answer"]
    parsed = summary["accuracy_parsed"]
    table.add_row(
        str(summary["n"]),
        f"{summary['accuracy']:.2%}",
        f"[{summary['ci_low']:.1%}, {summary['ci_high']:.1%}]",
        "-" if parsed is None else f"{parsed:.2%}",
        f"{summary['unparseable_count']} ({summary['unparseable']:.2%})",
        str(summary["timeouts"]),
        str(summary["errors"]),
        "-" if top is None else escape(f"{top} ({summary['top_answer_count'] / summary['n']:.0%} of rows)"),
    )
    out.print(table)
    failed = summary["errors"] + summary["timeouts"]
    if failed:
        out.print(f"why {failed} rows errored or timed out, most common first{' (every row is in --output)' if output else ''}:",
                  highlight=False)  # fmt: skip
        for p in summary["problems"]:
            lines = ", ".join(map(str, p["lines"][:8])) + (", ..." if len(p["lines"]) > 8 else "")
            out.print(f"  {p['count']} x {p['reason']} (line{'s' if p['count'] > 1 else ''} {lines})", highlight=False, markup=False)
    if output:
        out.print(f"wrote {summary['n']} rows to {output}")


def register(app: typer.Typer) -> None:
    """Add the command."""
    app.command("score")(score)
