"""SIGKILL a `cotkit train` process at several points, resume, and end with the same artifacts.

One uninterrupted run is the reference. A second run is killed five times (after a phase, at an
optimizer step inside training, after another phase, at a random moment inside a running phase)
and resumed each time; its final run directory must match the reference file for file, except
wall-clock timings.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("COTKIT_FAULT")}
    # One thread in every process: the same arithmetic in the reference and the resumed runs.
    e.update({"OMP_NUM_THREADS": "1", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "120"}, **extra)
    return e


def command(data_dir: Path, train_args: list[str], resume: bool) -> list[str]:
    return [sys.executable, "-m", "cotkit", "--data-dir", str(data_dir), *train_args, *(["--resume"] if resume else [])]


def run(cmd: list[str], **fault: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env(**fault), capture_output=True, text=True, timeout=600)


def state(out: Path) -> dict:
    return json.loads((out / "state.json").read_text())


def kill_during(cmd: list[str], out: Path, phase: str, max_delay: float, seed: int) -> tuple[int, str]:
    """Start the run, wait until `phase` is running, SIGKILL it after a random delay."""
    delay = random.Random(seed).uniform(0, max_delay)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if state(out).get("running") == phase:
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.02)
        # Kill after the delay, or earlier if the phase ends first (a fast machine finishes the
        # tiny model's phase in under a second): the kill always lands while the run is running.
        start = time.time()
        while time.time() - start < delay and proc.poll() is None:
            try:
                if state(out).get("running") != phase:
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return proc.returncode, f"killed {delay:.2f}s into {phase}"


#: Fields that differ between an uninterrupted and a resumed run by design.
TIMING_KEYS = ("seconds", "finished", "resumed_from_step")


def strip_timing(obj):
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if not (k in TIMING_KEYS or k.startswith("seconds_"))}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


def artifacts(out: Path) -> dict[str, object]:
    """Every final artifact of a run, timings removed, keyed by path inside the run directory."""
    got: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if not p.is_file() or rel in ("manifest.json", "config.yaml"):
            continue
        if p.suffix == ".jsonl":
            got[rel] = [strip_timing(json.loads(line)) for line in p.read_text().splitlines()]
        elif rel == "state.json":
            got[rel] = strip_timing(json.loads(p.read_text()))
        elif rel == "report.md":
            got[rel] = p.read_text().split("## Phases")[0]
        elif rel.endswith("training.json"):
            got[rel] = strip_timing(json.loads(p.read_text()))
        else:
            got[rel] = p.read_bytes()
    return got


def test_killed_and_resumed_run_ends_with_the_same_artifacts(data_dir, formatted_model, star_args, tmp_path):
    ref, cut = tmp_path / "reference", tmp_path / "interrupted"
    r = run(command(data_dir, star_args(formatted_model, ref), resume=False))
    assert r.returncode == 0, r.stderr[-3000:]

    first = command(data_dir, star_args(formatted_model, cut), resume=False)
    again = command(data_dir, star_args(formatted_model, cut), resume=True)

    # 1. right after a phase is recorded
    r = run(first, COTKIT_FAULT_AFTER_PHASE="iter_001/sample")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert list(state(cut)["phases"])[-1] == "iter_001/sample"

    # 2. inside training, after optimizer step 1 (resumable state saved every step)
    r = run(again, COTKIT_FAULT_AT_STEP="iter_001/train:1")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert state(cut)["running"] == "iter_001/train"
    assert (cut / "iter_001" / "train_state").is_dir() and not (cut / "iter_001" / "checkpoint").exists()
    assert "completed earlier" in r.stderr  # phases before it were skipped, not redone

    # 3. after the checkpoint is written and evaluated
    r = run(again, COTKIT_FAULT_AFTER_PHASE="iter_001/eval_dev")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert json.loads((cut / "iter_001" / "checkpoint" / "training.json").read_text())["resumed_from_step"] == 1

    # 4. at a random moment while a later phase is running
    code, what = kill_during(again, cut, "iter_002/train", max_delay=1.0, seed=int(time.time()))
    assert code == -signal.SIGKILL, what
    assert "iter_002/summary" not in state(cut)["phases"], what

    # 5. to the end
    r = run(again)
    assert r.returncode == 0, r.stderr[-3000:]
    assert state(cut)["status"] == "complete"
    assert len(json.loads((cut / "manifest.json").read_text())["resumes"]) == 4

    a, b = artifacts(ref), artifacts(cut)
    assert sorted(a) == sorted(b), what
    for rel in a:
        assert a[rel] == b[rel], f"{rel} differs after resuming ({what})"
    for name in ("iter_001/checkpoint/model.safetensors", "iter_002/checkpoint/model.safetensors", "accuracy.png"):
        assert name in a
    assert not list(cut.rglob(".*.tmp")) and not list(cut.rglob("train_state"))
