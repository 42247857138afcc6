"""PaD: prompt formats, the teacher-program filter and repair data, refinement triggers, an end-to-end
run on the tiny model with a scripted teacher, and resuming after a kill between phases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotkit.types import AnswerKind, Example, Sample

REPO = Path(__file__).resolve().parents[1]

# The first three questions of GSM8K's `fit` split (train rows 0-2), with gold answers 72, 10, 5.
NATALIA = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
WENG = "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"
BETTY = (
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her parents "
    "decided to give her $15 for that purpose, and her grandparents twice as much as her parents. How much more money "
    "does Betty need to buy the wallet?"
)
CORRECT_72 = 'def solution():\n    """Natalia sold clips."""\n    april = 48\n    may = april / 2\n    result = april + may\n    return result\n'
WRONG_24 = "def solution():\n    april = 48\n    may = april / 2\n    result = may\n    return result\n"
CRASH_72 = "def solution():\n    april = 48\n    may = aprl / 2\n    return april + may\n"
SAME_72 = "def solution():\n    april = 48  # clips in April\n    may = april / 2\n\n    result = april + may\n    return result\n"
BETTY_NO_RETURN = "def solution():\n    wallet = 100\n    has = wallet / 2\n    parents = 15\n    grandparents = parents * 2\n    result = wallet - has - parents - grandparents\n"
BETTY_FIXED = BETTY_NO_RETURN + "    return result\n"

# What the scripted teacher writes: 4 samples for Natalia (correct, wrong result, crash, the correct
# one again with a comment), 2 for Weng (correct, prose), 1 for Betty (no return) plus its repair.
TEACHER_PROGRAMS = {
    NATALIA: {"sample": [CORRECT_72 + "\n\n\n", WRONG_24, CRASH_72, SAME_72]},
    WENG: {"sample": ["def solution():\n    rate = 12 / 60\n    result = rate * 50\n    return result\n", "Weng earns 10 dollars."]},
    BETTY: {"sample": [BETTY_NO_RETURN], "repair": [BETTY_FIXED]},
}

SCRIPTED_TEACHER = '''
"""A teacher that replays programs written in advance, keyed by the question of the prompt."""
import json

from cotkit import hookimpl
from cotkit.contracts import Backend, Generation


class ScriptedTeacher(Backend):
    """Replays programs from a JSON file: {question: {"sample": [...], "repair": [...]}}."""

    name = "scripted"

    def __init__(self, model, programs=None, count_file=None, **options):
        super().__init__(model, **options)
        with open(programs, encoding="utf-8") as f:
            self.table = json.load(f)
        self.count_file = count_file

    def generate(self, prompts, params, progress=True, seeds=None):
        if self.count_file:  # generations asked, counted from outside the method
            with open(self.count_file, "a", encoding="utf-8") as f:
                f.write(f"{len(prompts) * params.n}\\n")
        out = []
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            kind = "repair" if text.rstrip().endswith("# corrected solution in Python:") else "sample"
            question = text.rsplit("Q: ", 1)[1].split("\\n\\n# solution in Python:", 1)[0]
            pool = self.table.get(question, {}).get(kind) or ["def solution():\\n    return missing\\n"]
            out.append([Generation(pool[j % len(pool)], 10, "stop") for j in range(params.n)])
        return out


@hookimpl
def register_backends(register):
    register(ScriptedTeacher)
'''


def pad_config(**overrides):
    from cotkit_plugins.methods.pad import PadConfig

    return PadConfig(**overrides)


@pytest.fixture(scope="module")
def verifier():
    from cotkit_plugins.verifiers.program import ProgramVerifier

    v = ProgramVerifier(cpu_seconds=0.5)
    yield v
    v.close()


def example(question: str = NATALIA, answer: str = "72", qid: str = "gsm8k/train/0") -> Example:
    return Example(qid, "gsm8k", question, answer, AnswerKind.NUMBER)


def checked(verifier, ex: Example, completions: list[str]):
    from cotkit_plugins.methods.pad_programs import STOPS

    samples = [Sample(example=ex, completion=c, stop=list(STOPS)) for c in completions]
    return samples, verifier.check(samples)


# ------------------------------------------------------------------------------ prompt formats


def test_student_and_repair_prompt_formats():
    from cotkit_plugins.methods.pad_programs import repair_prompt, student_prompt

    assert student_prompt("How many?") == "Q: How many?\n\n# solution in Python:\n\n\n"
    assert repair_prompt("How many?", "def solution():\n    return x\n\n", "it fails with NameError: name 'x' is not defined.") == (
        "Q: How many?\n\n# solution in Python:\n\n\n"
        "def solution():\n    return x\n\n\n"
        "# The solution above is wrong: it fails with NameError: name 'x' is not defined.\n"
        "# corrected solution in Python:\n\n\n"
    )


def test_pal_prompts_hold_the_requested_exemplars_and_end_where_the_program_starts():
    from cotkit_plugins.methods.pad_programs import (
        pal_chat_prompt,
        pal_prompt,
        student_prompt,
        teacher_repair_prompt,
    )

    text = pal_prompt("How many?", shots=2)
    assert text.count("def solution():") == 2 and text.startswith("Q: Olivia has $23.")
    assert text.endswith("\n\n\n\n\n" + student_prompt("How many?"))
    chat = pal_chat_prompt("How many?", shots=3)
    assert [m["role"] for m in chat] == ["user", "assistant"] * 3 + ["user"]
    assert chat[1]["content"].startswith("def solution():") and chat[-1]["content"].endswith("How many?")
    fix = teacher_repair_prompt("How many?", "def solution():\n    pass\n", "it returns no result")
    assert fix.count("# corrected solution in Python:") == 4  # three demonstrations and this case
    assert fix.endswith("# The solution above is wrong: it returns no result.\n# corrected solution in Python:\n\n\n")


def test_pal_exemplars_return_their_answers_and_repair_demos_say_what_the_sandbox_says(verifier):
    """The shipped prompt data is consistent: PAL programs are right, and each repair demonstration's
    feedback is exactly what cotkit writes for its wrong program (so a teacher sees real messages)."""
    from cotkit_plugins.methods.pad_programs import (
        describe_failure,
        program_demos,
        repair_demos,
        wrong_result_feedback,
    )

    for d in program_demos():
        _, (c,) = checked(verifier, example(d.question, _answer(d)), [d.program])
        assert c.verdict.correct, (d.question, c.verdict.reason)
    for d in repair_demos():
        ex = example(d.question, _answer(d))
        _, (bad, good) = checked(verifier, ex, [d.program, d.corrected])
        assert good.verdict.correct and not bad.verdict.correct
        shown, feedback = describe_failure(bad, AnswerKind.NUMBER, drop_docstring=False)
        assert (feedback or wrong_result_feedback(bad)) == d.feedback
        assert shown == d.program


def _answer(demo) -> str:
    from importlib.resources import files

    import yaml

    for name in ("programs.yaml", "repair.yaml"):
        for row in yaml.safe_load(files("cotkit_tasks").joinpath("pad", name).read_text()):
            if " ".join(row["question"].split()) == demo.question:
                return row["answer"]
    raise AssertionError(demo.question)


# ------------------------------------------------------------------------ filter and repair data


def test_teacher_programs_are_kept_only_when_their_result_is_right_and_failures_become_repair_data(verifier):
    from cotkit_plugins.methods.pad import program_row, training_items
    from cotkit_plugins.methods.pad_programs import clean_program, repair_prompt

    cfg = pad_config(refine_source="teacher")
    ex = example()
    samples, checks = checked(verifier, ex, [CORRECT_72, WRONG_24, CRASH_72, SAME_72])
    rows = [program_row(s, c, "teacher", cfg) for s, c in zip(samples, checks)]
    assert [r["correct"] for r in rows] == [True, False, False, True]
    assert [r["outcome"] for r in rows] == ["ok", "ok", "runtime_error", "ok"]
    assert "NameError" in rows[2]["error"]

    items, counts = training_items([(rows, [])], {ex.id: ex}, cfg)
    programs = [i for i in items if i.meta["kind"] == "program"]
    repairs = [i for i in items if i.meta["kind"] == "repair"]
    # the correct program is kept once (the commented copy has the same syntax tree), docstring dropped
    assert [p.completion for p in programs] == [clean_program(CORRECT_72)]
    assert '"""' not in programs[0].completion and programs[0].prompt == f"Q: {NATALIA}\n\n# solution in Python:\n\n\n"
    assert counts["kept"] == 1 and counts["duplicates"] == 1
    # the wrong-answer and the crashing programs are dropped as programs and turned into repair data
    assert len(repairs) == 2 and all(r.completion == clean_program(CORRECT_72) for r in repairs)
    assert repairs[0].prompt == repair_prompt(NATALIA, WRONG_24, "it returns 24, which is not the answer")
    assert repairs[1].prompt == repair_prompt(
        NATALIA, CRASH_72, "it fails at line 3 (may = aprl / 2) with NameError: name 'aprl' is not defined"
    )

    errors_only, _ = training_items([(rows, [])], {ex.id: ex}, pad_config(refine_source="teacher", repair_wrong_results=False))
    assert [i.meta["kind"] for i in errors_only] == ["program", "repair"]
    assert "NameError" in errors_only[1].prompt
    capped, _ = training_items([(rows, [])], {ex.id: ex}, pad_config(refine_source="teacher", repairs_per_question=1))
    assert [i.meta["kind"] for i in capped] == ["program", "repair"]
    plain, _ = training_items([(rows, [])], {ex.id: ex}, pad_config(refine_source="teacher", self_refine=False))
    assert [i.meta["kind"] for i in plain] == ["program"]
    # The paper's source is the student's own programs: the teacher's failures teach no repair then.
    assert pad_config().refine_source == "student"
    paper, _ = training_items([(rows, [])], {ex.id: ex}, pad_config())
    assert [i.meta["kind"] for i in paper] == ["program"]
    # A later round's sample is the last student's: its failures are the student's own.
    student_rows = [{**r, "sampler": "iter_001/checkpoint"} for r in rows]
    own, _ = training_items([(student_rows, [])], {ex.id: ex}, pad_config())
    assert [i.meta["kind"] for i in own] == ["program", "repair", "repair"]


