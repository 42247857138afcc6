"""Rich consoles: tables and progress on the terminal, machine output (--json) kept clean on stdout."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console, ConsoleDimensions

#: Width of output that goes to a file or a pipe: wide enough that no table column is cut.
LOG_WIDTH = 400


class LogFriendlyConsole(Console):
    """A rich Console that does not squeeze its output to 80 columns when it writes to a file or pipe.

    Rich lays out for the terminal's width, or 80 columns when there is none, so a table in a log
    reads "10.…" and "cor…". Written to a file, tables take the width of their content instead
    (up to LOG_WIDTH); an explicit COLUMNS still wins.
    """

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self._width is None and not self.is_terminal and not os.environ.get("COLUMNS"):
            return ConsoleDimensions(LOG_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


#: Set by `cotkit -v` (and inherited by the processes of a launch): third-party bars and logging stay on.
VERBOSE_ENV = "COTKIT_VERBOSE"


def quiet_transformers() -> None:
    """No per-load and per-save tqdm bars from transformers (cotkit shows its own progress), unless `cotkit -v`."""
    if os.environ.get(VERBOSE_ENV):
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


#: Human-facing output (tables, progress) goes to stderr when stdout must stay machine-readable.
out = LogFriendlyConsole()
err = LogFriendlyConsole(stderr=True)


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()
