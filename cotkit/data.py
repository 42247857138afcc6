"""Finding task data: a local folder of the publishers' files, or the Hugging Face hub.

With a local data directory (`--data-dir` or COTKIT_DATA_DIR) nothing touches the network; when
neither source works the error says what is missing and how to supply it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
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


#: Seconds to wait for the hub's host before treating the machine as offline.
HUB_PROBE_SECONDS = 3.0


def hub_rows(dataset: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of a Hugging Face hub dataset split (imports `datasets` only here).

    On a machine that cannot reach the hub, huggingface_hub retries every request five times with
    back-off (about 25 s and six warnings per dataset) before it fails. One short connection probe
    first: when the hub's host does not answer, the dataset is read in the libraries' offline mode,
    which serves the local datasets cache at once and fails at once without it.
    """
    try:
        import datasets
    except ImportError as e:
        raise DataError(
            f"loading {dataset} from the Hugging Face hub needs the `datasets` package "
            "(pip install 'cotkit[models]'), or pass --data-dir with the publisher's files"
        ) from e
    unreachable = hub_unreachable()
    try:
        with _hub_offline(unreachable is not None):
            ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:
        if unreachable is None:
            raise
        raise ConnectionError(f"the hub cannot be reached ({unreachable}) and the dataset is not in the local cache") from e
    return [dict(r) for r in ds]


def hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why the Hugging Face hub cannot be reached (None when it answers, or when offline mode is already on)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port}: {e.strerror or e}"
    return None


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub's and datasets' offline mode, which they read from HF_HUB_OFFLINE at import."""
    if not offline:
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = before


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