def test_a_question_without_a_correct_program_gives_no_training_data_unless_a_repair_is_verified(verifier):
    from cotkit_plugins.methods.pad import program_row, training_items

    cfg = pad_config(refine_source="teacher")
    ex = example(BETTY, "5", "gsm8k/train/2")
    samples, checks = checked(verifier, ex, [BETTY_NO_RETURN])
    rows = [program_row(s, c, "teacher", cfg) for s, c in zip(samples, checks)]
    assert rows[0]["repair_feedback"] == "it returns no result (solution() returned None)"
    assert training_items([(rows, [])], {ex.id: ex}, cfg)[0] == []
    fixed_samples, fixed_checks = checked(verifier, ex, [BETTY_FIXED])
    repaired = program_row(fixed_samples[0], fixed_checks[0], "teacher", cfg)
    repaired.update({"wrong_program": rows[0]["repair_program"], "feedback": rows[0]["repair_feedback"]})
    items, counts = training_items([(rows, [repaired])], {ex.id: ex}, cfg)
    assert [i.meta["kind"] for i in items] == ["program", "repair"]
    assert counts["kept_repaired"] == 1 and items[1].completion == BETTY_FIXED
    assert "returns no result" in items[1].prompt and BETTY_NO_RETURN.rstrip() in items[1].prompt


