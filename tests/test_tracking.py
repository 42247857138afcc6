"""`--report-to`: what a run and an evaluation send to TensorBoard and trackio, read back from their own storage."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "fixtures" / "run_methods.py"


def _metrics(run: Path) -> dict[str, dict]:
    return {row["phase"]: row for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def _tensorboard(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (logdir,) = [p for p in (run / "trackers").iterdir() if p.is_dir()]
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return logdir, events


def test_star_run_in_tensorboard(cli, data_dir, formatted_model, star_args, tmp_path, one_thread):
    out = tmp_path / "run"
    r = cli("--data-dir", data_dir, *star_args(formatted_model, out), "--report-to", "tensorboard")
    assert r.exit_code == 0, r.stderr[-2000:]
    metrics = _metrics(out)
    logdir, events = _tensorboard(out)
    assert logdir.name == "run"  # the run directory's name: `tensorboard --logdir RUN/trackers` shows it so

    # every optimizer step of both iterations, on one step axis that goes on across iterations
    losses = events.Scalars("train/loss")
    trained = metrics["iter_001/train"]["steps"] + metrics["iter_002/train"]["steps"]
    assert [e.step for e in losses] == list(range(1, trained + 1))
    first = metrics["iter_001/train"]
    assert losses[0].value == pytest.approx(first["first_loss"], rel=1e-4)
    assert [e.value for e in events.Scalars("iter_002/train/loss")] == [e.value for e in losses[first["steps"] :]]
    assert all(e.value > 0 for e in events.Scalars("train/lr"))

    # each completed phase's numbers under its name: dev accuracy per iteration, the funnel
    for phase in ("iter_000/eval_dev", "iter_002/eval_dev", "iter_002/eval_heldout"):
        (logged,) = events.Scalars(f"{phase}/accuracy")
        assert logged.value == pytest.approx(metrics[phase]["accuracy"])
        assert events.Scalars(f"{phase}/n")[0].value == metrics[phase]["n"] == 6
    assert events.Scalars("iter_002/eval_dev/accuracy")[0].step == trained
    assert events.Scalars("iter_001/summary/correct")[0].value == metrics["iter_001/summary"]["correct"]

    # the plot, each time report.md was rewritten (base, both iterations, the end)
    plots = events.Images("accuracy")
    assert len(plots) >= 3 and plots[-1].width == 600 and plots[-1].height == 400

    # the resolved config as hyperparameters
    (hparams,) = logdir.glob("*/hparams.yml")
    config = yaml.safe_load(hparams.read_text())
    assert config["method"] == "star" and config["star.iterations"] == 2 and config["star.sft.learning_rate"] == 1e-3
    assert "output_dir" not in config


def test_trackio_run_resumes_its_tracker_run(data_dir, tiny_model, tmp_path):
    # trackio reads TRACKIO_DIR once, at import: a process of its own keeps the tests' logs here.
    out, store = tmp_path / "run", tmp_path / "trackio"
    env = {**os.environ, "TRACKIO_DIR": str(store), "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    cmd = [sys.executable, "-m", "cotkit", "--plugin", str(PLUGIN), "--data-dir", str(data_dir), "train", "--method", "tiny-sft",
           "--task", "gsm8k", "--model", str(tiny_model), "--output-dir", str(out), "--steps", "3", "--report-to", "trackio"]  # fmt: skip
    env_killed = {**env, "COTKIT_FAULT_AFTER_PHASE": "iter_001/data"}
    killed = subprocess.run(cmd, cwd=REPO, env=env_killed, capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0
    r = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Trackio" not in r.stdout  # trackio's own lines go to stderr: stdout carries the results

    db = sqlite3.connect(store / "run.db")
    runs = {name for (name,) in db.execute("select distinct run_name from metrics")}
    assert runs == {json.loads((out / "trackers" / "runs.json").read_text())["trackio"]}  # the resume went on in the same run
    logged = [(step, json.loads(m)) for step, m in db.execute("select step, metrics from metrics order by id")]
    losses = {step: m["train/loss"] for step, m in logged if "train/loss" in m}
    assert sorted(losses) == [1, 2, 3]
    assert losses[3] == pytest.approx(_metrics(out)["iter_001/train"]["final_loss"], rel=1e-4)
    assert any(step == 3 and m.get("iter_001/train/steps") == 3 for step, m in logged)
    config = json.loads(db.execute("select config from configs").fetchone()[0])
    assert config["method"] == "tiny-sft" and config["tiny-sft.steps"] == 3


def test_eval_summary_in_tensorboard(cli, data_dir, tiny_model, tmp_path, one_thread):
    out = tmp_path / "eval"
    r = cli("--data-dir", data_dir, "eval", "--task", "bbh:sports_understanding", "--model", tiny_model, "--limit", "4",
            "--max-new-tokens", "4", "--style", "zeroshot", "-o", out, "--report-to", "tensorboard", "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    logdir, events = _tensorboard(out)
    assert events.Scalars("eval/accuracy")[0].value == pytest.approx(summary["accuracy"])
    assert events.Scalars("eval/n")[0].value == summary["n"] == 4
    low, high = events.Scalars("eval/ci_low")[0].value, events.Scalars("eval/ci_high")[0].value
    assert 0 <= low <= summary["accuracy"] <= high <= 1
    assert events.Scalars("eval/unparseable_count")[0].value == summary["unparseable_count"]
    (hparams,) = logdir.glob("*/hparams.yml")
    settings = yaml.safe_load(hparams.read_text())
    assert settings["task"] == "bbh:sports_understanding" and settings["max_new_tokens"] == 4 and settings["style"] == "zeroshot"


def test_missing_tracker_library_is_one_line_before_any_work(cli, data_dir, tiny_model, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "tensorboard", "tensorboardX") else find_spec(name, *a))
    out = tmp_path / "run"
    r = cli("--plugin", PLUGIN, "--data-dir", data_dir, "train", "--method", "tally", "--task", "gsm8k", "--model", tiny_model,
            "-o", out, "--report-to", "tensorboard")  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --report-to tensorboard needs the tensorboard package: pip install 'cotkit[track]'"
    assert not out.exists()
    r = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", tiny_model, "-o", tmp_path / "eval", "--report-to", "wandb")
    assert r.exit_code == 2 and "--report-to wandb needs the wandb package: pip install wandb" in r.stderr
    assert not (tmp_path / "eval").exists()


def test_tracker_that_cannot_start_is_one_line(cli, data_dir, tiny_model, tmp_path, monkeypatch):
    from accelerate.tracking import TensorBoardTracker

    def refuse(self):
        raise RuntimeError("cannot write event files\n(a second line of detail)")

    monkeypatch.setattr(TensorBoardTracker, "start", refuse)
    r = cli("--plugin", PLUGIN, "--data-dir", data_dir, "train", "--method", "tally", "--task", "gsm8k", "--model", tiny_model,
            "-o", tmp_path / "run", "--report-to", "tensorboard")  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.strip() == "error: --report-to tensorboard: cannot write event files"


def test_report_to_none_and_bad_names(cli, data_dir, tiny_model, tmp_path):
    out = tmp_path / "run"
    args = ["--plugin", PLUGIN, "--data-dir", data_dir, "train", "--method", "tally", "--task", "gsm8k", "--model", tiny_model, "-o", out]
    r = cli(*args, "--report-to", "none")
    assert r.exit_code == 0, r.stderr[-2000:]
    assert not (out / "trackers").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["report_to"] == ["none"]

    r = cli(*args[:-1], tmp_path / "two", "--report-to", "tensorboard", "--report-to", "trackio", "--dry-run")
    assert r.exit_code == 0 and yaml.safe_load(r.stdout)["report_to"] == ["tensorboard", "trackio"]
    r = cli(*args[:-1], tmp_path / "bad", "--report-to", "tensorbored")
    assert r.exit_code == 2 and "--report-to" in r.stderr and "tensorbored" in r.stderr
    r = cli(*args[:-1], tmp_path / "bad", "--report-to", "none,tensorboard")
    assert r.exit_code == 2 and "`none` cannot be combined with a tracker" in r.stderr
