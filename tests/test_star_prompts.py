"""STaR's prompt context and hints, checked against the reference code (ezelikman/STaR) on real rows.

The reference trains on `Q: ...\\nA:` + rationale and, run with --no_prompt, samples and evaluates
its fine-tuned models with that same context; only the base model gets the few-shot exemplars in
front. Its GSM8K hint appends ` (N)` to the question (gsm/prompts_answer_key.txt) and its
multiple-choice hint marks the correct option ` (CORRECT)` (device_inference.question_to_context).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotkit.errors import UnknownNameError

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
ANSWER_BACKEND = REPO / "tests" / "fixtures" / "answer_backend.py"

#: The first hinted question of the reference's gsm/prompts_answer_key.txt, character for character.
REFERENCE_GSM8K_HINT = (
    "Q: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? (72)\nA:"
)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gsm8k_inline_hint_is_the_reference_one(host, data_dir):
    task = host.task("gsm8k", data_dir=data_dir)
    natalia = task.examples("train", limit=1)[0]
    assert task.prompt(natalia, "bare", hint="inline") == REFERENCE_GSM8K_HINT
    assert task.prompt(natalia, "bare") == REFERENCE_GSM8K_HINT.replace(" (72)", "")
    assert task.prompt(natalia, "bare", hint=True) == task.prompt(natalia, "bare", hint="sentence")
    assert task.prompt(natalia, "bare", hint="sentence").endswith("May?\nHint: the answer is 72.\nA:")

    # a few-shot rationalization prompt hints its exemplars the same way, as prompts_answer_key.txt does
    fewshot = task.prompt(natalia, "fewshot", hint="inline")
    for ex in task.exemplars(natalia):
        assert f"Q: {ex.example.question} ({ex.example.answer})\nA:" in fewshot
    assert fewshot.endswith("\n\n" + REFERENCE_GSM8K_HINT) and "Hint:" not in fewshot
    chat = task.prompt(natalia, "chat", hint="inline")[-1]["content"]
    assert chat.startswith(f"{natalia.question} (72)\n\n") and "answer in parentheses after the question is the correct answer" in chat
    with pytest.raises(UnknownNameError, match="hint format"):
        task.prompt(natalia, "bare", hint="margin")


@pytest.mark.parametrize("fmt", ["inline", "sentence"])
def test_multiple_choice_hint_marks_the_correct_option_in_either_format(host, data_dir, fmt):
    arc = host.task("arc:challenge", data_dir=data_dir)
    ex = arc.examples("train", limit=1)[0]  # "George wants to warm his hands quickly ...", answer A
    assert arc.prompt(ex, "bare", hint=fmt) == (
        f"Q: {ex.question}\nOptions:\n(A) dry palms (CORRECT)\n(B) wet palms\n(C) palms covered with oil\n"
        "(D) palms covered with lotion\nA:"
    )
    bbh = host.task("bbh:date_understanding", data_dir=data_dir)
    q = bbh.examples("heldout", limit=1)[0]
    marked = bbh.prompt(q, "bare", hint=fmt)
    assert marked.count(" (CORRECT)") == 1 and f"({q.answer}) " in marked.split(" (CORRECT)")[0].splitlines()[-1]
    assert "Hint:" not in marked and marked.replace(" (CORRECT)", "") == bbh.prompt(q, "bare")


def test_yes_no_answers_are_hinted_inline_too(host, data_dir):
    bbh = host.task("bbh:sports_understanding", data_dir=data_dir)
    q = bbh.examples("heldout", limit=1)[0]
    assert bbh.prompt(q, "bare", hint="inline") == f"Q: {q.question} ({q.answer})\nA: Let's think step by step."


def test_prompt_styles_and_hint_format_per_model():
    from cotkit.config import build
    from cotkit_plugins.methods.star import StarConfig, hint_for, style_for

    default = build(StarConfig, {})
    assert (style_for(default, "base"), style_for(default, "iter_001/checkpoint"), hint_for(default)) == ("fewshot", "bare", "inline")
    keep = build(StarConfig, {"context": "prompt"})
    assert style_for(keep, "iter_001/checkpoint") == "fewshot"
    zeroshot = build(StarConfig, {"style": "zeroshot"})
    assert (style_for(zeroshot, "iter_003/checkpoint"), hint_for(zeroshot)) == ("zeroshot", "sentence")
    assert hint_for(build(StarConfig, {"hint_format": "sentence"})) == "sentence"


def test_default_run_trains_samples_and_evaluates_with_one_context(cli, tiny_model, data_dir, gsm8k_answers, host, tmp_path):
    """Under the defaults the stored training prompt is the prompt a fine-tuned model is sampled, hinted and evaluated with."""
    out = tmp_path / "run"
    r = cli(
        "--plugin", ANSWER_BACKEND, "--data-dir", data_dir, "train", "--method", "star", "--task", "gsm8k",
        "--model", tiny_model, "--output-dir", out, "--backend", "answers", "--backend-option", f"answers={gsm8k_answers}",
        "--iterations", "2", "--train-limit", "4", "--dev-limit", "2", "--no-final-eval", "--max-new-tokens", "8",
        "--steps", "1", "--sft.grad-accum", "2",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr[-2000:]
    task = host.task("gsm8k", data_dir=data_dir)
    fit = {e.id: e for e in task.examples("fit", limit=4)}
    dev = {e.question: e for e in task.examples("dev", limit=2)}

    # the base model: few-shot exemplars in front of the very question block training stores
    for s in rows(out / "iter_001" / "samples.jsonl"):
        assert s["prompt"] == task.prompt(fit[s["id"]], "fewshot")
        assert s["prompt"].endswith("\n\n" + task.prompt(fit[s["id"]], "bare"))
    for e in rows(out / "iter_000" / "eval_dev.jsonl"):
        assert e["prompt"] == task.prompt(dev[e["question"].strip()], "fewshot")

    train = rows(out / "iter_001" / "train.jsonl")
    assert train, "the answers backend gets about half the questions right"
    stored = {t["meta"]["id"]: t["prompt"] for t in train}
    for t in train:
        ex = fit[t["meta"]["id"]]
        assert t["prompt"] == task.prompt(ex, "bare") == f"Q: {ex.question}\nA:"  # the reference's context, no hint

    # the fine-tuned model is sampled, rationalized and evaluated with that same context
    assert rows(out / "iter_002" / "samples.jsonl")[0]["meta"]["model"] == "iter_001/checkpoint"
    resampled = {s["id"]: s["prompt"] for s in rows(out / "iter_002" / "samples.jsonl")}
    assert all(resampled[i] == stored[i] for i in stored)
    assert all(resampled[i] == task.prompt(fit[i], "bare") for i in resampled)
    rationalized = rows(out / "iter_002" / "rationalized.jsonl")
    assert rationalized
    for s in rationalized:
        ex = fit[s["id"]]
        assert s["prompt"] == f"Q: {ex.question} ({ex.answer})\nA:"  # the reference's hint on the same context
    for e in rows(out / "iter_001" / "eval_dev.jsonl"):
        assert e["prompt"] == task.prompt(dev[e["question"].strip()], "bare")

    # a hint never reaches a stored training example, in either iteration
    for it in (1, 2):
        for t in rows(out / f"iter_{it:03d}" / "train.jsonl"):
            assert t["prompt"] == task.prompt(fit[t["meta"]["id"]], "bare")
