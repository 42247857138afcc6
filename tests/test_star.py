"""STaR end to end on the tiny model with real BBH data, and its training-set rules."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_thread")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_steps_grow_twenty_percent_per_iteration():
    from cotkit_plugins.methods.star import StarConfig, steps_at

    cfg = StarConfig()
    assert [steps_at(cfg, i) for i in (1, 2, 3, 4)] == [40, 48, 57, 69]  # int() as the reference code


def test_star_end_to_end(cli, data_dir, formatted_model, star_args, star_task, tmp_path, host):
    out = tmp_path / "run"
    r = cli("--data-dir", data_dir, *star_args(formatted_model, out))
    assert r.exit_code == 0, r.stderr
    assert "held-out accuracy per iteration" in r.stdout and "heldout accuracy, after iteration 2" in r.stdout

    for name in ("config.yaml", "manifest.json", "state.json", "metrics.jsonl", "report.md", "accuracy.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
    task = host.task(star_task, data_dir=data_dir)
    fit = {e.id: e for e in task.examples("fit")}

    # iteration 1: every fit question sampled once, rows in `cotkit score` format
    samples = rows(out / "iter_001" / "samples.jsonl")
    assert len(samples) == 12
    assert {"input", "target", "completion", "verdict", "correct", "extracted", "prompt", "id"} <= set(samples[0])
    failed = [s["id"] for s in samples if not s["correct"]]
    rationalized = rows(out / "iter_001" / "rationalized.jsonl")
    assert sorted(r["id"] for r in rationalized) == sorted(failed)  # only the failures get a hint
    assert all(r["hint"] and "Hint:" in r["prompt"] for r in rationalized)

    # the training set: correct samples and rationalizations, stored with the hint-free prompt
    train = rows(out / "iter_001" / "train.jsonl")
    kept = [s for s in samples if s["correct"]] + [r for r in rationalized if r["correct"]]
    assert len(train) == len({(k["id"], k["completion"]) for k in kept}) > 0
    log = rows(out / "iter_001" / "train_log.jsonl")  # every method's fine-tuning logs each optimizer step
    assert [r["step"] for r in log] == [1, 2] and all({"loss", "lr", "nll_per_token"} <= set(r) for r in log)
    for t in train:
        ex = fit[t["meta"]["id"]]
        assert t["prompt"] == task.prompt(ex, "zeroshot", hint=False)
        assert "Hint" not in t["prompt"]

    # fine-tuned from the base model with growing steps; checkpoints are plain HF folders
    state = json.loads((out / "state.json").read_text())["phases"]
    assert state["iter_001/train"]["result"]["steps"] == 2 and state["iter_002/train"]["result"]["steps"] == 3
    for it in (1, 2):
        assert (out / f"iter_{it:03d}" / "checkpoint" / "model.safetensors").exists()
        assert not (out / f"iter_{it:03d}" / "train_state").exists()
    assert rows(out / "iter_002" / "samples.jsonl")[0]["meta"]["model"] == "iter_001/checkpoint"

    # the funnel, one row per iteration, and dev accuracy for iteration 0 (base) to 2
    metrics = rows(out / "metrics.jsonl")
    funnel = [m for m in metrics if m["phase"].endswith("/summary")]
    assert [f["iteration"] for f in funnel] == [1, 2]
    for f in funnel:
        assert f["questions"] == 12 and f["samples"] == 12
        assert f["correct"] + f["rationalized"] <= 12
        assert f["train_examples"] > 0 and f["train_tokens"] > f["train_examples"]
        assert {"unparseable", "seconds_sample", "seconds_rationalize", "seconds_train", "seconds_eval_dev"} <= set(f)
    dev = [m for m in metrics if m["phase"].endswith("/eval_dev")]
    assert [d["iteration"] for d in dev] == [0, 1, 2] and all(d["n"] == 6 for d in dev)
    held = [m for m in metrics if m["phase"].endswith("/eval_heldout")]
    assert [h["iteration"] for h in held] == [0, 2] and all(0 <= h["ci_low"] <= h["accuracy"] <= h["ci_high"] <= 1 for h in held)
    report = (out / "report.md").read_text()
    assert "| 2 |" in report and "accuracy.png" in report and "base model" in report

    # one ruler: `cotkit score` on the saved samples gives the verdicts the run used
    r = cli("--data-dir", data_dir, "score", "--task", star_task, "--input", out / "iter_001" / "samples.jsonl", "--json")
    assert json.loads(r.stdout)["n"] == 12
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(sum(s["correct"] for s in samples) / 12)


def test_star_variants_rft_without_rationalization(cli, data_dir, formatted_model, star_args, tmp_path):
    out = tmp_path / "rft"
    args = star_args(formatted_model, out) + [
        "--iterations", "1", "--no-rationalize", "--samples-per-question", "3", "--temperature", "1.0",
        "--init", "last", "--no-final-eval", "--max-per-question", "2",
    ]
    r = cli("--data-dir", data_dir, *args)
    assert r.exit_code == 0, r.stderr
    assert not (out / "iter_001" / "rationalized.jsonl").exists()
    samples = rows(out / "iter_001" / "samples.jsonl")
    assert len(samples) == 36 and {s["meta"]["sample_index"] for s in samples} == {0, 1, 2}
    train = rows(out / "iter_001" / "train.jsonl")
    per_q: dict[str, set] = {}
    for t in train:
        per_q.setdefault(t["meta"]["id"], set()).add(t["completion"])
    assert all(len(v) <= 2 for v in per_q.values())
    assert len(train) == sum(len(v) for v in per_q.values())  # no duplicate rationale for a question
    phases = json.loads((out / "state.json").read_text())["phases"]
    assert "iter_001/rationalize" not in phases and "iter_000/eval_heldout" not in phases


@pytest.mark.parametrize(("style", "context", "stored"), [("zeroshot", "question", "zeroshot"), ("fewshot", "question", "bare"), ("fewshot", "prompt", "fewshot")])
def test_training_set_rules(data_dir, tiny_model, star_task, tmp_path, host, style, context, stored):
    """Dedup, the per-question cap, truncated samples dropped, text after the answer trimmed, hint-free prompts.

    Sampled with few-shot prompts, examples are stored without the exemplars (`Q: ...\\nA:`, the
    reference code's --no_prompt); `--context prompt` keeps them (its --few_shot_train).
    """
    from cotkit.config import build
    from cotkit_plugins.methods.star import Star, StarConfig

    task = host.task(star_task, data_dir=data_dir)
    ex, ex2 = task.examples("fit")[:2]
    answer = task.answer_sentence(ex)
    d = tmp_path / "iter"
    d.mkdir()

    def row(completion, correct=True, finish="stop", example=ex):
        return {"id": example.id, "completion": completion, "correct": correct, "meta": {"finish_reason": finish}}

    sample_rows = [
        row(f" Because. {answer} Q: next question"),
        row(f" Because.  {answer}"),  # the same rationale up to whitespace once trimmed
        row(f" Another reason. {answer}"),
        row(" wrong", correct=False),
        row(f" Cut off, it is {ex.answer} and so on and", finish="length"),  # ran out of tokens: dropped
        row(f" Ran on. the answer is: {ex.answer}\n\nA: blah blah", finish="length"),  # complete once trimmed
        row(f" A fourth reason. {answer}"),  # over the cap of 3
    ]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sample_rows))
    (d / "rationalized.jsonl").write_text(json.dumps(row(f" With hint. {task.answer_sentence(ex2)}", example=ex2)) + "\n")
    ctx = SimpleNamespace(options=build(StarConfig, {"style": style, "context": context, "max_per_question": 3}), task=task, base_model=str(tiny_model))
    got = Star().build_train_set(ctx, d, {ex.id: ex, ex2.id: ex2})
    train = rows(d / "train.jsonl")
    assert [t["completion"] for t in train] == [
        f" Because. {answer}", f" Another reason. {answer}", f" Ran on. the answer is: {ex.answer}",
        f" With hint. {task.answer_sentence(ex2)}",
    ]
    assert [t["meta"]["source"] for t in train] == ["correct"] * 3 + ["rationalized"]
    assert got["duplicates"] == 1 and got["dropped_truncated"] == 1 and got["over_cap"] == 1
    assert got["kept_correct"] == 3 and got["kept_rationalized"] == 1 and got["train_examples"] == 4
    assert got["train_questions"] == 2
    by_id = {ex.id: ex, ex2.id: ex2}
    assert all(t["prompt"] == task.prompt(by_id[t["meta"]["id"]], stored, hint=False) for t in train)


def test_a_soft_prompt_started_from_the_few_shot_demonstrations(cli, data_dir, formatted_model, star_args, star_task, tmp_path, host):
    """--soft-prompt-init fewshot (STaR on TRICE's parameterization): the prompt starts as the exemplars, one virtual token per token."""
    from transformers import AutoTokenizer

    from plugins.methods.star import StarConfig, StarSFTConfig, training_sft

    task = host.task(star_task, data_dir=data_dir)
    cfg = StarConfig(soft_prompt_init="fewshot", sft=StarSFTConfig(soft_prompt=True, packing=False))
    sft = training_sft(cfg, task, str(formatted_model))
    fewshot, bare = (task.prompt(task.examples(task.train_split)[0], style) for style in ("fewshot", "bare"))
    assert sft.soft_prompt_init_text + bare == fewshot and sft.soft_prompt_init_text.count("\nQ: ") >= 2
    assert sft.soft_prompt_tokens == len(AutoTokenizer.from_pretrained(formatted_model)(sft.soft_prompt_init_text)["input_ids"]) > 50
    assert training_sft(StarConfig(), task, str(formatted_model)) == StarConfig().sft

    r = cli("--data-dir", data_dir, *star_args(formatted_model, tmp_path / "bad"), "--soft-prompt-init", "fewshot")
    assert r.exit_code == 2 and "soft_prompt_init=fewshot needs sft.soft_prompt, --style fewshot and --context question" in r.stderr
