"""state.json: the phases a run completed, in order, with their results and timings."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cotkit.errors import CotkitError
from cotkit.jsonl import atomic_write_json

STATE_VERSION = 1


class RunState:
    """Completed phases, in order, with their results and timings (state.json)."""

    path: Path
    phases: dict[str, dict[str, Any]]
    """Phase name -> {"result", "seconds", "finished", "sampled_tokens", "trained_tokens"}, in the order the phases completed
    (the token counts, `cotkit.budget`, in runs recorded since they were counted)."""
    running: str | None
    """The phase in progress (left set by a killed process, cleared when a run reopens)."""
    status: str
    """"running", "complete", "failed" or "interrupted"."""

    def __init__(self, path: Path):
        self.path = path
        self.phases = {}
        self.running = None
        self.status = "running"
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:  # cannot happen with atomic writes; say so if it does
                raise CotkitError(f"{path}: not valid JSON ({e.msg}); the run directory is damaged") from e
            self.phases = dict(data.get("phases", {}))
            self.status = data.get("status", "running")
            self.running = data.get("running")

    def done(self, name: str) -> bool:
        """True when the phase completed earlier."""
        return name in self.phases

    def save(self) -> None:
        """Write state.json atomically."""
        atomic_write_json(
            self.path,
            {"version": STATE_VERSION, "status": self.status, "running": self.running, "phases": self.phases},
        )


def timestamp() -> str:
    """Now, in UTC to the second, as state.json and manifest.json record times."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
