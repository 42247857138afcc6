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

from cotkit import wilson_interval
from cotkit_plugins.methods.irpo import answer_trimmer, build_pairs

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
    assert counts == {
        "questions": 4, "winners": 4 + 2 + 1, "losers": 5 + 2 + 1, "questions_with_winner": 3, "questions_with_loser": 3,
        "questions_with_both": 2, "pairs": 4, "trimmed_winners": 0, "trimmed_losers": 0,
        "dropped_truncated_winners": 0, "dropped_truncated_losers": 0,
    }  # fmt: skip
    # Same seed, same pairs; unparseable samples can be left out of the losers.
    assert build_pairs(rows, k=3, seed=7)[0] == pairs
    strict, c2 = build_pairs(rows, k=3, seed=7, unparseable_losers=False)
    assert c2["questions_with_both"] == 1 and {p["meta"]["id"] for p in strict} == {"q1"}
    # K larger than what a question offers gives every pair once.
    assert build_pairs(rows, k=100, seed=7)[1]["pairs"] == 20 + 1


def answer_statement(qid: str, answer: str) -> str:
    return f"The answer is {answer}."


def verified(qid: str, verdict: str, text: str, answer: str | None, finish: str = "stop") -> dict:
    """A sample row as the sample phase writes it: the verdict's extracted answer included."""
    return {**row(qid, verdict, text, finish), "extracted": answer, **({"normalized": answer} if answer else {})}


def test_winners_and_losers_are_trimmed_and_truncation_dropped_alike():
    trim = answer_trimmer(answer_statement, {"q": "1"})
    rows = [
        verified("q", "correct", " 2 - 1 = 1. The answer is 1. Q: and now 3 + 4?", "1"),
        verified("q", "incorrect", " 2 + 1 = 3. The answer is 3. Then I keep talking about apples", "3"),  # rambles on
        verified("q", "incorrect", " 2 * 1 is 2 so the answer is: 2 and more", "2", finish="length"),  # cut, but it stated its answer
        verified("q", "incorrect", " let me think about this for a very long", None, finish="length"),  # never finished
        verified("q", "unparseable", " I do not know.", None),  # ended by itself: kept whole
    ]  # fmt: skip
    pairs, counts = build_pairs(rows, k=10, seed=0, trim=trim)
    assert {p["chosen"] for p in pairs} == {" 2 - 1 = 1. The answer is 1."}
    assert sorted(p["rejected"] for p in pairs) == [" 2 * 1 is 2 so the answer is: 2", " 2 + 1 = 3. The answer is 3.", " I do not know."]
    assert counts["dropped_truncated_losers"] == 1 and counts["dropped_truncated_winners"] == 0
    assert counts["trimmed_winners"] == 1 and counts["trimmed_losers"] == 2 and counts["losers"] == 3
    # The unfinished loser is used only when asked for, and then it is the only text left uncut.
    kept, c2 = build_pairs(rows, k=10, seed=0, trim=trim, drop_truncated=False)
    assert c2["dropped_truncated_losers"] == 0 and " let me think about this for a very long" in {p["rejected"] for p in kept}
    # The same rules for a winner: an unfinished one is dropped, one cut after its answer is kept.
    winners = [
        verified("q", "correct", " thinking and thinking", "1", finish="length"),
        verified("q", "correct", " so the answer is 1. And then", "1", finish="length"),
        verified("q", "incorrect", " The answer is 3.", "3"),
    ]  # fmt: skip
    pairs, counts = build_pairs(winners, k=10, seed=0, trim=trim)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(" so the answer is 1.", " The answer is 3.")]
    assert counts["dropped_truncated_winners"] == 1 and counts["trimmed_winners"] == 1 and counts["trimmed_losers"] == 0


def test_pairs_dedup_after_trimming():
    trim = answer_trimmer(answer_statement, {"q": "1"})
    rows = [
        verified("q", "correct", " same. The answer is 1. Extra text", "1"), verified("q", "correct", " same.  The answer is 1. Other", "1"),
        verified("q", "incorrect", " bad. The answer is 2. More", "2"), verified("q", "incorrect", " bad. The answer is 2.", "2"),
    ]  # fmt: skip
    pairs, counts = build_pairs(rows, k=10, seed=0, trim=trim)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(" same. The answer is 1.", " bad. The answer is 2.")]
    assert build_pairs(rows, k=10, seed=0, trim=trim, dedup=False)[1]["pairs"] == 2 * 2
    assert len(build_pairs(rows, k=10, seed=0)[0]) == 2 * 2  # untrimmed, the texts all differ


