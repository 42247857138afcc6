"""Fine-tune-CoT end to end on the tiny model and real GSM8K rows: teacher, filter, student format,
training, evaluation, the teacher cache (counted from outside the method), resume after a kill.

The teacher is `tests/fixtures/answer_backend.py`: the hf backend's real samples from the tiny
model with a final answer appended that is right for about half the questions (the random tiny
model alone never is, so there would be nothing to distil).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ANSWER_BACKEND = REPO / "tests" / "fixtures" / "answer_backend.py"


def args(tiny_model: Path, data_dir: Path, answers: Path, counter: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--plugin", str(ANSWER_BACKEND), "train", "--method", "finetune-cot", "--task", "gsm8k",
        "--model", str(tiny_model), "--data-dir", str(data_dir), "--output-dir", str(out),
        "--teacher-backend", "answers", "--teacher-backend-options", f"answers={answers}",
        "--teacher-backend-options", f"count_file={counter}",
        "--samples-per-question", "2", "--train-limit", "6", "--dev-limit", "2", "--heldout-limit", "2",
        "--max-new-tokens", "12", "--answer-max-new-tokens", "6", "--student-max-new-tokens", "12",
        "--teacher-chunk", "4", "--max-steps", "2", "--sft.grad-accum", "2", "--sft.learning-rate", "1e-3",
        *extra,
    ]  # fmt: skip


def calls(counter: Path) -> int:
    """Generations the teacher was asked for (prompts x n), counted by the backend itself."""
    return sum(int(x) for x in counter.read_text().split()) if counter.exists() else 0


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture(scope="module")
def first_run(tiny_model, data_dir, gsm8k_answers, tmp_path_factory):
    """One uninterrupted run (in a subprocess, as a user runs it)."""
    tmp = tmp_path_factory.mktemp("ftcot")
    out, counter = tmp / "run", tmp / "calls.txt"
    proc = subprocess.run([sys.executable, "-m", "cotkit", *args(tiny_model, data_dir, gsm8k_answers, counter, out)],
                          capture_output=True, text=True, cwd=tmp, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, counter, proc


def test_end_to_end(first_run):
    out, counter, proc = first_run
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "complete"
    phases = list(state["phases"])
    assert phases == [
        "iter_000/eval_dev", "iter_000/eval_heldout", "iter_001/teacher", "iter_001/filter", "iter_001/train",
        "iter_001/eval_dev", "iter_001/eval_heldout", "iter_001/summary",
    ]  # fmt: skip
    teacher = state["phases"]["iter_001/teacher"]["result"]
    # 6 questions x D=2 rationales, each followed by one stage-2 answer request.
    assert teacher["n"] == 12 and teacher["questions"] == 6
    assert teacher["teacher_requests"] == 24 == calls(counter) and teacher["cache_hits"] == 0
    assert 0 < teacher["correct"] < 12  # the filter has something to keep and something to drop

    samples = rows(out / "iter_001" / "teacher_samples.jsonl")
    assert len(samples) == 12
    assert all(s["prompt"].startswith("Q: ") and s["prompt"].endswith("\nA: Let's think step by step.") for s in samples)
    assert all(s["completion"].startswith("Therefore, the answer is") for s in samples)

    train = rows(out / "iter_001" / "train.jsonl")
    kept = [s for s in samples if s["correct"]]
    assert len(train) == state["phases"]["iter_001/filter"]["result"]["train_examples"] == len(kept)
    for ex in train:  # the paper's student format
        assert ex["prompt"].endswith(" ###") and not ex["prompt"].startswith("Q:")
        assert ex["completion"].startswith(" ") and " --> " in ex["completion"] and ex["completion"].endswith(" END")
    assert (out / "iter_001" / "checkpoint" / "model.safetensors").exists()
    student = state["phases"]["iter_001/eval_dev"]["result"]
    assert student["n"] == 2 and student["style"] == "student-paper"
    evals = rows(out / "iter_001" / "eval_dev.jsonl")
    assert all(r["prompt"].endswith(" ###") for r in evals)
    # the paper's three metrics, per row and summed with n: correct, contains answer, correct format
    assert student["contains_answer_count"] == sum(r["contains_answer"] for r in evals)
    assert student["correct_format_count"] == sum(r["correct_format"] for r in evals) == sum(" --> " in r["completion"] for r in evals)
    assert student["correct"] <= student["contains_answer_count"]
    base = state["phases"]["iter_000/eval_heldout"]["result"]
    assert base["n"] == 2 and base["style"] == "zeroshot-cot" and "ci_low" in base
    assert base["correct_format_count"] == 2  # the stage-2 answer always follows its trigger
    summary = rows(out / "metrics.jsonl")[-1]
    assert summary["phase"] == "iter_001/summary" and summary["dev_n"] == summary["heldout_n"] == 2
    for key in ("accuracy", "contains_answer", "correct_format"):
        assert summary[f"heldout_{key}"] == state["phases"]["iter_001/eval_heldout"]["result"][key]
        assert summary[f"dev_{key}_ci_low" if key != "accuracy" else "dev_ci_low"] <= summary[f"dev_{key}"]
    report = (out / "report.md").read_text()
    final = state["phases"]["iter_001/eval_heldout"]["result"]
    assert "| contains answer [95% CI] | correct format [95% CI] |" in report
    assert f"{100 * final['contains_answer']:.1f}% [{100 * final['contains_answer_ci_low']:.1f}, " in report
    assert "finetune-cot" in (out / "config.yaml").read_text()


def test_second_run_reuses_the_teacher_cache(first_run, tiny_model, data_dir, gsm8k_answers, tmp_path):
    """Re-filtering and re-training against another run's cache asks the teacher nothing."""
    out, counter, _ = first_run
    before = calls(counter)
    out2 = tmp_path / "run2"
    cache = out / "teacher_cache.jsonl"
    size = cache.stat().st_size
    proc = subprocess.run(
        [sys.executable, "-m", "cotkit", *args(tiny_model, data_dir, gsm8k_answers, counter, out2,
         "--teacher-cache", str(cache), "--drop-truncated", "--no-dedup", "--no-baseline", "--no-final-eval",
         "--student-format", "chat")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert calls(counter) == before  # not one generation asked of the teacher
    state = json.loads((out2 / "state.json").read_text())
    teacher = state["phases"]["iter_001/teacher"]["result"]
    assert teacher["teacher_requests"] == 0 and teacher["cache_hits"] == 24
    assert cache.stat().st_size == size
    # Same teacher samples, filtered and formatted anew (chat format this time).
    assert [r["teacher_rationale"] for r in rows(out2 / "iter_001" / "teacher_samples.jsonl")] == [
        r["teacher_rationale"] for r in rows(out / "iter_001" / "teacher_samples.jsonl")
    ]
    train = rows(out2 / "iter_001" / "train.jsonl")
    assert train and all(isinstance(ex["prompt"], list) and "Therefore, the answer is" in ex["completion"] for ex in train)
    assert "iter_000/eval_dev" not in state["phases"]


def test_resume_after_kill_between_phases(first_run, tiny_model, data_dir, gsm8k_answers, tmp_path):
    """Killed right after filtering: --resume skips the teacher and ends with the uninterrupted run's results."""
    out_ref, _, _ = first_run
    out, counter = tmp_path / "run", tmp_path / "calls.txt"
    cmd = [sys.executable, "-m", "cotkit", *args(tiny_model, data_dir, gsm8k_answers, counter, out)]
    env = {**os.environ, "COTKIT_FAULT_AFTER_PHASE": "iter_001/filter"}
    killed = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = json.loads((out / "state.json").read_text())
    assert list(state["phases"])[-1] == "iter_001/filter" and not (out / "iter_001" / "checkpoint").exists()
    asked = calls(counter)
    assert asked == 24

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert calls(counter) == asked  # the teacher phase was not run again
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "complete"
    assert (out / "iter_001/train.jsonl").read_text() == (out_ref / "iter_001/train.jsonl").read_text()
    for name in ("iter_001/eval_dev.jsonl", "iter_001/eval_heldout.jsonl", "iter_000/eval_dev.jsonl"):
        got = [(r["completion"], r["verdict"]) for r in rows(out / name)]
        assert got == [(r["completion"], r["verdict"]) for r in rows(out_ref / name)], name  # model paths differ
    ref_state = json.loads((out_ref / "state.json").read_text())
    assert state["phases"]["iter_001/train"]["result"]["final_loss"] == ref_state["phases"]["iter_001/train"]["result"]["final_loss"]


def test_cache_survives_a_torn_line(tmp_path):
    from cotkit import TeacherCache

    path = tmp_path / "cache.jsonl"
    cache = TeacherCache(path)
    cache.add([{"key": "a", "text": "x"}, {"key": "b", "text": "y"}])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": "c", "te')  # a kill in the middle of a write
    again = TeacherCache(path)
    assert again.get("a")["text"] == "x" and again.get("b")["text"] == "y" and again.get("c") is None


def test_student_answers_are_read_after_the_arrow(data_dir):
    """exact_match reads the student's `--> X END` answer (GSM8K number, BBH option and yes/no)."""
    from cotkit.harness.verify import make_verifier, verify_samples
    from cotkit.plugins import host
    from cotkit.types import Sample
    from cotkit_plugins.methods.finetune_cot import StudentTask, student_completion

    for name in ("gsm8k", "bbh:date_understanding", "bbh:sports_understanding"):
        task = host().task(name, data_dir=data_dir)
        ex = task.examples(task.heldout_split)[0]
        right = student_completion("The answer is 7, no wait. Let me count again.", task.answer_text(ex), "paper")
        student = StudentTask(task, "paper")
        cut = right.removesuffix(" END")  # what generation returns when it stops at END
        verifier = make_verifier(None, task)
        verdicts = verify_samples([Sample(ex, cut, stop=student.stop_sequences()), Sample(ex, right, stop=student.stop_sequences())], verifier)
        assert [v.status.value for v in verdicts] == ["correct", "correct"], (name, right, verdicts)
        assert student.prompt(ex) == f"{task.question_text(ex)} ###"


def test_config_errors(cli, tiny_model):
    r = cli("train", "--method", "finetune-cot", "--task", "gsm8k", "--model", str(tiny_model), "--samples-per-question", "4",
            "--temperature", "0", "--dry-run")  # fmt: skip
    assert r.exit_code == 2 and "temperature" in r.stderr
    r = cli("train", "--method", "finetune-cot", "--task", "gsm8k", "--teacher-endpoint", "http://127.0.0.1:9/v1", "--dry-run")
    assert r.exit_code == 2 and "--teacher-model" in r.stderr
    r = cli("train", "--method", "finetune-cot", "--task", "gsm8k", "--student-format", "t5", "--dry-run")
    assert r.exit_code == 2 and "paper" in r.stderr


def test_stage2_triggers(data_dir):
    """Zero-shot-CoT's typed answer triggers by answer kind; `plain` is the bare one."""
    from cotkit.plugins import host
    from cotkit_plugins.methods.finetune_cot import stage2_trigger

    def first(name):
        task = host().task(name, data_dir=data_dir)
        return task.examples(task.heldout_split)[0]

    assert stage2_trigger(first("gsm8k"), "typed") == "\nTherefore, the answer (arabic numerals) is"
    assert stage2_trigger(first("bbh:date_understanding"), "typed") == "\nTherefore, among A through F, the answer is"
    assert stage2_trigger(first("bbh:sports_understanding"), "typed") == "\nTherefore, the answer (yes or no) is"
    assert stage2_trigger(first("bbh:dyck_languages"), "typed") == stage2_trigger(first("gsm8k")) == "\nTherefore, the answer is"


def test_defaults_are_the_reference_code_s():
    """Plain stage-2 trigger with up to 128 tokens (oai/inference.py), AdamW weight decay 0.01 (torch's default there)."""
    from cotkit_plugins.methods.finetune_cot import FinetuneCoTConfig

    cfg = FinetuneCoTConfig()
    assert (cfg.answer_trigger, cfg.answer_max_new_tokens, cfg.max_new_tokens) == ("plain", 128, 128)
    assert (cfg.sft.weight_decay, cfg.sft.learning_rate, cfg.epochs, cfg.sft.batch_size * cfg.sft.grad_accum) == (0.01, 3e-4, 20.0, 8)


def test_rationale_whitespace_is_kept_as_the_reference_keeps_it():
    """The reference strips only the rationale's ends: line breaks inside stay in the student's target."""
    from cotkit_plugins.methods.finetune_cot import student_completion

    rationale = "  First, 48 / 2 = 24.\n\nThen 48 + 24 = 72.  "
    assert student_completion(rationale, "72", "paper") == " First, 48 / 2 = 24.\n\nThen 48 + 24 = 72. --> 72 END"
    assert student_completion(rationale, "72", "chat") == "First, 48 / 2 = 24.\n\nThen 48 + 24 = 72.\nTherefore, the answer is 72."


def test_an_encoder_decoder_student_gets_the_paper_s_seq2seq_format(tiny_model, data_dir, tmp_path):
    """`{q}` -> `{rationale} --> {answer}` (no separator, no END: the end of sequence ends it), detected from the config."""
    from transformers import T5Config

    from cotkit.harness.verify import make_verifier, verify_samples
    from cotkit.plugins import host
    from cotkit.types import Sample
    from cotkit_plugins.methods.finetune_cot import SEQ2SEQ, StudentTask, student_completion, student_layout, student_prompt

    t5 = tmp_path / "t5"
    T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=1, d_kv=8, vocab_size=32).save_pretrained(t5)
    assert student_layout("paper", str(t5)) == SEQ2SEQ
    assert student_layout("paper", str(tiny_model)) == "paper" and student_layout("chat", str(t5)) == "chat"
    assert student_layout("paper", str(tmp_path / "missing")) == "paper"  # no transformers config: a decoder
    task = host().task("gsm8k", data_dir=data_dir)
    ex = task.examples(task.heldout_split)[0]
    assert student_prompt(task, ex, SEQ2SEQ) == task.question_text(ex)
    target = student_completion(" Half of 48 is 24.\n", task.answer_text(ex), SEQ2SEQ)
    assert target == f"Half of 48 is 24. --> {task.answer_text(ex)}"
    student = StudentTask(task, SEQ2SEQ)
    assert student.stop_sequences() == [] and student.prompt(ex) == task.question_text(ex)
    verifier = make_verifier(None, task)
    assert verify_samples([Sample(ex, target)], verifier)[0].correct
    verifier.close()


def test_contains_answer_and_correct_format_read_as_the_reference_s_evaluator(data_dir):
    """After the cue: the first candidate is the answer (correct), any candidate may hold it (contains answer);
    without the cue the whole completion is searched and the format is wrong."""
    from cotkit.plugins import host
    from cotkit_plugins.methods.finetune_cot import answer_cue, format_checks

    gsm8k = host().task("gsm8k", data_dir=data_dir)
    ex = gsm8k.examples(gsm8k.heldout_split)[0]
    gold = ex.answer.replace(",", "")
    cue = answer_cue("paper")
    assert format_checks(ex, f" So 3 + 4. --> {gold} END", cue, ["END"]) == {"contains_answer": True, "correct_format": True}
    assert format_checks(ex, f" So 3. --> 1 or {gold}", cue, []) == {"contains_answer": True, "correct_format": True}
    assert format_checks(ex, f" It is {gold}. --> 1", cue, []) == {"contains_answer": False, "correct_format": True}
    assert format_checks(ex, f" It is {gold}, I think", cue, []) == {"contains_answer": True, "correct_format": False}
    bbh = host().task("bbh:date_understanding", data_dir=data_dir)
    mc = bbh.examples(bbh.heldout_split)[0]
    label = bbh.answer_text(mc).strip("()")
    other = next(c.label for c in mc.choices if c.label != label)
    assert format_checks(mc, f" x --> ({other}) or ({label})", cue, [])["contains_answer"]
    assert not format_checks(mc, f" x --> ({other})", cue, [])["contains_answer"]
    sports = host().task("bbh:sports_understanding", data_dir=data_dir)
    yn = sports.examples(sports.heldout_split)[0]
    wrong = "no" if yn.answer.lower() == "yes" else "yes"
    chat = answer_cue("chat")
    assert format_checks(yn, f"Hmm.\nTherefore, the answer is {yn.answer}.", chat, []) == {"contains_answer": True, "correct_format": True}
    assert format_checks(yn, f"Therefore, the answer is {wrong}.", chat, [])["contains_answer"] is False
