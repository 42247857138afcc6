"""Accuracy is correct / n over all rows, in `cotkit eval`, in-run evaluations and every report.

A file of 10 rows with 9 `error` verdicts is 10% (its one row correct) or 0%, never 100%; the
counts of `error`, `unparseable` and `timeout` verdicts stand beside the accuracy, and the
accuracy of parsed answers is a column of its own. (`cotkit score` is tested in test_score_cli.py.)
"""

from __future__ import annotations

import json

import pytest

from cotkit.harness.verify import summarize, wilson_interval
from cotkit.types import Status, Verdict

# A verifier whose comparison fails on every row but one: the `error` verdicts of a broken setup.
ERRS_BUT_ONE = '''
from cotkit import hookimpl
from cotkit.contracts import Verifier
from cotkit.types import Status, Verdict

FIRST_QUESTION = "Janet"  # GSM8K test row 0 (gold 18)


class ErrsButOneRight(Verifier):
    """Correct on the first GSM8K test question, `error` on every other one."""

    name = "errs_but_one_right"
    first = Status.CORRECT

    def verify(self, samples):
        return [
            Verdict(self.first, extracted="18", normalized="18", score=float(self.first is Status.CORRECT))
            if s.example.question.startswith(FIRST_QUESTION)
            else Verdict(Status.ERROR, reason="comparison failed")
            for s in samples
        ]


class ErrsButOneWrong(ErrsButOneRight):
    """Incorrect on the first GSM8K test question, `error` on every other one."""

    name = "errs_but_one_wrong"
    first = Status.INCORRECT


@hookimpl
def register_verifiers(register):
    register(ErrsButOneRight)
    register(ErrsButOneWrong)
'''


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "errs_but_one.py"
    path.write_text(ERRS_BUT_ONE, encoding="utf-8")
    return path


def test_summarize_counts_every_row():
    verdicts = [Verdict(Status.CORRECT, extracted="18", normalized="18")] + [Verdict(Status.ERROR, reason="x")] * 9
    s = summarize(verdicts)
    assert (s["n"], s["correct"], s["errors"], s["accuracy"]) == (10, 1, 9, 0.1)
    assert (s["ci_low"], s["ci_high"]) == wilson_interval(1, 10)
    assert s["accuracy_parsed"] == 1.0 and s["top_answer_share"] == 0.1 and s["top_answer_count"] == 1
    mixed = [Verdict(Status.CORRECT), Verdict(Status.INCORRECT, extracted="3"), Verdict(Status.UNPARSEABLE), Verdict(Status.TIMEOUT)]
    s = summarize(mixed)
    assert (s["accuracy"], s["accuracy_parsed"], s["unparseable"], s["unparseable_count"], s["timeouts"]) == (0.25, 0.5, 0.25, 1, 1)
    assert summarize([])["accuracy"] == 0.0 and summarize([])["accuracy_parsed"] is None


@pytest.mark.parametrize("verifier, correct", [("errs_but_one_right", 1), ("errs_but_one_wrong", 0)])
def test_cotkit_eval_counts_error_rows(cli, plugin, tiny_model, data_dir, tmp_path, verifier, correct):
    out = tmp_path / "eval"
    args = ["--plugin", plugin, "--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", tiny_model, "--limit", "10",
            "--max-new-tokens", "4", "--verifier", verifier, "--output-dir", out]  # fmt: skip
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["n"], summary["errors"], summary["unparseable_count"], summary["timeouts"]) == (10, 9, 0, 0)
    assert summary["accuracy"] == pytest.approx(correct / 10)
    assert summary["accuracy_parsed"] == correct
    results = json.loads((out / "results.json").read_text())
    assert results["cotkit"]["errors"] == 9
    if correct:
        table = cli(*args).stdout
        for header in ("accuracy", "accuracy of parsed answers", "unparseable", "timeouts", "errors"):
            assert header in table
        (line,) = [ln for ln in table.splitlines() if ln.startswith("│ gsm8k")]
        cells = [c.strip() for c in line.strip("│").split("│")]
        # n, accuracy, its 95% interval over all 10 rows, stderr, then the counts beside them
        assert cells[1:4] == ["10", "10.0%", "[1.8, 40.4]"] and cells[5:] == ["100.0%", "0 (0.0%)", "0", "9"]


@pytest.mark.parametrize("verifier, correct", [("errs_but_one_right", 1), ("errs_but_one_wrong", 0)])
def test_in_run_evaluation_and_report_count_error_rows(host, plugin, tiny_model, data_dir, tmp_path, verifier, correct):
    """`evaluate` (every method's dev and held-out evaluation) and report.md."""
    from cotkit.contracts import SamplingParams
    from cotkit.harness.evaluate import evaluate
    from cotkit.models import load_backend
    from cotkit.run.report import write_report

    host.load_file(plugin)
    task = host.task("gsm8k", data_dir=data_dir)
    examples = task.examples("test", limit=10)
    backend = load_backend("hf", model=str(tiny_model))
    try:
        params = SamplingParams(max_new_tokens=4, stop=task.stop_sequences("fewshot"))
        summary = evaluate(task, examples, backend, host.get("verifier", verifier)(), params=params, progress=False)
    finally:
        backend.close()
    assert (summary["n"], summary["correct"], summary["errors"]) == (10, correct, 9)
    assert summary["accuracy"] == pytest.approx(correct / 10)
    low, high = wilson_interval(correct, 10)
    assert (summary["ci_low"], summary["ci_high"]) == (round(low, 6), round(high, 6))
    assert summary["accuracy_parsed"] == correct and summary["top_answer_share"] == pytest.approx(0.1)

    metrics = [{"phase": "iter_000/eval_dev", **summary}, {"phase": "iter_000/eval_heldout", "split": "test", **summary}]
    report = write_report(tmp_path, {"method": "star", "task": "gsm8k", "model": "tiny", "seed": 0}, metrics).read_text()
    shown = f"{10 * correct:.1f}% [{100 * low:.1f}, {100 * high:.1f}] (n=10)"
    assert f"| 0 | {shown} | {100 * correct:.1f}% | 0 | 0 | 9 | 18 (10% of all rows) |" in report
    assert f"| base model | test | {shown} | {100 * correct:.1f}% | 0 | 0 | 9 | 18 (10% of all rows) |" in report
    assert "| accuracy [95% CI] | accuracy of parsed answers | unparseable | timeouts | errors |" in report


def test_report_reads_summaries_recorded_before_errors_counted(tmp_path):
    """A run recorded its accuracy over the rows without errors (1 of 1 = 100%): the report says 10%."""
    from cotkit.run.report import write_report

    old = {"n": 10, "correct": 1, "accuracy": 1.0, "ci_low": 0.206549, "ci_high": 1.0, "unparseable": 0.0,
           "unparseable_count": 0, "timeouts": 0, "errors": 9, "accuracy_parsed": 1.0, "top_answer": "18",
           "top_answer_share": 1.0, "split": "test"}  # fmt: skip
    report = write_report(tmp_path, {"method": "star", "task": "gsm8k"}, [{"phase": "iter_000/eval_heldout", **old}]).read_text()
    low, high = wilson_interval(1, 10)
    assert f"| base model | test | 10.0% [{100 * low:.1f}, {100 * high:.1f}] (n=10) | 100.0% | 0 | 0 | 9 |" in report
    assert "100.0% [" not in report
