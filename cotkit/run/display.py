"""What a run shows live on stderr: a line per phase, progress bars, iteration tables (main process only)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from cotkit.run.rank import is_main_process


class RunDisplay:
    """What a run shows live: a line per phase, a progress bar inside long phases, iteration tables."""

    console: Any
    """The rich console it prints to (cotkit.console.err)."""
    enabled: bool
    """False when asked for silence, and on every process but the main one."""

    def __init__(self, enabled: bool = True):
        from cotkit.console import err

        self.console = err
        self.enabled = enabled and is_main_process()

    def phase_start(self, name: str) -> None:
        if self.enabled:
            self.console.print(f"[bold cyan]▶ {name}[/bold cyan]")

    def phase_done(self, name: str, seconds: float, result: Any) -> None:
        if self.enabled:
            self.console.print(f"[green]✓ {name}[/green] [dim]{seconds:.1f}s[/dim] {_brief(result)}")

    def phase_skipped(self, name: str, result: Any) -> None:
        if self.enabled:
            self.console.print(f"[dim]↷ {name} (completed earlier) {_brief(result)}[/dim]")

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)

    def table(self, table: Any) -> None:
        if self.enabled:
            self.console.print(table)

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """A rich progress bar; yields `update(advance=1, **fields)`."""
        if not self.enabled:
            yield lambda advance=1, **kw: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        ) as bar:
            task_id = bar.add_task(description, total=total, info="")

            def update(advance: int = 1, **fields: Any) -> None:
                info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
                bar.update(task_id, advance=advance, info=info)

            yield update


def _brief(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    keys = [k for k, v in result.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)][:6]
    parts = []
    for k in keys:
        v = result[k]
        parts.append(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}")
    return "[dim]" + " ".join(parts) + "[/dim]" if parts else ""
