"""A full disk during training ends the run with one line naming what was kept and the exact resume command, which works."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "fixtures" / "run_methods.py"


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("COTKIT_FAULT", "COTKIT_TEST_DISK_FULL"))}
    e.update({"OMP_NUM_THREADS": "1", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"}, **extra)
    return e


def cotkit(args: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotkit", *args], cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=600)


def resume_command(stderr: str) -> list[str]:
    """The command the error line tells the user to run, as argv for this interpreter."""
    m = re.search(r"resume with: (cotkit .*)$", stderr.strip().splitlines()[-1])
    assert m, stderr
    words = shlex.split(m.group(1))
    assert words[0] == "cotkit"
    return words[1:]


@pytest.mark.parametrize(
    ("fault", "steps", "kept"),
    [
        ("state:2", "3", "training state iter_001/train_state at step 1"),  # while saving resumable state
        ("checkpoint", "2", "training state iter_001/train_state at step 1"),  # while saving the final checkpoint
    ],
)
def test_disk_full_during_training_says_what_was_kept_and_the_run_resumes(data_dir, tiny_model, tmp_path, fault, steps, kept):
    args = ["--plugin", str(PLUGIN), "--data-dir", str(data_dir), "train", "--method", "tiny-sft", "--task", "gsm8k",
            "--model", str(tiny_model), "--output-dir", "run", "--steps", steps]  # fmt: skip
    r = cotkit(args, tmp_path, COTKIT_TEST_DISK_FULL=fault)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: disk full while writing run/iter_001/"), last
    assert "the run stopped; run keeps 1 completed phase(s), the last iter_001/data" in last and kept in last
    assert sum("error" in line for line in r.stderr.splitlines()) == 1
    run = tmp_path / "run"
    assert not list(run.rglob(".*.tmp"))  # the half-written files no longer hold space
    assert json.loads((run / "state.json").read_text())["status"] == "failed"

    again = resume_command(r.stderr)
    assert again == ["--plugin", str(PLUGIN), "--data-dir", str(data_dir), "train", "--resume", "--output-dir", "run"]
    r = cotkit(again, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "complete" and "iter_001/done" in state["phases"]
    assert json.loads((run / "iter_001" / "checkpoint" / "training.json").read_text())["resumed_from_step"] == 1


def test_disk_full_writing_run_files_keeps_the_completed_phases(cli, data_dir, tiny_model, tmp_path, monkeypatch):
    """A full disk while recording a phase (no training): the phases before it are kept and resume skips them."""
    from cotkit import jsonl

    out = tmp_path / "run"
    real = jsonl.atomic_write_text

    def fill_up_at_round_2(path, text):
        if Path(path).name == "values.jsonl" and Path(path).parent.name == "iter_002":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text)

    monkeypatch.setattr(jsonl, "atomic_write_text", fill_up_at_round_2)
    args = ["--plugin", PLUGIN, "--data-dir", data_dir, "train", "--method", "tally", "--task", "gsm8k", "--model", tiny_model,
            "-o", out, "--rounds", "3"]  # fmt: skip
    r = cli(*args)
    assert r.exit_code == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"disk full while writing {out}/iter_002/values.jsonl" in r.stderr
    assert "keeps 1 completed phase(s), the last iter_001/step" in r.stderr
    assert f"train --resume --output-dir {out}" in r.stderr

    monkeypatch.setattr(jsonl, "atomic_write_text", real)
    r = cli("--plugin", PLUGIN, "--data-dir", data_dir, "train", "--resume", "--output-dir", out)
    assert r.exit_code == 0, r.stderr
    assert "iter_001/step (completed earlier)" in r.stderr
    assert [json.loads(line)["value"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
