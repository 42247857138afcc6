"""`cotkit compare RUN_DIR...`: runs on the same held-out questions side by side, as a table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cotkit.cli import options

#: Where the plot goes without --plot.
DEFAULT_PLOT = Path("compare.png")


def compare(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="Run directories of `cotkit train` on one task and one held-out set."),
    plot: Path = typer.Option(DEFAULT_PLOT, "--plot", metavar="PATH", help="Where to write the plot (PNG) of base and final accuracy per run."),
    against: Optional[Path] = typer.Option(
        None, "--against", metavar="RUN_DIR", help="Also test every run's final model against this run's final model (McNemar, same questions)."
    ),
    json_output: options.Json = False,
) -> None:
    """Held-out accuracy with 95% CIs, the change over each run's base (McNemar), collapse and budget, per run."""
    from cotkit.run.compare import TABLE_NOTE, compare_runs, comparison_table, plot_comparison

    comparison = compare_runs(run_dirs, against)
    written = plot_comparison(comparison, plot)
    if json_output:
        from cotkit.console import print_json

        print_json({**comparison, "plot": str(written)})
        return
    from cotkit.console import out

    out.print(comparison_table(comparison))
    out.print(TABLE_NOTE)
    out.print(f"plot: {written}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command."""
    app.command("compare")(compare)
