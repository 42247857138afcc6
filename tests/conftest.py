"""Shared fixtures: the real data in ../shared/data, tiny real models, a CLI runner, test servers.

Everything two test modules share lives here as a fixture: a test module never imports another
test module or a support module. Plugin files and scripts the tests load by path (not import)
stay in tests/fixtures/.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COTKIT_TEST_DATA_DIR", REPO.parent / "shared" / "data"))
OPENAI_SERVER = REPO / "tests" / "fixtures" / "openai_server.py"
#: The task `formatted_model` answers and the STaR runs of `star_args` train on.
STAR_TASK = "bbh:sports_understanding"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The publishers' files (../shared/data); the tests need them."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test data not found at {SHARED_DATA}: clone with ../shared beside the repo or set COTKIT_TEST_DATA_DIR")
    return SHARED_DATA


# ------------------------------------------------------------------------------------ models


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama with a trained byte-level BPE tokenizer, saved as a HF folder."""
    from cotkit.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny models run faster so, and far faster when other jobs
    share the cores (the hf backend's generate on the tiny model: 3 s on two busy cores, 0.04 s on one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def formatted_model(tiny_model, data_dir, tmp_path_factory) -> Path:
    """The tiny model after a few SFT steps on ` So the answer is yes|no.` for STAR_TASK (built once per run).

    A random tiny model never produces a parseable answer, so STaR would have nothing to keep and the
    fine-tuning step would never run. 30 steps on the gold answer sentence (zero-shot prompts, the
    last 60 `fit` questions, outside the slice the tests sample) give a model whose greedy answers
    parse and are right about half the time: every STaR phase then has real work to do.
    """
    import torch

    from cotkit.harness.train import SFTConfig, TrainExample, train
    from cotkit.plugins import host

    task = host().task(STAR_TASK, data_dir=data_dir)
    fit = task.examples("fit")
    items = [TrainExample(task.prompt(e, "zeroshot"), " " + task.answer_sentence(e)) for e in fit[-60:]]
    cfg = SFTConfig(learning_rate=3e-3, warmup_steps=0, batch_size=8, grad_accum=1)
    out = tmp_path_factory.mktemp("fmt") / "model"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train faster on one thread, far faster when jobs share the cores
    try:
        train(str(tiny_model), items, cfg, 30, out, seed=0)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="session")
def star_task() -> str:
    """The task of `formatted_model` and `star_args`."""
    return STAR_TASK


@pytest.fixture(scope="session")
def star_args():
    """`star_args(model, out)`: `cotkit train` arguments of a small but complete STaR run (2 iterations, every phase)."""

    def args(model: Path, out: Path) -> list[str]:
        return [
            "train", "--method", "star", "--task", STAR_TASK, "--model", str(model), "--output-dir", str(out),
            "--style", "zeroshot", "--iterations", "2", "--train-limit", "12", "--dev-limit", "6",
            "--heldout-limit", "6", "--max-new-tokens", "12", "--steps", "2", "--step-growth", "1.5",
            "--sft.learning-rate", "1e-3", "--sft.warmup-steps", "1", "--sft.batch-size", "2", "--sft.grad-accum", "2",
            "--sft.save-every", "1", "--backend-option", "batch_size=8",
        ]  # fmt: skip

    return args


@pytest.fixture(scope="session")
def gsm8k_answers(data_dir, tmp_path_factory) -> Path:
    """{question as prompted: gold answer text} for GSM8K's train and test splits, as a JSON file.

    The `answers` backend of tests/fixtures/answer_backend.py reads it (`answers=PATH`).
    """
    from cotkit.plugins import host

    task = host().task("gsm8k", data_dir=data_dir)
    table = {}
    for split in (task.train_split, task.heldout_split):
        for ex in task.examples(split):
            table[task.question_text(ex)] = task.answer_text(ex)
    path = tmp_path_factory.mktemp("answers") / "gsm8k.json"
    path.write_text(json.dumps(table), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------- sandbox


@pytest.fixture(scope="session")
def require_bwrap() -> None:
    """Skip where bubblewrap cannot run, unless COTKIT_SANDBOX_REQUIRE_BWRAP=1 (CI) makes it a failure."""
    from cotkit.sandbox import bwrap_problem

    problem = bwrap_problem()
    if problem:
        if os.environ.get("COTKIT_SANDBOX_REQUIRE_BWRAP") == "1":
            pytest.fail(f"bubblewrap is required here: {problem}")
        pytest.skip(f"bubblewrap cannot run here: {problem}")


# ----------------------------------------------------------------------------------- servers


@contextlib.contextmanager
def _running(cmd: list[str], env: dict[str, str] | None, log: Any):
    """A server process (output to `log`), stopped when the block ends: terminate, then kill after 20 s."""
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def running_process():
    """`with running_process(cmd, env, log) as proc:` a process that is stopped when the block ends."""
    return _running


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory):
    """`with openai_server(model, *args, env={...}) as base_url:` runs tests/fixtures/openai_server.py
    (`args` are its options, `env` extra environment) on a free port of 127.0.0.1 until the block ends."""

    @contextlib.contextmanager
    def serve(model: Path, *args: str, env: dict[str, str] | None = None):
        tmp = tmp_path_factory.mktemp("openai-server")
        port_file, log_file = tmp / "port", tmp / "server.log"
        cmd = [sys.executable, str(OPENAI_SERVER), "--model", str(model), *args, "--port", "0", "--port-file", str(port_file)]
        with open(log_file, "w") as log, _running(cmd, env, log) as proc:
            deadline = time.time() + 180
            while not port_file.exists():  # written once the server listens
                if proc.poll() is not None or time.time() > deadline:
                    why = f"exited with {proc.returncode}" if proc.poll() is not None else "no port after 180 s"
                    raise RuntimeError(f"test server did not start ({why}): {log_file.read_text()[-3000:]}")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port_file.read_text()}/v1"

    return serve


# ------------------------------------------------------------------------------ plugins, CLI


@pytest.fixture
def host(monkeypatch):
    """A fresh plugin host with installed-plugin autoload off (built-ins only)."""
    from cotkit import plugins

    monkeypatch.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
    plugins.reset()
    yield plugins.host()
    plugins.reset()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `cotkit ARGS...` in this process; returns exit code, stdout and stderr."""
    from cotkit import plugins
    from cotkit.cli import state

    monkeypatch.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> CliResult:
        from cotkit.cli.main import main

        plugins.reset()
        state.options = state.GlobalOptions()
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        plugins.reset()
        return CliResult(code, captured.out, captured.err)

    return run
