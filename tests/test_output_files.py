"""`--output` / `--output-dir`: devices, FIFOs and symlinks are written through, bad paths refused up front, and a
write that fails at the end keeps the results in a file the error names."""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import threading
from pathlib import Path

import pytest

NO_MODEL = "/no/such/model"


def read_jsonl(path: Path) -> list:
    """The rows of a JSONL file, read independently of the code under test (strict UTF-8, newline-split)."""
    return [json.loads(line) for line in Path(path).read_bytes().decode("utf-8").split("\n") if line.strip()]
# A folder no one can create files in, root included (sysfs refuses new files).
UNWRITABLE = Path("/sys/cotkit-no-such-folder")


def private_device(tmp_path: Path, name: str, minor: int) -> Path:
    """A character device like /dev/<name> (major 1), safe to point a regression at.

    As root the test makes its own node (same major/minor) in tmp_path: a regression that renames
    over it cannot replace the machine's /dev/null or /dev/full, which every process relies on.
    Others use the real one, which they cannot replace.
    """
    if os.geteuid() != 0:
        return Path("/dev") / name
    node = tmp_path / name
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except OSError as e:
        pytest.skip(f"cannot make a device node here ({e.strerror})")
    return node


@pytest.fixture
def full_device(tmp_path) -> Path:
    """Answers every write with ENOSPC: a full disk."""
    return private_device(tmp_path, "full", 7)


@pytest.fixture
def null_device(tmp_path) -> Path:
    """Takes every write."""
    return private_device(tmp_path, "null", 3)


@pytest.fixture
def fallback_dir(tmp_path, monkeypatch) -> Path:
    """$TMPDIR for this test (tempfile caches it, so set its cache too)."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def gsm8k_input(data_dir: Path, tmp_path: Path, n: int = 3) -> tuple[Path, list[dict]]:
    rows = read_jsonl(data_dir / "gsm8k" / "test.jsonl")[:n]
    inputs = [{**row, "completion": f"The answer is {row['answer'].rsplit('####', 1)[1].strip()}."} for row in rows]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in inputs), encoding="utf-8")
    return path, inputs


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def error_line(stderr: str) -> str:
    """The one error line of a command that also drew a progress bar on stderr."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def kept_path(message: str) -> Path:
    match = re.search(r"kept in (\S+)", message)
    assert match, message
    return Path(match.group(1).rstrip("/"))


# ------------------------------------------------------------------------------ devices, FIFOs, links


def test_a_full_device_stays_a_device_and_the_scores_are_kept(cli, data_dir, tmp_path, full_device, fallback_dir):
    path, inputs = gsm8k_input(data_dir, tmp_path)
    res = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "-i", path, "-o", full_device, "--json")
    assert stat.S_ISCHR(os.stat(full_device).st_mode), "the device was replaced by a regular file"
    assert res.exit_code == 1
    message = one_line(res.stderr)
    assert "--output" in message and str(full_device) in message and "No space left on device" in message
    kept = kept_path(message)
    assert kept.parent.parent == fallback_dir
    rows = read_jsonl(kept)
    assert [r["question"] for r in rows] == [r["question"] for r in inputs]
    assert all(r["verdict"] == "correct" for r in rows)


def test_dev_null_is_written_through(cli, data_dir, tmp_path, null_device):
    path, _ = gsm8k_input(data_dir, tmp_path, n=1)
    res = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "-i", path, "-o", null_device, "--json")
    assert res.exit_code == 0, res.stderr
    assert stat.S_ISCHR(os.stat(null_device).st_mode)


def test_a_fifo_receives_the_rows(cli, data_dir, tmp_path):
    path, inputs = gsm8k_input(data_dir, tmp_path)
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    res = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "-i", path, "-o", fifo, "--json")
    reader.join(timeout=30)
    assert res.exit_code == 0, res.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the FIFO was replaced by a regular file"
    rows = [json.loads(line) for line in received[0].decode("utf-8").split("\n") if line]
    assert [r["question"] for r in rows] == [r["question"] for r in inputs]


def test_a_symlink_stays_and_its_target_gets_the_rows(cli, data_dir, tmp_path):
    path, inputs = gsm8k_input(data_dir, tmp_path)
    target = tmp_path / "results" / "scored.jsonl"
    target.parent.mkdir()
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    res = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "-i", path, "-o", link, "--json")
    assert res.exit_code == 0, res.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(read_jsonl(target)) == len(inputs)


# ------------------------------------------------------------------------------ checked before the work


@pytest.mark.parametrize("where", ["unwritable", "under-a-file", "a-directory"])
def test_score_refuses_an_output_it_cannot_write_before_scoring(cli, data_dir, tmp_path, where):
    path, _ = gsm8k_input(data_dir, tmp_path)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    output = {"unwritable": UNWRITABLE / "out.jsonl", "under-a-file": tmp_path / "file" / "out.jsonl", "a-directory": tmp_path}[where]
    res = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "-i", path, "-o", output, "--json")
    assert res.exit_code == 2 and res.stdout == ""
    message = one_line(res.stderr)
    assert message.startswith("error: --output") and str(output) in message


def test_a_missing_output_folder_is_created(cli, data_dir, tmp_path):
    path, inputs = gsm8k_input(data_dir, tmp_path)
    out = tmp_path / "new" / "deeper" / "out.jsonl"
    res = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "-i", path, "-o", out, "--json")
    assert res.exit_code == 0, res.stderr
    assert len(read_jsonl(out)) == len(inputs)


def test_sample_checks_its_output_before_loading_the_model(cli, data_dir):
    res = cli("--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", NO_MODEL, "-o", UNWRITABLE / "s.jsonl")
    assert res.exit_code == 2
    message = one_line(res.stderr)
    assert "--output" in message and NO_MODEL not in message


def test_eval_checks_its_output_dir_before_loading_the_model(cli, data_dir, tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x", encoding="utf-8")
    for output_dir in (a_file, UNWRITABLE / "eval"):
        res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", NO_MODEL, "--output-dir", output_dir)
        assert res.exit_code == 2
        message = one_line(res.stderr)
        assert "--output-dir" in message and str(output_dir) in message and NO_MODEL not in message


# ------------------------------------------------------------------------------ nothing computed is lost


def test_sample_keeps_its_samples_when_the_output_fails(cli, data_dir, tiny_model, full_device, fallback_dir):
    res = cli("--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", tiny_model, "--limit", "2", "-n", "2",
              "--max-new-tokens", "4", "-o", full_device)  # fmt: skip
    assert res.exit_code == 1
    message = error_line(res.stderr)
    assert "--output" in message and "No space left on device" in message
    rows = read_jsonl(kept_path(message))
    assert len(rows) == 4 and all("completion" in r and "verdict" in r for r in rows)
    assert stat.S_ISCHR(os.stat(full_device).st_mode)


def test_eval_keeps_both_result_files_when_writing_them_fails(cli, data_dir, tiny_model, tmp_path, fallback_dir):
    out = tmp_path / "eval"
    (out / "results.json").mkdir(parents=True)  # the folder is writable, but results.json cannot be replaced
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", tiny_model, "--limit", "2",
              "--max-new-tokens", "4", "--output-dir", out, "--json")  # fmt: skip
    assert res.exit_code == 1
    message = error_line(res.stderr)
    assert "--output-dir" in message and "results.json" in message
    kept = kept_path(message)
    assert kept.parent == fallback_dir
    summary = json.loads((kept / "results.json").read_text(encoding="utf-8"))["cotkit"]
    assert summary["n"] == 2
    assert len(read_jsonl(kept / "samples.jsonl")) == 2
