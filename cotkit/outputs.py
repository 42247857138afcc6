"""Files the user names on the command line (`--output`, `--output-dir`): checked before, never lost after.

Before a command loads a model or scores a row, `check_output_file` / `check_output_dir` make sure
the output can be written (its folder exists or can be made, is writable, is not on a read-only
mount), so a mistake costs seconds, not a finished run. After the work, `save_text` / `save_files`
write the results; when that fails (disk full, a device that refuses), the results go to a fresh
folder under $TMPDIR (else the current folder, else home) and a one-line error names it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cotkit.errors import OutputError, ResultsNotSavedError


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def _check_can_create_in(folder: Path, option: str, shown: Path) -> None:
    """Raise OutputError unless a file can be created in `folder`, or in its nearest existing ancestor if it does not exist yet."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {shown}: {existing} is not a directory")
    # Creating a file is the only reliable test: os.access says yes to root on a read-only mount
    # in some containers, and says nothing of ACLs or overlay file systems.
    try:
        fd, probe = tempfile.mkstemp(prefix=".cotkit-write-check-", dir=existing)
    except OSError as e:
        raise OutputError(f"{option} {shown}: cannot create files in {existing} ({_reason(e)})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str | Path | None, option: str) -> None:
    """Raise OutputError (one line naming `option`) unless `path` can be written; None passes."""
    if path is None:
        return
    from cotkit.jsonl import replace_target

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is a directory, expected a file name")
    target = replace_target(path)
    if target is None:  # a device node or FIFO: written through, so it only needs to accept writes
        if not os.access(path, os.W_OK):
            raise OutputError(f"{option} {path}: not writable")
        return
    _check_can_create_in(target.parent, option, path)


def check_output_dir(path: str | Path, option: str) -> None:
    """Raise OutputError unless `path` is (or can be made) a folder files can be created in."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{option} {path}: exists and is not a directory")
    _check_can_create_in(path, option, path)


#: Said when not even the fallback folders can hold the results.
_NOWHERE = "and no fallback folder could hold them either (tried $TMPDIR, the current folder, home)"


def _fallback_folders() -> Iterable[Path]:
    yield Path(tempfile.gettempdir())
    yield Path.cwd()
    yield Path.home()


def keep_elsewhere(files: dict[str, str]) -> Path | None:
    """Write `files` (name -> text) into a new folder in the first fallback place that takes them; that folder, or None."""
    from cotkit.jsonl import atomic_write_text

    for base in _fallback_folders():
        try:
            folder = Path(tempfile.mkdtemp(prefix="cotkit-unsaved-", dir=base))
        except OSError:
            continue
        try:
            for name, text in files.items():
                atomic_write_text(folder / name, text)
            return folder
        except OSError:
            continue  # that disk is full too: try the next place (the partial folder shows what was tried)
    return None


def save_files(folder: str | Path, files: dict[str, str], option: str) -> None:
    """Write `files` (name -> text) into `folder`; on failure keep them elsewhere and raise ResultsNotSavedError naming where."""
    from cotkit.jsonl import atomic_write_text

    folder = Path(folder)
    name = "?"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            atomic_write_text(folder / name, files[name])
    except OSError as e:
        kept = keep_elsewhere(files)
        where = f"the results are kept in {kept}/" if kept else _NOWHERE
        raise ResultsNotSavedError(f"{option} {folder}: cannot write {name} ({_reason(e)}); {where}") from None


def save_text(path: str | Path, text: str, option: str, default_suffix: str = "") -> None:
    """Write `text` to the user's `path` (atomically, or through a device/FIFO); on failure keep it elsewhere and say where."""
    from cotkit.jsonl import atomic_write_text

    path = Path(path)
    try:
        atomic_write_text(path, text)
    except OSError as e:
        name = path.name if Path(path.name).suffix or not default_suffix else path.name + default_suffix
        kept = keep_elsewhere({name: text})
        where = f"the results are kept in {kept / name}" if kept else _NOWHERE
        raise ResultsNotSavedError(f"{option} {path}: cannot write ({_reason(e)}); {where}") from None


def save_jsonl(path: str | Path, rows: Iterable[Any], option: str) -> None:
    """`save_text` of rows as JSON lines."""
    from cotkit.jsonl import jsonl_text

    save_text(path, jsonl_text(rows), option, default_suffix=".jsonl")