def test_feedback_line_numbers_match_the_program_shown_without_its_docstring(verifier):
    from cotkit_plugins.methods.pad_programs import describe_failure

    code = 'def solution():\n    """A question\n    on two lines."""\n    a = 5\n    b = a / 0\n    return b\n'
    _, (check,) = checked(verifier, example(answer="1"), [code])
    shown, feedback = describe_failure(check, AnswerKind.NUMBER, drop_docstring=True)
    assert feedback == "it fails at line 3 (b = a / 0) with ZeroDivisionError: division by zero"
    assert shown.splitlines()[2].strip() == "b = a / 0"
    assert describe_failure(check, AnswerKind.NUMBER, drop_docstring=False)[1].startswith("it fails at line 5 ")


def test_program_keys_tolerate_text_that_does_not_parse():
    from cotkit_plugins.methods.pad_programs import clean_program, program_key

    assert program_key("def solution():\n    a = 1  # one\n    return a\n") == program_key("def solution():\n\n    a = 1\n    return a")
    for text in ("x = " + "(" * 5000 + ")" * 5000, "def solution(:\n", "x = " + "-" * 100000 + "1"):
        assert isinstance(program_key(text), str) and clean_program(text).endswith("\n")


def test_refinement_is_triggered_by_what_a_run_shows_never_by_the_gold_answer(verifier):
    from cotkit_plugins.methods.pad_programs import failure_feedback

    completions = [
        WRONG_24,  # runs and answers: a wrong answer cannot be noticed without the gold one
        CORRECT_72,
        CRASH_72,
        "def solution():\n    x = 1\n",
        "def solution():\n    return 'many'\n",
        "def solution():\n    while True:\n        pass\n",
        "I think the answer is 72.",
    ]
    _, checks = checked(verifier, example(), completions)
    got = [failure_feedback(c, AnswerKind.NUMBER) for c in checks]
    assert got[:2] == [None, None]
    assert got[2].startswith("it fails at line 3 (may = aprl / 2) with NameError")
    assert got[3] == "it returns no result (solution() returned None)"
    assert got[4] == "it returns 'many', which is not a number"
    assert got[5].startswith("it runs out of time")
    assert got[6] == "it is not a Python program"


