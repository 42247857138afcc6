"""GRPO as a method (`cotkit train --method grpo`): options, and real TRL runs on the tiny model.

The runs use `formatted_model` (the tiny model that answers `So the answer is yes|no.` on
bbh:sports_understanding, and writes noise at temperature 1), rewarded 1 for a correct answer, 0
for a wrong one and -1 for no answer, so sampled groups get different rewards from the task's real
verifier and GRPO has a gradient. One run goes through uninterrupted; another is SIGKILLed right after its
step-1 checkpoint and resumed: both must end with the same weights, logs and report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotkit import ConfigError
from plugins.methods.grpo import GrpoConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_generations": 3}, r"batch_size x grad_accum \(8 x 1\) must be a multiple of num_generations=3"),
        ({"num_generations": 1, "batch_size": 1}, "num_generations must be at least 2"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"save_every": -1}, "save_every must be 0 or more"),
        ({"status_rewards": {"wrong": -1.0}}, "status_rewards: no verdict status 'wrong'"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        GrpoConfig(**options)


def test_a_bad_option_on_the_command_line_is_one_line_and_exit_code_2(cli, data_dir, tmp_path):
    r = cli("--data-dir", str(data_dir), "train", "--method", "grpo", "--task", "gsm8k", "--output-dir", str(tmp_path / "run"), "--num-generations", "3")
    assert r.exit_code == 2
    assert "must be a multiple of num_generations=3" in r.stderr


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("COTKIT_FAULT")}
    e.update({"OMP_NUM_THREADS": "1", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}, **env)
    return subprocess.run([sys.executable, "-m", "cotkit", *args], cwd=REPO, env=e, capture_output=True, text=True, timeout=600, check=False)


def train_args(data_dir: Path, model: Path, out: Path) -> list[str]:
    return [
        "--data-dir", str(data_dir), "train", "--method", "grpo", "--task", "bbh:sports_understanding", "--model", str(model),
        "--output-dir", str(out), "--style", "zeroshot", "--train-limit", "4", "--dev-limit", "3", "--heldout-limit", "3",
        "--steps", "2", "--num-generations", "4", "--batch-size", "8", "--max-completion-length", "10",
        "--learning-rate", "1e-3", "--save-every", "1", "--status-rewards", "unparseable=-1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(data_dir, formatted_model, tmp_path_factory):
    """(uninterrupted run, run killed after its step-1 checkpoint and resumed)."""
    root = tmp_path_factory.mktemp("grpo")
    whole, cut = root / "whole", root / "cut"
    r = run(train_args(data_dir, formatted_model, whole))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(train_args(data_dir, formatted_model, cut), COTKIT_FAULT_AT_STEP="iter_001/train:1")
    assert r.returncode == -9, r.stderr[-3000:]
    assert (cut / "iter_001" / "trainer" / "checkpoint-1").is_dir() and not (cut / "iter_001" / "checkpoint").exists()
    r = run([*train_args(data_dir, formatted_model, cut), "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    return whole, cut


def weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "iter_001" / "checkpoint" / "model.safetensors"))


def untimed(path: Path) -> list[dict]:
    """TRL's per-step log rows without their timings."""
    return [{k: v for k, v in json.loads(line).items() if "time" not in k} for line in path.read_text().splitlines()]


def test_a_run_killed_after_a_checkpoint_resumes_to_the_weights_and_logs_of_an_uninterrupted_one(runs, formatted_model):
    from safetensors.torch import load_file

    whole, cut = runs
    a, b = weights(whole), weights(cut)
    assert all((a[k] == b[k]).all() for k in a)
    base = load_file(str(formatted_model / "model.safetensors"))
    assert any((a[k] != base[k]).any() for k in a)  # GRPO moved the weights
    assert (whole / "iter_001" / "rewards.jsonl").read_text() == (cut / "iter_001" / "rewards.jsonl").read_text()
    assert untimed(whole / "iter_001" / "train_log.jsonl") == untimed(cut / "iter_001" / "train_log.jsonl")
    trained = json.loads((cut / "state.json").read_text())["phases"]["iter_001/train"]["result"]
    assert trained["resumed_from_step"] == 1 and trained["steps"] == 2
    assert not (cut / "iter_001" / "trainer").exists()  # TRL's resumable state goes once training is done


def test_every_completion_is_logged_once_with_its_reward_and_typed_verdict(runs):
    whole, _ = runs
    rows = [json.loads(line) for line in (whole / "iter_001" / "rewards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0] * 8 + [1] * 8  # 8 completions (2 questions x 4) per step
    assert {r["verdict"] for r in rows} <= {"correct", "incorrect", "unparseable"}
    assert all(r["reward"] == {"correct": 1.0, "incorrect": 0.0, "unparseable": -1.0}[r["verdict"]] for r in rows)
    trained = json.loads((whole / "state.json").read_text())["phases"]["iter_001/train"]["result"]
    assert trained["completions"] == 16 and trained["correct_completions"] == sum(r["correct"] for r in rows)
    log = [json.loads(line) for line in (whole / "iter_001" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and "exact_match/correct" in log[0]


def test_the_report_has_base_and_final_held_out_accuracy_and_the_checkpoint_evaluates(runs, cli, data_dir, tmp_path):
    whole, _ = runs
    report = (whole / "report.md").read_text()
    assert "| base model | heldout |" in report and "| after iteration 1 | heldout |" in report and "(n=3)" in report
    phases = json.loads((whole / "state.json").read_text())["phases"]
    for name in ("iter_000/eval_heldout", "iter_001/eval_heldout"):
        result = phases[name]["result"]
        assert result["n"] == 3 and result["ci_low"] <= result["accuracy"] <= result["ci_high"]
    out = tmp_path / "eval"
    r = cli("--data-dir", str(data_dir), "eval", "--task", "bbh:sports_understanding", "--model", str(whole / "iter_001" / "checkpoint"),
            "--style", "zeroshot", "--limit", "3", "--max-new-tokens", "10", "--output-dir", str(out))  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert len((out / "samples.jsonl").read_text().splitlines()) == 3


def test_lora_is_merged_into_a_plain_checkpoint_with_the_base_models_tensors(data_dir, formatted_model, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    args = [
        *train_args(data_dir, formatted_model, out), "--lora", "--learning-rate", "1e-2", "--save-every", "0",
        "--no-final-eval", "--dev-limit", "2", "--max-completion-length", "8",
    ]  # fmt: skip
    r = run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    trained, base = weights(out), load_file(str(formatted_model / "model.safetensors"))
    assert sorted(trained) == sorted(base)  # no adapter tensors: peft's LoRA merged
    assert any((trained[k] != base[k]).any() for k in base)
