"""Rich consoles: tables and progress on the terminal, machine output (--json) kept clean on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

#: Human-facing output (tables, progress) goes to stderr when stdout must stay machine-readable.
out = Console()
err = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()