def test_majority_vote_summary_breaks_ties_by_the_first_sampled_answer():
    from cotkit import Example, Sample, Status, Verdict
    from cotkit.harness.verify import vote_summary

    def samples(qid: str, gold: str, answers: list[str | None]) -> list[Sample]:
        ex = Example(qid, "t", "?", gold, "number")
        out = []
        for a in answers:
            status = Status.UNPARSEABLE if a is None else Status.CORRECT if a == gold else Status.INCORRECT
            out.append(Sample(ex, f"The answer is {a}.", verdict=Verdict(status, extracted=a, normalized=a)))
        return out

    got = [
        *samples("a", "7", ["5", "7", "7"]),  # 7 wins 2 to 1
        *samples("b", "7", ["5", "7", None]),  # a tie: 5 was sampled first
        *samples("c", "7", [None, None, None]),  # no vote: not correct
        *samples("d", "7", [None, "7", "5"]),  # a tie: 7 was sampled first
    ]
    summary = vote_summary(got)
    assert {k: summary[k] for k in ("n", "correct", "incorrect", "no_vote", "samples_per_question")} == {
        "n": 4, "correct": 2, "incorrect": 1, "no_vote": 1, "samples_per_question": 3,
    }  # fmt: skip
    assert summary["accuracy"] == 0.5 and (summary["ci_low"], summary["ci_high"]) == pytest.approx(wilson_interval(2, 4))
    assert summary["sample_accuracy"] == pytest.approx(4 / 12)
    assert [s.meta["majority_vote"] for s in got[:3]] == [False, True, False] and got[3].meta["majority_vote"]


def args(tiny_model: Path, data_dir: Path, answers: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--plugin", str(ANSWER_BACKEND), "train", "--method", "irpo", "--task", "gsm8k", "--model", str(tiny_model),
        "--data-dir", str(data_dir), "--output-dir", str(out), "--backend", "answers", "--backend-option", f"answers={answers}",
        "--style", "zeroshot", "--iterations", "2", "--samples-per-question", "4", "--pairs-per-question", "2", "--train-limit", "4",
        "--dev-limit", "2", "--heldout-limit", "2", "--max-new-tokens", "8", "--sft.grad-accum", "2",
        "--sft.learning-rate", "1e-3", "--max-steps", "2", "--vote-samples", "3", *extra,
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
        "iter_002/sample", "iter_002/pairs", "iter_002/train", "iter_002/eval_dev", "iter_002/eval_dev_maj",
        "iter_002/eval_heldout", "iter_002/summary",
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
        # maj@3 on the 2 dev questions: 3 samples each, one vote per question, its interval over n = 2.
        maj = state["phases"][f"{name}/eval_dev_maj"]["result"]
        votes = rows_of(out / name / "eval_dev_maj.jsonl")
        assert maj["n"] == 2 and maj["samples_per_question"] == 3 and len(votes) == 6
        assert sum(r["meta"]["majority_vote"] for r in votes) == maj["correct"] + maj["incorrect"]
        assert (maj["ci_low"], maj["ci_high"]) == pytest.approx(wilson_interval(maj["correct"], 2), abs=1e-6)
        assert summary["dev_maj_k"] == 3 and summary["dev_maj_accuracy"] == maj["accuracy"] and summary["dev_maj_n"] == 2
    # Iteration 2 samples from, starts from and is anchored to iteration 1's model.
    s2 = rows_of(out / "iter_002" / "samples.jsonl")
    assert all(r["meta"]["model"].endswith("iter_001/checkpoint") for r in s2)
    assert json.loads((out / "iter_002" / "checkpoint" / "training.json").read_text())["steps"] == 2
    assert "iter_000/eval_dev_maj" in state["phases"]  # the base model's maj@k too
    assert "dev maj@3, T=0.8 [95% CI]" in (out / "report.md").read_text()


def test_plain_dpo_ablation_and_config_errors(cli, tiny_model, data_dir):
    r = cli("train", "--method", "irpo", "--task", "gsm8k", "--model", str(tiny_model), "--nll-weight", "0", "--dry-run")
    assert r.exit_code == 0 and "nll_weight: 0.0" in r.stdout and "samples_per_question: 30" in r.stdout
    assert "nll_normalization: winner_tokens" in r.stdout and "vote_samples: 0" in r.stdout
    r = cli("train", "--method", "irpo", "--task", "gsm8k", "--nll-normalization", "tokens", "--dry-run")
    assert r.exit_code == 2 and "nll-normalization" in r.stderr.replace("_", "-")
    r = cli("train", "--method", "irpo", "--task", "gsm8k", "--vote-samples", "-1", "--dry-run")
    assert r.exit_code == 2 and "vote_samples" in r.stderr
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
