"""JSON lines and JSON files: the one reader of everything cotkit reads back, and atomic writers.

Reading splits on newline bytes only (str.splitlines would also split a row at U+2028, U+0085 or U+001C in a
completion), accepts a UTF-8 BOM at the start, and refuses bytes that are not UTF-8 instead of
replacing them, so a row reads back exactly as it was written. Writing escapes lone surrogates (UTF-8
cannot encode them) and writes through device nodes and FIFOs instead of renaming a file over them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cotkit.errors import DataError
from cotkit.filemode import new_file_mode


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to a temp file beside `path`, fsync, then rename over it.

    A device node or FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is written through, never
    replaced by a regular file; a symlink to a regular file keeps the link and replaces its target.
    """
    target = replace_target(path)
    if target is None:
        _write_through(Path(path), text)
        return
    path = target
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), new_file_mode())  # mkstemp makes it 0600; give it what open() would
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_through(path: Path, text: str) -> None:
    """Write into an existing device node or FIFO as it is (no temp file, no rename, no fsync: pipes refuse it)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def replace_target(path: str | Path) -> Path | None:
    """The regular file an atomic write renames into place, or None when `path` must be written through.

    None for an existing device node, FIFO or socket, or a link to one (including the magic links
    of /dev/stdout and /dev/fd/N): renaming over those would turn `/dev/null` into a regular file.
    A symlink to a regular file (or a dangling one) gives the file it names, so the link survives.
    """
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        return Path(os.path.realpath(path)) if os.path.islink(path) else path
    except OSError:
        return path  # e.g. a parent that is a file: the write itself reports it
    if not stat.S_ISREG(st.st_mode):
        return None
    if not os.path.islink(path):
        return path
    real = Path(os.path.realpath(path))
    try:
        same = os.path.samefile(real, path)
    except OSError:
        same = False
    # /dev/stdout redirected to a deleted file resolves to "... (deleted)": write through the link.
    return real if same else None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps_line(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` whose text UTF-8 can always encode: non-ASCII kept readable, lone surrogates escaped.

    With ensure_ascii=False a lone surrogate (json.loads makes one from an escaped half of a pair)
    stays a raw character that no UTF-8 file can hold; as a JSON escape it reads back as itself.
    """
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def jsonl_text(rows: Iterable[Any]) -> str:
    """Rows as JSON-lines text, one `dumps_line` per row."""
    return "".join(dumps_line(r) + "\n" for r in rows)


def atomic_write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Write rows as JSON lines atomically."""
    atomic_write_text(path, jsonl_text(rows))


def json_text(obj: Any) -> str:
    """One JSON document for people to read (indented; unknown types as their str)."""
    return dumps_line(obj, indent=2, default=str) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically (indented, for people to read)."""
    atomic_write_text(path, json_text(obj))


def append_jsonl_rows(path: str | Path, rows: Iterable[Any]) -> None:
    """Append rows and fsync once (a crash can tear only the last line, which `read_jsonl_tolerant` skips)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(dumps_line(r, default=str) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------ reading

_BOM = b"\xef\xbb\xbf"


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes without the line ending) of every line, split on newline bytes only."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            yield lineno, raw.removesuffix(b"\n").removesuffix(b"\r")


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    """The line as text; bytes that are not UTF-8 are a DataError naming the file, line and byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)") from None


def read_lines(path: str | Path) -> list[str]:
    """Every line of a JSON-lines file as text, blank ones too (so list index + 1 is the line number).

    For readers that judge each row themselves (`cotkit score` turns a bad row into an `error`
    verdict). An OSError (missing, unreadable file) propagates for the caller to name its option.
    """
    path = Path(path)
    return [_decode(raw, path, lineno) for lineno, raw in _raw_lines(path)]


def loads_line(text: str) -> Any:
    """`json.loads` of one line; what the parser cannot hold is a JSONDecodeError like any other bad row.

    That is nesting deeper than the recursion limit, and an integer longer than Python's
    int-string limit (4300 digits), which json.loads reports as a plain ValueError.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:
        raise json.JSONDecodeError(f"a number too long to read: {str(e).split(';')[0]}", text, 0) from None


def read_jsonl(path: str | Path) -> list[Any]:
    """Every row of a JSON-lines file; blank lines skipped; a bad line is a DataError naming the file and line."""
    path = Path(path)
    rows = []
    try:
        for lineno, raw in _raw_lines(path):
            text = _decode(raw, path, lineno)
            if not text.strip():
                continue
            try:
                rows.append(loads_line(text))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return rows


def read_jsonl_tolerant(path: str | Path) -> list[Any]:
    """Rows of an append-only log, skipping lines torn by a crash (cut JSON or a cut UTF-8 character)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for lineno, raw in _raw_lines(path):
        try:
            rows.append(loads_line(_decode(raw, path, lineno)))
        except (DataError, json.JSONDecodeError):
            continue
    return rows
