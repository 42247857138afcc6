"""`cotkit score`: re-scoring saved completions in the publishers' row formats, bad rows, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

VERDICT_KEYS = {"verdict", "correct", "extracted"}


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def gsm8k_rows(data_dir: Path, n: int) -> list[dict]:
    lines = (data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line) for line in lines]


def gold(row: dict) -> str:
    return row["answer"].rsplit("####", 1)[1].strip()


def score(cli, data_dir, *args):
    return cli("--data-dir", data_dir, "score", *args)


def test_output_rows_are_the_input_rows_plus_verdicts_in_order(cli, data_dir, tmp_path):
    rows = gsm8k_rows(data_dir, 6)
    completions = [
        f"Let me compute. The answer is {gold(rows[0])}.",
        f"The answer is {int(gold(rows[1])) + 1}.",
        "I am not sure how to solve this.",
        f"So she pays ${gold(rows[3])}.00 in total.\n\nQ: A farmer has 17 cows.",  # last number, cut first
        rows[4]["answer"],  # the publisher's own solution, "#### N"
        f"\\boxed{{{gold(rows[5])}}}",
    ]
    inputs = [{**row, "completion": c, "id": i} for i, (row, c) in enumerate(zip(rows, completions))]
    out = tmp_path / "out.jsonl"
    r = score(cli, data_dir, "--task", "gsm8k", "--input", write_jsonl(tmp_path / "in.jsonl", inputs), "--output", out, "--json")
    assert r.exit_code == 0, r.stderr
    got = read_jsonl(out)
    assert len(got) == len(inputs)
    for inp, row in zip(inputs, got):
        assert VERDICT_KEYS <= set(row)
        assert {k: v for k, v in row.items() if k in inp} == inp  # every input field kept unchanged
        assert isinstance(row["verdict"], str) and isinstance(row["correct"], bool)
    assert [row["verdict"] for row in got] == ["correct", "incorrect", "unparseable", "correct", "correct", "correct"]
    assert [row["correct"] for row in got] == [True, False, False, True, True, True]
    assert got[0]["extracted"] == gold(rows[0]) and got[2]["extracted"] is None
    summary = json.loads(r.stdout)
    assert {"n", "accuracy", "unparseable", "errors"} <= set(summary)
    assert summary["n"] == 6 and summary["errors"] == 0
    assert summary["accuracy"] == pytest.approx(4 / 6) and summary["unparseable"] == pytest.approx(1 / 6)


def test_json_prints_one_object_and_nothing_else(cli, data_dir, tmp_path):
    row = {**gsm8k_rows(data_dir, 1)[0], "completion": "The answer is 18."}
    r = score(cli, data_dir, "--task", "gsm8k", "--input", write_jsonl(tmp_path / "in.jsonl", [row]), "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == {**json.loads(r.stdout), "n": 1, "accuracy": 1.0, "unparseable": 0.0, "errors": 0}
    assert len(r.stdout.strip().splitlines()) == 1


def test_table_summary_without_json(cli, data_dir, tmp_path):
    rows = [{**row, "completion": "The answer is 18."} for row in gsm8k_rows(data_dir, 2)]
    out = tmp_path / "out.jsonl"
    r = score(cli, data_dir, "--task", "gsm8k", "--input", write_jsonl(tmp_path / "in.jsonl", rows), "-o", out)
    assert r.exit_code == 0
    for word in ("n", "accuracy", "unparseable", "errors", "50.00%", "exact_match"):
        assert word in r.stdout
    assert f"wrote 2 rows to {out}" in r.stdout.replace("\n", "")


def test_malformed_rows_are_error_verdicts_counted_and_never_stop_the_run(cli, data_dir, tmp_path):
    good = {**gsm8k_rows(data_dir, 1)[0], "completion": "The answer is 18."}
    lines = [
        good,                                                   # line 1
        "{not json",                                            # line 2
        "",                                                     # line 3: blank, skipped
        [1, 2, 3],                                              # line 4: not an object
        {"question": "q", "answer": "#### 5"},                  # line 5: no completion
        {"question": "q", "answer": "#### 5", "completion": 5},  # line 6: completion not a string
        {"question": "q", "completion": "The answer is 5."},    # line 7: no gold field
        {"question": "q", "answer": "#### five", "completion": "The answer is 5."},  # line 8: gold not a number
        {"question": "q", "answer": "", "completion": "The answer is 5."},           # line 9: empty gold
        good,                                                   # line 10
    ]  # fmt: skip
    out = tmp_path / "out.jsonl"
    r = score(cli, data_dir, "--task", "gsm8k", "-i", write_jsonl(tmp_path / "in.jsonl", lines), "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    got = read_jsonl(out)
    assert len(got) == 9  # every non-blank line, in order
    assert got[0]["verdict"] == got[-1]["verdict"] == "correct"
    errors = got[1:-1]
    assert all(row["verdict"] == "error" and row["correct"] is False and row["extracted"] is None for row in errors)
    reasons = [row["reason"] for row in errors]
    assert reasons[0].startswith("line 2: not valid JSON")
    assert reasons[1] == "line 4: expected a JSON object"
    assert reasons[2] == "line 5: missing field 'completion'"
    assert reasons[3] == "line 6: field 'completion' must be a string, got int"
    assert reasons[4].startswith("line 7:") and "'answer'" in reasons[4]
    assert reasons[5].startswith("line 8:") and "five" in reasons[5]
    assert reasons[6].startswith("line 9:")
    assert got[1]["line"] == "{not json"  # an unreadable line is kept as text
    summary = json.loads(r.stdout)
    # every row counts: 2 correct of 9 rows, not 2 of the 2 rows without errors
    assert summary["n"] == 9 and summary["errors"] == 7 and summary["accuracy"] == pytest.approx(2 / 9)
    assert summary["accuracy_parsed"] == 1.0


def test_the_table_lists_why_rows_errored_most_common_first(cli, data_dir, tmp_path):
    rows = gsm8k_rows(data_dir, 12)
    lines = [{**rows[0], "completion": "The answer is 18."}, "{not json", *[dict(row) for row in rows[1:12]]]  # 12 errors
    r = score(cli, data_dir, "--task", "gsm8k", "-i", write_jsonl(tmp_path / "in.jsonl", lines), "-o", tmp_path / "out.jsonl")
    assert r.exit_code == 0, r.stderr
    listed = r.stdout.split("why 12 rows errored or timed out, most common first (every row is in --output):\n", 1)[1].splitlines()
    assert listed[0].strip() == "11 x error: missing field 'completion' (lines 3, 4, 5, 6, 7, 8, 9, 10, ...)"
    assert listed[1].strip().startswith("1 x error: not valid JSON") and listed[1].strip().endswith("(line 2)")


def ten_rows_nine_errors(data_dir: Path, first_completion: str) -> list[dict]:
    """Real GSM8K rows: the first scored with `first_completion`, nine that can only be `error` verdicts."""
    rows = gsm8k_rows(data_dir, 10)
    first = {**rows[0], "completion": first_completion}
    no_completion = [dict(row) for row in rows[1:4]]
    not_a_string = [{**row, "completion": 18} for row in rows[4:7]]
    gold_not_a_number = [{**row, "answer": "#### about ten", "completion": "The answer is 10."} for row in rows[7:10]]
    return [first, *no_completion, *not_a_string, *gold_not_a_number]


@pytest.mark.parametrize("first, correct", [("The answer is 18.", 1), ("The answer is 17.", 0)])
def test_accuracy_counts_every_row_errors_included(cli, data_dir, tmp_path, first, correct):
    """10 rows of which 9 are errors: 10% with the one correct answer, 0% without it, never 100%."""
    from cotkit.harness.verify import wilson_interval

    path = write_jsonl(tmp_path / "in.jsonl", ten_rows_nine_errors(data_dir, first))
    r = score(cli, data_dir, "--task", "gsm8k", "--input", path, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["n"], summary["correct"], summary["errors"]) == (10, correct, 9)
    assert summary["accuracy"] == pytest.approx(correct / 10)
    assert summary["accuracy_parsed"] == correct  # the one answer that was judged
    assert (summary["unparseable_count"], summary["timeouts"]) == (0, 0)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(wilson_interval(correct, 10))  # over n = 10
    assert summary["top_answer_share"] == pytest.approx(0.1)  # 1 answer of 10 rows, not 100% of the parsed ones

    table = score(cli, data_dir, "--task", "gsm8k", "--input", path).stdout
    for header in ("accuracy (correct / n)", "accuracy of parsed answers", "unparseable", "timeouts", "errors"):
        assert header in table
    (line,) = [ln for ln in table.splitlines() if ln.startswith("│ 10 │")]
    n, accuracy, _ci, parsed, unparseable, timeouts, errors, top = [c.strip() for c in line.strip("│").split("│")]
    assert accuracy == f"{10 * correct:.2f}%" and parsed == f"{100 * correct:.2f}%"
    assert (unparseable, timeouts, errors) == ("0 (0.00%)", "0", "9")  # the counts beside the accuracy


def test_rescoring_replaces_stale_verdict_fields(cli, data_dir, tmp_path):
    row = {**gsm8k_rows(data_dir, 1)[0], "completion": "The answer is 18.", "verdict": "incorrect",
           "correct": False, "extracted": "17", "normalized": "17", "reason": "old"}  # fmt: skip
    out = tmp_path / "out.jsonl"
    assert score(cli, data_dir, "--task", "gsm8k", "-i", write_jsonl(tmp_path / "in.jsonl", [row]), "-o", out).exit_code == 0
    (got,) = read_jsonl(out)
    assert (got["verdict"], got["correct"], got["extracted"], got["normalized"]) == ("correct", True, "18", "18")
    assert "reason" not in got


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_unreadable_input_exits_2_with_one_line(cli, data_dir, tmp_path, make):
    path = tmp_path / "nope.jsonl" if make == "missing" else tmp_path
    r = score(cli, data_dir, "--task", "gsm8k", "--input", path, "--json")
    assert r.exit_code == 2
    assert r.stdout == ""
    message = r.stderr.strip()
    assert len(message.splitlines()) == 1 and str(path) in message and "Traceback" not in message


def test_empty_input_scores_nothing(cli, data_dir, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    r = score(cli, data_dir, "--task", "gsm8k", "--input", path, "--json")
    got = json.loads(r.stdout)
    assert r.exit_code == 0 and got["n"] == 0 and got["accuracy"] is None and got["ci_low"] is None  # not "0%"
    r = score(cli, data_dir, "--task", "gsm8k", "--input", path)
    assert r.exit_code == 0 and "no rows to score" in r.stdout


def test_unknown_verifier_and_task_are_one_line_errors(cli, data_dir, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"question": "q", "answer": "#### 1", "completion": "1"}])
    r = score(cli, data_dir, "--task", "gsm8k", "--verifier", "exact_mach", "--input", path)
    assert r.exit_code == 2 and "exact_match" in r.stderr
    r = score(cli, data_dir, "--task", "gsm8kk", "--input", path)
    assert r.exit_code == 2 and "gsm8k" in r.stderr


def test_bbh_task_rows_in_the_publisher_format(cli, data_dir, tmp_path):
    examples = json.loads((data_dir / "bbh" / "data" / "date_understanding.json").read_text())["examples"][:4]
    other = {"(A)": "(B)"}
    rows = [
        {**examples[0], "completion": f"Let's see. So the answer is {examples[0]['target']}."},
        {**examples[1], "completion": f"So the answer is {other.get(examples[1]['target'], '(A)')}."},
        {**examples[2], "completion": "(A) 01/01/2000\n(B) 02/02/2000\n(C) 03/03/2000"},  # options listed, no cue
        {**examples[3], "completion": f"So the answer is {examples[3]['target']}.\n\nQ: Today is 9/9/1999. (A)"},
    ]
    out = tmp_path / "out.jsonl"
    r = score(cli, data_dir, "--task", "bbh:date_understanding", "-i", write_jsonl(tmp_path / "in.jsonl", rows), "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert [row["verdict"] for row in read_jsonl(out)] == ["correct", "incorrect", "unparseable", "correct"]


def test_bbh_group_scores_each_row_with_its_subtask(cli, data_dir, tmp_path):
    def first(name: str) -> dict:
        return json.loads((data_dir / "bbh" / "data" / f"{name}.json").read_text())["examples"][0]

    rows = [
        {"task": "bbh:boolean_expressions", **first("boolean_expressions"), "completion": "So the answer is True."},
        {"task": "bbh:dyck_languages", **first("dyck_languages"), "completion": f"So the answer is {first('dyck_languages')['target']}."},
        {"task": "bbh:object_counting", **first("object_counting"), "completion": f"So the answer is {first('object_counting')['target']}."},
        {"task": "bbh:no_such_task", "input": "x", "target": "y", "completion": "So the answer is y."},
    ]
    out = tmp_path / "out.jsonl"
    r = score(cli, data_dir, "--task", "bbh", "-i", write_jsonl(tmp_path / "in.jsonl", rows), "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    got = read_jsonl(out)
    expected_bool = "correct" if first("boolean_expressions")["target"] == "True" else "incorrect"
    assert [row["verdict"] for row in got] == [expected_bool, "correct", "correct", "error"]
    assert "no_such_task" in got[3]["reason"]


def test_arc_rows_with_choices(cli, data_dir, tmp_path):
    rows = [json.loads(line) for line in (data_dir / "arc" / "ARC-Challenge-test.jsonl").read_text().splitlines()[:3]]
    texts = [dict(zip(r["choices"]["label"], r["choices"]["text"])) for r in rows]
    inputs = [
        {**rows[0], "completion": f"The answer is ({rows[0]['answerKey']})."},
        {**rows[1], "completion": f"The answer is {texts[1][rows[1]['answerKey']]}."},  # the option text
        {**rows[2], "choices": "A, B, C", "completion": "The answer is (A)."},  # malformed choices
    ]
    out = tmp_path / "out.jsonl"
    r = score(cli, data_dir, "--task", "arc:challenge", "-i", write_jsonl(tmp_path / "in.jsonl", inputs), "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    got = read_jsonl(out)
    assert [row["verdict"] for row in got] == ["correct", "correct", "error"]
    assert "choices" in got[2]["reason"]


PLUGIN = '''
from cotkit import hookimpl
from cotkit.contracts import Task
from cotkit.types import AnswerKind, Example


class Fragile(Task):
    """A third-party task whose row parsing has a bug on odd rows."""

    name = "fragile"
    row_fields = ("q", "a")

    def example_from_row(self, row, index):
        return Example(str(index), "fragile", row["q"], row["a"]["value"], AnswerKind.NUMBER, raw=row)


@hookimpl
def register_tasks(register):
    register(Fragile)
'''


def test_a_task_plugin_crashing_on_a_row_gives_an_error_verdict(cli, data_dir, tmp_path):
    plugin = tmp_path / "fragile_plugin.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    rows = [
        {"q": "x", "a": 5, "completion": "The answer is 5."},
        {"q": "y", "a": {"value": "3"}, "completion": "The answer is 3."},
    ]
    out = tmp_path / "out.jsonl"
    r = cli("--plugin", plugin, "score", "--task", "fragile", "-i", write_jsonl(tmp_path / "in.jsonl", rows), "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    got = read_jsonl(out)
    assert [row["verdict"] for row in got] == ["error", "correct"]
    assert got[0]["reason"].startswith("line 1: cannot read the row (TypeError")