def test_bad_options_are_refused_with_the_option_named():
    from cotkit.errors import ConfigError

    with pytest.raises(ConfigError, match="temperature"):
        pad_config(samples_per_question=4, temperature=0.0)
    with pytest.raises(ConfigError, match="shots"):
        pad_config(shots=9)
    with pytest.raises(ConfigError, match="repairs_per_question"):
        pad_config(repairs_per_question=-1)


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    (d / "scripted_teacher.py").write_text(SCRIPTED_TEACHER)
    (d / "programs.json").write_text(json.dumps(TEACHER_PROGRAMS))
    return d / "scripted_teacher.py", d / "programs.json"


def pad_argv(model: Path, out: Path, teacher_files, data_dir: Path, counter: Path | None = None) -> list[str]:
    """A small PaD run where every phase has work: 3 training questions, 1 round, 2 optimizer steps,
    repair examples from the teacher's failures and from the trained student's own."""
    plugin, programs = teacher_files
    return [
        "--plugin", str(plugin), "--data-dir", str(data_dir),
        "train", "--method", "pad", "--task", "gsm8k", "--model", str(model), "--output-dir", str(out),
        "--teacher-backend", "scripted", "--teacher-backend-options", f"programs={programs}", "--refine-source", "both",
        *(["--teacher-backend-options", f"count_file={counter}"] if counter else []),
        "--train-limit", "3", "--dev-limit", "1", "--heldout-limit", "2", "--shots", "1",
        "--max-new-tokens", "24", "--repair-unsolved", "--steps", "2", "--beam-width", "2", "--beam-expand", "2",
        "--sft.learning-rate", "1e-3", "--sft.warmup-steps", "0", "--sft.batch-size", "2", "--sft.grad-accum", "1",
        "--backend-option", "batch_size=8",
    ]  # fmt: skip


def run_cli(argv: list[str]) -> int:
    """`cotkit ARGV` in this process with built-in plugins only; the exit code."""
    from cotkit import plugins
    from cotkit.cli import state
    from cotkit.cli.main import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
        plugins.reset()
        state.options = state.GlobalOptions()
        try:
            main(argv)
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            plugins.reset()
    return 0


