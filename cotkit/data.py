"""Finding task data: a local folder of the publishers' files, or the Hugging Face hub.

With a local data directory (`--data-dir` or COTKIT_DATA_DIR) nothing touches the network; when
neither source works the error says what is missing and how to supply it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotkit.errors import DataError

DATA_DIR_ENV = "COTKIT_DATA_DIR"
CACHE_DIR_ENV = "COTKIT_CACHE_DIR"


def resolve_data_dir(explicit: str | Path | None = None) -> Path | None:
    """The local data directory: the explicit one, else $COTKIT_DATA_DIR, else None (use the hub)."""
    value = explicit if explicit else os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        source = "--data-dir" if explicit else DATA_DIR_ENV
        raise DataError(f"{source} {path}: not a directory")
    return path


def cache_dir(*parts: str) -> Path:
    """A folder under cotkit's cache ($COTKIT_CACHE_DIR, default ~/.cache/cotkit), created."""
    root = Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "cotkit").expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a parse error names the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a leading BOM is not content
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e


def find_local(data_dir: Path | None, candidates: Sequence[str]) -> Path | None:
    """The first of `candidates` (paths relative to the data dir) that exists."""
    if data_dir is None:
        return None
    for rel in candidates:
        path = data_dir / rel
        if path.exists():
            return path
    return None


def hub_rows(dataset: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of a Hugging Face hub dataset split (imports `datasets` only here)."""
    try:
        import datasets
    except ImportError as e:
        raise DataError(
            f"loading {dataset} from the Hugging Face hub needs the `datasets` package "
            "(pip install 'cotkit[models]'), or pass --data-dir with the publisher's files"
        ) from e
    ds = datasets.load_dataset(dataset, config, split=split)
    return [dict(r) for r in ds]


def load_rows(
    what: str,
    data_dir: Path | None,
    local: Sequence[str],
    reader: Any,
    hub: Sequence[tuple[str, str | None, str]] = (),
) -> list[dict[str, Any]]:
    """Rows from the first local candidate that exists, else from the hub sources in order.

    `what` names the data in errors ("gsm8k test"); `reader` turns a local path into rows.
    """
    if data_dir is not None:
        path = find_local(data_dir, local)
        if path is None:
            raise DataError(
                f"{what}: none of {', '.join(local)} under data directory {data_dir}; "
                "put the publisher's files there, or unset the data directory to load from the hub"
            )
        return reader(path)
    failures = []
    for dataset, config, split in hub:
        try:
            return hub_rows(dataset, config, split)
        except DataError:
            raise
        except Exception as e:  # the hub raises many kinds of errors when offline
            failures.append(f"{dataset}{'/' + config if config else ''} [{split}]: {type(e).__name__}: {str(e)[:200]}")
    raise DataError(
        f"{what}: no local data directory is set and the Hugging Face hub gave nothing "
        f"({'; '.join(failures) or 'no hub source'}). Pass --data-dir DIR or set {DATA_DIR_ENV} "
        f"to a folder holding {local[0]}"
    )
