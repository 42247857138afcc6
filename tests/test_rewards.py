"""cotkit.rewards: verifiers and step scorers called as TRL calls its `reward_funcs`, on real task data.

The calls below pass what GRPOTrainer passes (prompts, completions plain or as chat messages, the
dataset's other columns as per-completion lists, trainer_state, log_metric); test_grpo.py runs
the rewards inside GRPOTrainer itself.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import cotkit
from cotkit import (
    ConfigError,
    DataError,
    StepScorerReward,
    VerifierReward,
    load_task,
    make_step_scorer,
    make_verifier,
    reward_rows,
)


@pytest.fixture(scope="module")
def gsm8k(data_dir):
    task = load_task("gsm8k", data_dir=str(data_dir))
    return task, task.examples("fit", limit=3)


def trl_call(reward, rows, completions, **extra):
    """Call `reward` as GRPOTrainer does: every column but the prompt as a list, one entry per completion."""
    columns = {key: [r[key] for r in rows] for key in rows[0] if key != "prompt"}
    return reward(prompts=[r["prompt"] for r in rows], completions=completions, completion_ids=[[1]] * len(rows), **columns, **extra)


def test_reward_rows_hold_the_prompt_of_the_style_the_example_id_and_the_stops(gsm8k):
    task, examples = gsm8k
    rows = reward_rows(task, examples, "zeroshot")
    assert [r["example_id"] for r in rows] == [e.id for e in examples]
    assert rows[0]["prompt"] == task.prompt(examples[0], "zeroshot")
    assert rows[0]["stop"] == task.stop_sequences("zeroshot") and rows[0]["stop"]
    chat = reward_rows(task, examples, "chat")
    assert chat[0]["prompt"][-1]["role"] == "user"


def test_a_verifier_reward_scores_by_verdict_cuts_at_the_stops_and_logs_the_typed_verdicts(gsm8k, tmp_path):
    task, examples = gsm8k
    rows = reward_rows(task, examples, "zeroshot")
    gold = examples[0].answer
    completions = [
        f" 48 / 2 = 24. The answer is {gold}.\n\nQ: another question. The answer is 5.",  # right before the stop
        " I am not sure.",
        f" The answer is {int(gold) + 1}.",
    ]
    metrics: dict[str, float] = {}
    reward = VerifierReward(make_verifier(None, task), examples, values={"unparseable": -0.5}, log_path=tmp_path / "rewards.jsonl")
    with reward:
        got = trl_call(reward, rows, completions, trainer_state=SimpleNamespace(global_step=7), log_metric=metrics.__setitem__)
    assert got == [1.0, -0.5, 0.0]
    assert [v.status.value for v in reward.last] == ["correct", "unparseable", "incorrect"]
    assert reward.__name__ == "exact_match"  # TRL names the reward's metrics after it
    assert metrics["exact_match/correct"] == pytest.approx(1 / 3) and metrics["exact_match/error"] == 0.0
    logged = [json.loads(line) for line in (tmp_path / "rewards.jsonl").read_text().splitlines()]
    assert [(r["step"], r["example_id"], r["reward"], r["verdict"]) for r in logged] == [
        (7, examples[0].id, 1.0, "correct"),
        (7, examples[1].id, -0.5, "unparseable"),
        (7, examples[2].id, 0.0, "incorrect"),
    ]
    assert logged[2]["extracted"] == str(int(gold) + 1)


def test_chat_completions_are_read_as_their_assistant_text(gsm8k):
    task, examples = gsm8k
    rows = reward_rows(task, examples[:2], "chat")
    completions = [[{"role": "assistant", "content": f"So the answer is {examples[0].answer}."}], [{"role": "assistant", "content": [{"type": "text", "text": "The answer is 0."}]}]]
    with VerifierReward(make_verifier(None, task), examples) as reward:
        assert trl_call(reward, rows, completions) == [1.0, 0.0]
        assert reward.last[1].extracted == "0"


def test_rows_without_example_ids_or_with_unknown_ones_are_one_clear_error(gsm8k):
    task, examples = gsm8k
    with VerifierReward(make_verifier(None, task), examples) as reward:
        with pytest.raises(ConfigError, match="no `example_id` column"):
            reward(prompts=["q"], completions=["The answer is 1."])
        with pytest.raises(DataError, match="example_id 'gsm8k/train/999999' is not one of the 3 examples"):
            reward(prompts=["q"], completions=["The answer is 1."], example_id=["gsm8k/train/999999"])
    with pytest.raises(ConfigError, match="no verdict status 'wrong'"):
        VerifierReward(make_verifier(None, task), examples, values={"wrong": -1.0})


def test_a_step_scorer_reward_aggregates_the_step_scores(tmp_path):
    completions = ["3 + 4 = 7.\n2 * 2 = 5.\nThe answer is 5.", "1 + 1 = 2.\nThe answer is 2.", ""]
    with StepScorerReward(make_step_scorer("arith"), aggregate="min", log_path=tmp_path / "r.jsonl") as reward:
        got = reward(prompts=["q"] * 3, completions=completions)
    assert got == [0.0, 1.0, 0.0]  # a wrong calculation makes the minimum 0; no steps at all score 0
    assert reward.last[0] == [1.0, 0.0, 1.0]
    logged = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert logged[0]["step_scores"] == [1.0, 0.0, 1.0] and logged[0]["example_id"] is None
    with pytest.raises(ConfigError, match="aggregate must be one of"):
        StepScorerReward(make_step_scorer("arith"), aggregate="mean")


def test_the_program_verifier_runs_every_call_in_one_sandbox_pool_closed_at_the_end(require_bwrap, data_dir, monkeypatch):
    started, closed = [], []

    class CountedSandbox(cotkit.Sandbox):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

        def close(self):
            closed.append(self)
            super().close()

    monkeypatch.setattr(cotkit, "Sandbox", CountedSandbox)
    task = load_task("svamp", data_dir=str(data_dir))
    examples = task.examples(task.train_split, limit=2)
    rows = reward_rows(task, examples, "zeroshot")
    right = f"def solution():\n    return {examples[0].answer}\n"
    with VerifierReward(make_verifier("program", workers=1), examples) as reward:
        for _ in range(3):
            assert trl_call(reward, rows, [right, "def solution():\n    return 1 / 0\n"]) == [1.0, 0.0]
        assert len(started) == 1 and not closed
    assert closed == started


def test_a_resumed_reward_log_drops_the_steps_the_trainer_computes_again(gsm8k, tmp_path):
    task, examples = gsm8k
    rows = reward_rows(task, examples[:1], "zeroshot")
    log = tmp_path / "rewards.jsonl"
    with VerifierReward(make_verifier(None, task), examples, log_path=log) as reward:
        for step in range(3):
            trl_call(reward, rows, [" The answer is 1."], trainer_state=SimpleNamespace(global_step=step))
    log.write_text(log.read_text() + '{"step": 3, "rew')  # the kill tore the last line
    with VerifierReward(make_verifier(None, task), examples, log_path=log, resume_step=1) as reward:
        trl_call(reward, rows, [" The answer is 1."], trainer_state=SimpleNamespace(global_step=1))
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [0, 1]
