"""One process at a time in a run directory: a second `cotkit train` is refused, a killed run's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cotkit.run.lock import LOCK_NAME, RunDirLockedError, RunLock

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "fixtures" / "run_methods.py"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("COTKIT_FAULT", "COTKIT_TEST_DISK_FULL"))}
    e.update({"OMP_NUM_THREADS": "1", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "COLUMNS": "200"})
    return e


def hold_cmd(data_dir: Path, model: Path, out: Path, gate: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cotkit", "--plugin", str(PLUGIN), "--data-dir", str(data_dir), "train", "--method", "hold",
        "--task", "gsm8k", "--model", str(model), "--output-dir", str(out), "--gate", str(gate), *extra,
    ]  # fmt: skip


def start_held_run(cmd: list[str], gate: Path) -> subprocess.Popen:
    """Start a run and wait until it is inside its held phase (the run directory locked)."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (gate / f"started.{proc.pid}").exists():
        if proc.poll() is not None:
            raise AssertionError(f"the first run exited early: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the first run never reached its held phase")
        time.sleep(0.05)
    return proc


def test_a_second_train_on_the_same_run_directory_is_refused_at_once(data_dir, tiny_model, tmp_path):
    out, gate = tmp_path / "run", tmp_path / "gate"
    gate.mkdir()
    first = start_held_run(hold_cmd(data_dir, tiny_model, out, gate), gate)
    try:
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and holder["host"]
        # Resuming (what a retry script or a second terminal does) and starting afresh are both refused.
        for extra in (["--resume"], []):
            second = subprocess.run(hold_cmd(data_dir, tiny_model, out, gate, *extra), cwd=REPO, env=env(),
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            assert second.returncode == 2, second.stderr[-2000:]
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
            assert f"{out} is in use by another cotkit process (pid {first.pid} on host" in lines[0]
            assert list(gate.glob("started.*")) == [gate / f"started.{first.pid}"]  # it never reached a phase
        (gate / "go").touch()
        assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "complete" and list(state["phases"]) == ["iter_001/first", "iter_001/held", "iter_001/last"]
    assert not (out / LOCK_NAME).exists()  # a finished run leaves no lock file behind


def test_the_lock_of_a_killed_run_is_taken_over(data_dir, tiny_model, tmp_path):
    out, gate = tmp_path / "run", tmp_path / "gate"
    gate.mkdir()
    first = start_held_run(hold_cmd(data_dir, tiny_model, out, gate), gate)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=60) == -signal.SIGKILL
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid  # the stale file is still there

    (gate / "go").touch()
    again = subprocess.run(hold_cmd(data_dir, tiny_model, out, gate, "--resume"), cwd=REPO, env=env(),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"lock of pid {first.pid}" in again.stderr and "taken over" in again.stderr
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
    assert not (out / LOCK_NAME).exists()


FORKING_HOLDER = textwrap.dedent(
    """
    import os, signal, sys, time
    from cotkit.run.lock import RunLock

    RunLock(sys.argv[1]).acquire()
    child = os.fork()
    if child == 0:  # a worker the run started, which outlives it
        time.sleep(120)
        os._exit(0)
    with open(sys.argv[2], "w") as f:
        f.write(str(child))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_child_process_outliving_a_killed_run_does_not_keep_it_locked(tmp_path):
    run_dir, pid_file = tmp_path / "run", tmp_path / "child.pid"
    script = tmp_path / "holder.py"
    script.write_text(FORKING_HOLDER)
    proc = subprocess.run([sys.executable, str(script), str(run_dir), str(pid_file)], cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    child = int(pid_file.read_text())
    try:
        os.kill(child, 0)  # the child still runs
        with RunLock(run_dir) as lock:
            assert lock.taken_over and lock.taken_over["pid"] != child
    finally:
        os.kill(child, signal.SIGKILL)


def test_lock_refusal_in_process_names_the_holder(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirLockedError, match=rf"pid {os.getpid()} on host"):
            RunLock(tmp_path / "run").acquire()
    with RunLock(tmp_path / "run") as again:  # released: free again, and nothing to take over
        assert again.taken_over is None


@pytest.mark.slow
def test_ranks_of_one_torchrun_launch_share_the_run_directory(data_dir, tiny_model, tmp_path):
    """Only rank 0 takes the lock: the other ranks of the launch work in the directory beside it."""
    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "cotkit"]
    args = ["--plugin", str(PLUGIN), "--data-dir", str(data_dir), "train", "--method", "tally", "--task", "gsm8k",
            "--model", str(tiny_model), "--output-dir", str(out), "--rounds", "2"]  # fmt: skip
    r = subprocess.run([*torchrun, *args], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
    with RunLock(out):  # another launch while this directory is in use: its rank 0 refuses, the launch stops
        r = subprocess.run([*torchrun, *args, "--resume"], cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "is in use by another cotkit process" in r.stderr


def test_an_output_dir_that_cannot_hold_a_run_is_one_clear_line(cli, data_dir, tiny_model, tmp_path):
    taken = tmp_path / "results.txt"
    taken.write_text("mine\n")
    r = cli("--plugin", PLUGIN, "--data-dir", data_dir, "train", "--method", "tally", "--task", "gsm8k", "--model", tiny_model, "-o", taken)
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [f"error: run directory {taken}: cannot create run.lock there (it is a file)"]
    assert taken.read_text() == "mine\n"


def test_ctrl_c_marks_the_run_interrupted_and_says_how_to_resume(data_dir, tiny_model, tmp_path):
    out, gate = tmp_path / "run", tmp_path / "gate"
    gate.mkdir()
    run = start_held_run(hold_cmd(data_dir, tiny_model, out, gate), gate)
    run.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
    assert run.wait(timeout=60) == 130
    last = run.stderr.read().strip().splitlines()[-1]
    resume = f"cotkit --plugin {PLUGIN} --data-dir {data_dir} train --resume --output-dir {out}"
    assert last == f"Interrupted: the run is kept; resume with: {resume}"
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "interrupted" and list(state["phases"]) == ["iter_001/first"]
    (gate / "go").touch()
    words = resume.split()
    done = subprocess.run([sys.executable, "-m", *words], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