@pytest.fixture(scope="module")
def pad_run(tiny_model, data_dir, teacher_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("pad") / "run"
    assert run_cli(pad_argv(tiny_model, out, teacher_files, data_dir, counter=out.parent / "teacher_calls.txt")) == 0
    return out


def calls(counter: Path) -> int:
    """Generations the scripted teacher was asked for (prompts x n), counted by the backend itself."""
    return sum(int(x) for x in counter.read_text().split()) if counter.exists() else 0


def phases(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())["phases"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_end_to_end_run_records_every_phase_the_funnel_and_the_evaluations(pad_run):
    state = json.loads((pad_run / "state.json").read_text())
    assert state["status"] == "complete"
    done = state["phases"]
    expected = [
        "iter_000/eval_dev", "iter_000/eval_heldout", "iter_001/sample", "iter_001/repair", "iter_001/build",
        "iter_001/train", "iter_001/student_programs", "iter_001/refine_build", "iter_001/refine_train",
        "iter_001/eval_dev", "iter_001/eval_heldout", "iter_001/eval_heldout_refine",
        "iter_001/eval_heldout_stepverify", "iter_001/summary",
    ]  # fmt: skip
    assert list(done) == expected
    sample = done["iter_001/sample"]["result"]
    # 4 + 2 + 1 programs: 9 have a program (not the prose one), 5 ran, 4 correct (3 of Natalia, 1 of Weng)
    assert (sample["generated"], sample["programs"], sample["ran"], sample["correct"], sample["questions_correct"]) == (12, 10, 5, 4, 2)
    assert sample["unsolved_ids"] == ["gsm8k/train/2"]
    assert (sample["teacher_requests"], sample["cache_hits"]) == (12, 0) and calls(pad_run.parent / "teacher_calls.txt") == 13
    repair = done["iter_001/repair"]["result"]
    assert repair == {"attempts": 1, "repaired": 1, "questions_repaired": 1, "teacher_requests": 1, "cache_hits": 0}
    build = done["iter_001/build"]["result"]
    assert (build["kept"], build["kept_repaired"], build["duplicates"], build["repair_examples"]) == (3, 1, 2, 4)
    train_rows = rows(pad_run / "iter_001" / "train.jsonl")
    assert len(train_rows) == 7 == done["iter_001/train"]["result"]["examples"]
    assert done["iter_001/train"]["result"]["steps"] == 2 and (pad_run / "iter_001" / "checkpoint" / "config.json").exists()

    # Self-refinement from the trained student's own programs (the reference's extract_code_feedback.py):
    # it writes programs for the 3 training questions; the tiny random student writes no program, so every
    # one fails, and each of the 3 questions (all have a verified program now) gets repair examples whose
    # target is that verified program.
    own = done["iter_001/student_programs"]["result"]
    assert own["sampler"] == "student iter_001/checkpoint" and own["generated"] == 12 and "teacher_requests" not in own
    student_rows = rows(pad_run / "iter_001" / "student_samples.jsonl")
    assert all(r["sampler"] == "iter_001/checkpoint" and not r["correct"] and r["repair_feedback"] for r in student_rows)
    refine_rows = rows(pad_run / "iter_001" / "refine.jsonl")
    repairs = [r for r in refine_rows if r["meta"]["kind"] == "repair"]
    built_refine = done["iter_001/refine_build"]["result"]
    assert built_refine["student_repair_examples"] == len(repairs) > 0
    verified = {r["meta"]["id"]: r["completion"] for r in train_rows if r["meta"]["kind"] == "program"}
    assert {r["meta"]["id"] for r in repairs} == set(verified) == {"gsm8k/train/0", "gsm8k/train/1", "gsm8k/train/2"}
    for r in repairs:  # (question, the student's failed program, its feedback) -> the question's verified program
        assert r["completion"] == verified[r["meta"]["id"]]
        assert r["prompt"].startswith("Q: ") and "# The solution above is wrong: " in r["prompt"]
    assert len(refine_rows) == len(repairs) + len(verified)  # the round's programs ride along
    refined_train = done["iter_001/refine_train"]["result"]
    assert refined_train["checkpoint"] == "iter_001/refine/checkpoint" and (pad_run / "iter_001" / "refine" / "checkpoint" / "config.json").exists()

    base, plain = done["iter_000/eval_heldout"]["result"], done["iter_001/eval_heldout"]["result"]
    refined = done["iter_001/eval_heldout_refine"]["result"]
    stepwise = done["iter_001/eval_heldout_stepverify"]["result"]
    assert base["prompt"] == "pal" and plain["prompt"] == "student" == stepwise["prompt"]
    assert base["n"] == plain["n"] == refined["n"] == stepwise["n"] == 2
    assert "beam search (width 2, expand 2, scorer faithfulness)" in stepwise["decoding"]
    # the paper's beam score by default: summed log-probability + log faithfulness per line, per token
    assert (stepwise["step_scorer"], stepwise["beam_aggregate"], stepwise["beam_logprob_reduce"]) == ("faithfulness", "logsum", "sum")
    assert stepwise["beam_logprob_weight"] == 1.0 == stepwise["beam_length_penalty"]
    for r in rows(pad_run / "iter_001" / "eval_heldout_stepverify.jsonl"):
        # the completion is the best beam: its statements, each scored by its lines' faithfulness to the question
        assert "".join(r["search"]["steps"]) == r["completion"]
        assert len(r["search"]["step_scores"]) == len(r["search"]["steps"])
        assert all(0 < s <= 1 for s in r["search"]["step_scores"]) and "logprob" in r["search"]
        assert r["meta"]["model"] == "iter_001/refine/checkpoint"  # the self-refined student
    # the tiny random student writes no program: every answer goes through one refinement round
    assert refined["refined"] == 2 - plain["correct"]
    refine_rows = rows(pad_run / "iter_001" / "eval_heldout_refine.jsonl")
    for r in refine_rows:
        for step in r["refinements"]:
            assert step["prompt"].startswith(f"Q: {r['question']}\n\n# solution in Python:\n\n\n")
            assert step["prompt"].endswith(f"# The solution above is wrong: {step['feedback']}.\n# corrected solution in Python:\n\n\n")

    summary = rows(pad_run / "metrics.jsonl")[-1]
    assert summary["phase"] == "iter_001/summary"
    for key in ("generated", "ran", "correct", "kept", "repair_examples", "base_heldout_accuracy", "heldout_accuracy",
                "heldout_refine_accuracy", "heldout_stepverify_accuracy"):
        assert key in summary
    assert (summary["generated"], summary["ran"], summary["correct"], summary["kept"]) == (12, 5, 4, 3)
    assert (summary["teacher_requests"], summary["cache_hits"], summary["student_programs"]) == (13, 0, 12)
    assert summary["student_repair_examples"] == len(repairs) and summary["refine_steps"] == 2
    report = (pad_run / "report.md").read_text()
    assert "| after iteration 1, greedy + refinement (1 round(s)) | test |" in report
    assert "| after iteration 1, step-verified beam search (width 2, expand 2, scorer faithfulness) | test |" in report


def test_kill_between_phases_then_resume_gives_the_same_run(pad_run, tiny_model, data_dir, teacher_files, tmp_path):
    out = tmp_path / "run"
    argv = pad_argv(tiny_model, out, teacher_files, data_dir)
    env = {**os.environ, "COTKIT_FAULT_AFTER_PHASE": "iter_001/build", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    killed = subprocess.run([sys.executable, "-m", "cotkit", *argv], check=False, env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = json.loads((out / "state.json").read_text())
    assert state["running"] is None and list(state["phases"])[-1] == "iter_001/build"
    assert not (out / "iter_001" / "checkpoint").exists()
    samples_before = (out / "iter_001" / "samples.jsonl").read_bytes()

    assert run_cli([*argv, "--resume"]) == 0
    resumed = phases(out)
    assert list(resumed) == list(phases(pad_run))
    assert (out / "iter_001" / "samples.jsonl").read_bytes() == samples_before  # not sampled again
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["resumes"]) == 1 and manifest["resumes"][0]["completed_phases"] == 5
    # the resumed run is the uninterrupted one: same data, same training, same evaluations
    for name in ("train.jsonl", "eval_heldout.jsonl", "eval_heldout_refine.jsonl", "eval_heldout_stepverify.jsonl"):
        assert rows(out / "iter_001" / name) == rows(pad_run / "iter_001" / name), name
    for phase in ("iter_001/build", "iter_001/eval_heldout", "iter_001/eval_heldout_refine", "iter_001/eval_heldout_stepverify"):
        assert resumed[phase]["result"] == phases(pad_run)[phase]["result"], phase
    assert resumed["iter_001/train"]["result"]["final_loss"] == phases(pad_run)["iter_001/train"]["result"]["final_loss"]



def test_a_rerun_with_the_same_teacher_cache_asks_the_teacher_nothing(pad_run, tiny_model, data_dir, teacher_files, tmp_path):
    """A new run directory given the first run's cache file: programs and repairs come from the cache."""
    counter = tmp_path / "teacher_calls.txt"
    cache = pad_run / "teacher_cache.jsonl"
    size = cache.stat().st_size
    out = tmp_path / "run2"
    argv = pad_argv(tiny_model, out, teacher_files, data_dir, counter=counter)
    argv += ["--teacher-cache", str(cache), "--refine-source", "teacher", "--no-refine", "--no-step-verify", "--no-final-eval"]
    assert run_cli(argv) == 0
    assert calls(counter) == 0  # not one generation asked of the teacher
    done = phases(out)
    assert (done["iter_001/sample"]["result"]["teacher_requests"], done["iter_001/sample"]["result"]["cache_hits"]) == (0, 12)
    assert (done["iter_001/repair"]["result"]["teacher_requests"], done["iter_001/repair"]["result"]["cache_hits"]) == (0, 1)
    assert cache.stat().st_size == size and not (out / "teacher_cache.jsonl").exists()
    assert rows(out / "iter_001" / "samples.jsonl") == rows(pad_run / "iter_001" / "samples.jsonl")
    # a changed decoding setting misses the cache: the teacher is asked again
    assert run_cli([*argv[:-5], "--output-dir", str(tmp_path / "run3"), "--max-new-tokens", "25", "--no-refine",
                    "--no-step-verify", "--no-final-eval", "--steps", "1"]) == 0  # fmt: skip
    assert calls(counter) == 13
