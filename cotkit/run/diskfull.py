"""A full disk ends a run with one line: what the run directory still holds and how to resume.

Every file of a run is written to a temp name and renamed, so a write that fails for lack of space
leaves the previous complete files in place: the completed phases in state.json, the last complete
checkpoint, the last saved training state. The message names them and gives the command that
continues the run once space is freed.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
from pathlib import Path
from typing import Any

from cotkit.errors import CotkitError

DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}

#: How libraries that do not raise a plain OSError report a full disk (safetensors' Rust I/O
#: errors, wrapped OSErrors in other exception types).
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "StorageFull", "QuotaExceeded")


class DiskFullError(CotkitError):
    """The disk filled up during a run; the run directory keeps everything completed."""

    # Not a usage error (those exit 2): the command was right, the machine ran out of space.
    exit_code = 1


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException, run_dir: Path | None = None) -> bool:
    """True when `exc` (or an exception it wraps) reports a full disk or an exceeded quota."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        text = str(e)
        if any(t in text for t in DISK_FULL_TEXTS):
            return True
        # torch's zip writer says only "file write failed"; a disk with no space left says the rest.
        if "write failed" in text and run_dir is not None:
            free = _free_bytes(run_dir)
            if free is not None and free < 1 << 20:
                return True
    return False


def _completed_phases(run_dir: Path) -> list[str]:
    try:
        state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return list(state.get("phases", {})) if isinstance(state, dict) else []


def _last_checkpoint(run_dir: Path) -> str | None:
    # A checkpoint folder is renamed into place only when complete; training.json is written last.
    done = [p.parent for p in run_dir.glob("**/checkpoint/training.json") if not p.parent.name.startswith(".")]
    if not done:
        return None
    latest = max(done, key=lambda p: (p.stat().st_mtime, str(p)))
    return str(latest.relative_to(run_dir))


def _last_training_state(run_dir: Path) -> tuple[str, int] | None:
    best: tuple[str, int] | None = None
    for progress in run_dir.glob("**/train_state/step_*/progress.json"):
        try:
            step = int(json.loads(progress.read_text(encoding="utf-8"))["step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if best is None or step > best[1]:
            best = (str(progress.parent.parent.relative_to(run_dir)), step)
    return best


def kept_summary(run_dir: Path) -> str:
    """What a stopped run can resume from: completed phases, last checkpoint, saved training state."""
    phases = _completed_phases(run_dir)
    parts = [f"{len(phases)} completed phase(s), the last {phases[-1]}" if phases else "no completed phase yet"]
    checkpoint = _last_checkpoint(run_dir)
    if checkpoint:
        parts.append(f"last complete checkpoint {checkpoint}")
    state = _last_training_state(run_dir)
    if state:
        parts.append(f"training state {state[0]} at step {state[1]}")
    return ", ".join(parts)


def resume_command(run_dir: Path, *, plugin_files: list[str] | None = None, data_dir: Any = None) -> str:
    """The exact `cotkit ... train --resume --output-dir DIR` that continues this run."""
    words = ["cotkit"]
    for f in plugin_files or []:
        words += ["--plugin", str(f)]
    if data_dir:
        words += ["--data-dir", str(data_dir)]
    words += ["train", "--resume", "--output-dir", str(run_dir)]
    return " ".join(shlex.quote(w) for w in words)


def disk_full_error(exc: BaseException, run_dir: Path, command: str) -> DiskFullError:
    """The one-line error for a run stopped by a full disk."""
    name = next((e.filename for e in _chain(exc) if isinstance(e, OSError) and e.filename), None)
    where = f" while writing {name}" if name else ""
    return DiskFullError(
        f"disk full{where}: the run stopped; {run_dir} keeps {kept_summary(run_dir)}; "
        f"free some space, then resume with: {command}"
    )
