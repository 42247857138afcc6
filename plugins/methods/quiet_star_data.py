"""Quiet-STaR's text: documents from a file, a folder, a hub dataset or a task, cropped or packed into training sequences.

Quiet-STaR is continued pre-training on ordinary text with no labels (OpenWebMath in the paper),
so its data is documents, not questions. A `.txt` file is one document; a `.jsonl` file holds one
document per row (its `--text-field`); a folder holds any number of both. Anything else that is
not a path is read as a Hugging Face dataset id (its `train` split). Without `--text` the run's
task is the corpus: each question followed by its worked solution and answer sentence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cotkit import ConfigError, DataError

SUFFIXES = (".txt", ".jsonl")


def read_documents(spec: str, text_field: str) -> list[str]:
    """Every document of `spec` (a .txt/.jsonl file, a folder of them, or a hub dataset id), in a fixed order."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise DataError(f"--text {spec}: the folder holds no .txt or .jsonl files")
        return [doc for f in files for doc in _file_documents(f, text_field)]
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise DataError(f"--text {spec}: expected a .txt or .jsonl file (or a folder of them)")
        return _file_documents(path, text_field)
    if spec.startswith((".", "/", "~")) or spec.endswith(SUFFIXES):
        raise DataError(f"--text {spec}: no such file or folder")
    return _hub_documents(spec, text_field)


def _file_documents(path: Path, text_field: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--text: cannot read {path}: {e}") from e
    if path.suffix == ".txt":
        return [text] if text.strip() else []
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not JSON ({e.msg})") from e
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise DataError(f"{path}:{n}: no string field {text_field!r} (set --text-field)")
        if row[text_field].strip():
            docs.append(row[text_field])
    return docs


def _hub_documents(dataset_id: str, text_field: str) -> list[str]:
    try:
        from datasets import load_dataset

        rows = load_dataset(dataset_id, split="train")
    except Exception as e:
        raise DataError(f"--text {dataset_id}: not a file or folder, and not loadable as a hub dataset ({type(e).__name__}: {e})") from e
    if text_field not in rows.column_names:
        raise DataError(f"--text {dataset_id}: the dataset has no column {text_field!r} (columns: {', '.join(rows.column_names)}); set --text-field")
    return [t for t in rows[text_field] if isinstance(t, str) and t.strip()]


def task_documents(task: Any, examples: list[Any]) -> list[str]:
    """The task as plain text: question, worked solution (where the task has one) and answer sentence."""
    docs = []
    for e in examples:
        solution = (e.rationale or "").strip()
        docs.append("\n".join(part for part in (task.question_text(e), solution, task.answer_sentence(e)) if part))
    return docs


def token_sequences(tokenizer: Any, documents: list[str], seq_len: int, packing: str) -> list[list[int]]:
    """crop: each document's first `seq_len` tokens (the reference); pack: documents joined by EOS and cut into `seq_len` chunks."""
    encoded = [list(tokenizer(doc, add_special_tokens=True)["input_ids"]) for doc in documents]
    if packing == "crop":
        return [ids[:seq_len] for ids in encoded if len(ids) > 1]
    eos = tokenizer.eos_token_id
    stream = [t for ids in encoded for t in ([*ids, eos] if eos is not None else ids)]
    chunks = [stream[i : i + seq_len] for i in range(0, len(stream), seq_len)]
    return [c for c in chunks if len(c) > 1]


def split_heldout(documents: list[str], heldout: int) -> tuple[list[str], list[str]]:
    """The last `heldout` documents are held out for perplexity; the rest are trained on."""
    if heldout >= len(documents):
        raise ConfigError(f"--heldout-documents {heldout}: the corpus has only {len(documents)} documents; hold out fewer")
    return documents[: len(documents) - heldout], documents[len(documents) - heldout :]
