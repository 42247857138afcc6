"""Iterative RPO: pair construction, and two iterations end to end on the tiny model (with a kill and --resume).

Sampling goes through `tests/fixtures/answer_backend.py` (the tiny model's real samples with a
final answer right about half the time), so questions have both winners and losers; training is
the real DPO + NLL step on the tiny model with the previous iteration's model as reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotkit_plugins.methods.irpo import build_pairs

REPO = Path(__file__).resolve().parents[1]
ANSWER_BACKEND = REPO / "tests" / "fixtures" / "answer_backend.py"


def row(qid: str, verdict: str, text: str, finish: str = "stop") -> dict:
    return {"id": qid, "prompt": f"Q: {qid}\nA:", "completion": text, "verdict": verdict, "meta": {"finish_reason": finish}}


def test_pairs_cap_and_questions_without_both_kinds():
    rows = [
        *[row("q1", "correct", f" right {i}. The answer is 1.") for i in range(4)],
        *[row("q1", "incorrect", f" wrong {i}. The answer is 2.") for i in range(5)],  # 4 x 5 = 20 possible pairs
        row("q2", "correct", " only right"), row("q2", "correct", " only right again"),  # no loser
        row("q3", "incorrect", " no winner"), row("q3", "unparseable", " no answer"),  # no winner
        row("q4", "correct", " w"), row("q4", "unparseable", " u"), row("q4", "error", " e"), row("q4", "timeout", " t"),
    ]  # fmt: skip
    pairs, counts = build_pairs(rows, k=3, seed=7)
    by_q: dict[str, list] = {}
    for p in pairs:
        by_q.setdefault(p["meta"]["id"], []).append(p)
    assert sorted(by_q) == ["q1", "q4"]
    assert len(by_q["q1"]) == 3  # K caps the 20 possible pairs
    assert len({(p["chosen"], p["rejected"]) for p in by_q["q1"]}) == 3  # distinct pairs
    assert all("right" in p["chosen"] and "wrong" in p["rejected"] for p in by_q["q1"])
    assert [(p["chosen"], p["rejected"]) for p in by_q["q4"]] == [(" w", " u")]  # errors and timeouts are not losers
    assert counts == {"questions": 4, "questions_with_winner": 3, "questions_with_loser": 3, "questions_with_both": 2, "pairs": 4}
    # Same seed, same pairs; unparseable samples can be left out of the losers.
    assert build_pairs(rows, k=3, seed=7)[0] == pairs
    strict, c2 = build_pairs(rows, k=3, seed=7, unparseable_losers=False)
    assert c2["questions_with_both"] == 1 and {p["meta"]["id"] for p in strict} == {"q1"}
    # K larger than what a question offers gives every pair once.
    assert build_pairs(rows, k=100, seed=7)[1]["pairs"] == 20 + 1


def test_pairs_dedup_truncation_and_trim():
    rows = [
        row("q", "correct", " same. The answer is 1. Extra text"), row("q", "correct", " same.  The answer is 1. Extra text"),
        row("q", "correct", " cut off", finish="length"),
        row("q", "incorrect", " bad"), row("q", "incorrect", " bad"),
    ]  # fmt: skip
    pairs, counts = build_pairs(rows, k=10, seed=0, trim_sentence={"q": "The answer is 1."})
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(" same. The answer is 1.", " bad")]
    kept, _ = build_pairs(rows, k=10, seed=0, dedup=False, drop_truncated=False)
    assert len(kept) == 3 * 2


def args(tiny_model: Path, data_dir: Path, answers: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--plugin", str(ANSWER_BACKEND), "train", "--method", "irpo", "--task", "gsm8k", "--model", str(tiny_model),
        "--data-dir", str(data_dir), "--output-dir", str(out), "--backend", "answers", "--backend-option", f"answers={answers}",
        "--style", "zeroshot", "--iterations", "2", "--samples-per-question", "4", "--pairs-per-question", "2", "--train-limit", "4",
        "--dev-limit", "2", "--heldout-limit", "2", "--max-new-tokens", "8", "--sft.grad-accum", "2",
        "--sft.learning-rate", "1e-3", "--max-steps", "2", *extra,
    ]  # fmt: skip


def rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_two_iterations_killed_and_resumed(tiny_model, data_dir, gsm8k_answers, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cotkit", *args(tiny_model, data_dir, gsm8k_answers, out)]
    env = {**os.environ, "COTKIT_FAULT_AFTER_PHASE": "iter_001/train"}
    killed = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    sampled_before = (out / "iter_001" / "samples.jsonl").read_text()
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "iter_001" / "samples.jsonl").read_text() == sampled_before  # not sampled again

    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "complete"
    assert [p for p in state["phases"] if p.startswith("iter_002/")] == [
        "iter_002/sample", "iter_002/pairs", "iter_002/train", "iter_002/eval_dev", "iter_002/eval_heldout", "iter_002/summary",
    ]  # fmt: skip
    for it in (1, 2):
        name = f"iter_{it:03d}"
        sample = state["phases"][f"{name}/sample"]["result"]
        pairs = state["phases"][f"{name}/pairs"]["result"]
        train = state["phases"][f"{name}/train"]["result"]
        assert sample["samples"] == 16 and sample["questions"] == 4
        assert 0 < pairs["questions_with_both"] <= 4 and 0 < pairs["pairs"] <= 2 * pairs["questions_with_both"]
        assert len(rows_of(out / name / "pairs.jsonl")) == pairs["pairs"]
        assert train["steps"] == 2 and train["checkpoint"] == f"{name}/checkpoint"
        log = rows_of(out / name / "train_log.jsonl")
        assert len(log) == 2 and {"reward_margin", "chosen_reward", "rejected_reward", "nll", "dpo_loss"} <= set(log[0])
        # Step 1 compares the policy with itself as reference: every reward is 0, the DPO term log 2.
        assert log[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5) and log[0]["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)
        summary = state["phases"][f"{name}/summary"]["result"]
        assert summary["pairs"] == pairs["pairs"] and "reward_margin" in summary and summary["dev_n"] == 2
    # Iteration 2 samples from, starts from and is anchored to iteration 1's model.
    s2 = rows_of(out / "iter_002" / "samples.jsonl")
    assert all(r["meta"]["model"].endswith("iter_001/checkpoint") for r in s2)
    assert json.loads((out / "iter_002" / "checkpoint" / "training.json").read_text())["steps"] == 2
    assert (out / "report.md").exists()


def test_plain_dpo_ablation_and_config_errors(cli, tiny_model, data_dir):
    r = cli("train", "--method", "irpo", "--task", "gsm8k", "--model", str(tiny_model), "--nll-weight", "0", "--dry-run")
    assert r.exit_code == 0 and "nll_weight: 0.0" in r.stdout and "samples_per_question: 30" in r.stdout
    r = cli("train", "--method", "irpo", "--task", "gsm8k", "--samples-per-question", "1", "--dry-run")
    assert r.exit_code == 2 and "at least 2" in r.stderr
    r = cli("train", "--method", "irpo", "--task", "gsm8k", "--temperature", "0", "--dry-run")
    assert r.exit_code == 2 and "temperature" in r.stderr


def test_no_pairs_leaves_the_model_unchanged(cli, tiny_model, data_dir, tmp_path):
    """The random tiny model never answers GSM8K right: no pairs, no training, the run still completes."""
    out = tmp_path / "run"
    r = cli("--data-dir", str(data_dir), "train", "--method", "irpo", "--task", "gsm8k", "--model", str(tiny_model),
            "--output-dir", str(out), "--iterations", "1", "--samples-per-question", "2", "--train-limit", "2",
            "--dev-limit", "1", "--no-final-eval", "--max-new-tokens", "6")  # fmt: skip
    assert r.exit_code == 0, r.stderr[-2000:]
    state = json.loads((out / "state.json").read_text())
    assert state["phases"]["iter_001/pairs"]["result"]["pairs"] == 0
    assert state["phases"]["iter_001/train"]["result"] == {"checkpoint": "base", "steps": 0, "skipped": True, "pairs": 0}
    assert not (out / "iter_001" / "checkpoint").exists()
