"""cotkit reads back everything it writes: one JSONL reader, split on newlines only, strict UTF-8, BOM accepted,
lone surrogates escaped, and a bad line an error that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NO_MODEL = "/no/such/model"


def read_jsonl(path: Path) -> list:
    """The rows of a JSONL file, read independently of the code under test (strict UTF-8, newline-split)."""
    return [json.loads(line) for line in Path(path).read_bytes().decode("utf-8").split("\n") if line.strip()]


# Characters str.splitlines() treats as line breaks although JSON strings may hold them raw.
LINE_BREAKS_INSIDE_TEXT = "\u2028\u2029\x85\x1c\x1d\x1e\x0b\x0c"


def gsm8k_rows(data_dir: Path, n: int) -> list[dict]:
    return read_jsonl(data_dir / "gsm8k" / "test.jsonl")[:n]


def answer(row: dict) -> str:
    return row["answer"].rsplit("####", 1)[1].strip()


def score(cli, data_dir, *args):
    return cli("--data-dir", data_dir, "score", "--task", "gsm8k", *args)


def test_score_output_reads_back_row_for_row_with_unicode_line_breaks_and_lone_surrogates(cli, data_dir, tmp_path):
    rows = gsm8k_rows(data_dir, 3)
    completions = [
        f"Step one.{LINE_BREAKS_INSIDE_TEXT}The answer is {answer(rows[0])}.",
        f"The answer is {answer(rows[1])}. \ud800 (half of a pair, as a model's byte decoding can leave)",
        f"\udfff The answer is {answer(rows[2])}.",
    ]
    inputs = [{**row, "completion": c} for row, c in zip(rows, completions)]
    path = tmp_path / "in.jsonl"
    # Row 1 holds U+2028 and friends raw, as tools writing with ensure_ascii=False do; a lone
    # surrogate can only be in a UTF-8 file as a JSON escape, as rows 2 and 3 hold it.
    lines = [json.dumps(inputs[0], ensure_ascii=False)] + [json.dumps(r) for r in inputs[1:]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    first = score(cli, data_dir, "-i", path, "-o", out, "--json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["n"] == 3
    written = read_jsonl(out)
    assert [r["completion"] for r in written] == completions
    assert [r["verdict"] for r in written] == ["correct"] * 3
    again = score(cli, data_dir, "-i", out, "-o", tmp_path / "again.jsonl", "--json")  # re-score what it wrote
    assert again.exit_code == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["n"] == 3 and summary["errors"] == 0
    assert read_jsonl(tmp_path / "again.jsonl") == written


def test_a_utf8_bom_at_the_start_is_not_part_of_the_first_row(cli, data_dir, tmp_path):
    row = {**gsm8k_rows(data_dir, 1)[0], "completion": "The answer is 18."}
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")
    res = score(cli, data_dir, "-i", path, "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["n"] == 1 and summary["errors"] == 0 and summary["correct"] == 1


def test_bytes_that_are_not_utf8_are_an_error_naming_file_and_line(cli, data_dir, tmp_path):
    good = json.dumps({**gsm8k_rows(data_dir, 1)[0], "completion": "The answer is 18."}).encode()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good + b"\n" + good.replace(b"The answer", b"La r\xe9ponse") + b"\n")
    res = score(cli, data_dir, "-i", path, "--json")
    assert res.exit_code == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert f"{path}:2:" in lines[0] and "not UTF-8" in lines[0]


BAD_LINES = {
    "nested too deeply": lambda row: "[" * 100_000,
    "a number too long": lambda row: json.dumps({**row, "id": 0}).replace('"id": 0', '"id": ' + "7" * 5000),
}


@pytest.mark.parametrize("why", BAD_LINES)
def test_a_line_json_cannot_hold_is_an_error_for_that_row_only(cli, data_dir, tmp_path, why):
    """Nesting past the recursion limit, an integer past Python's 4300-digit limit: errors of their row."""
    rows = [{**row, "completion": f"The answer is {answer(row)}."} for row in gsm8k_rows(data_dir, 2)]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n" + BAD_LINES[why](rows[0]) + "\n" + json.dumps(rows[1]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    res = score(cli, data_dir, "-i", path, "-o", out, "--json")
    assert res.exit_code == 0, res.stderr
    written = read_jsonl(out)
    assert [r["verdict"] for r in written] == ["correct", "error", "correct"]
    assert written[1]["reason"].startswith(f"line 2: not valid JSON ({why}")


# ------------------------------------------------------------------------------ task data and run files


@pytest.fixture
def gsm8k_copy(data_dir, tmp_path):
    """A data folder whose gsm8k/test.jsonl the test writes."""
    folder = tmp_path / "data"
    (folder / "gsm8k").mkdir(parents=True)
    return folder, folder / "gsm8k" / "test.jsonl", gsm8k_rows(data_dir, 3)


def test_task_data_reader_keeps_rows_whole_and_accepts_a_bom(host, gsm8k_copy):
    folder, path, rows = gsm8k_copy
    rows[1] = {**rows[1], "question": rows[1]["question"] + "\u2028(see the\x85table)"}
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    examples = host.task("gsm8k", data_dir=folder).examples("test")
    assert [e.question for e in examples] == [r["question"] for r in rows]


def test_task_data_that_is_not_utf8_stops_before_the_model_loads(cli, gsm8k_copy):
    folder, path, rows = gsm8k_copy
    path.write_bytes(json.dumps(rows[0]).encode() + b"\n" + json.dumps(rows[1]).encode().replace(b"robe", b"r\xf6be") + b"\n")
    res = cli("--data-dir", folder, "sample", "--task", "gsm8k", "--model", NO_MODEL, "--limit", "1")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:2:" in lines[0] and NO_MODEL not in lines[0]


def test_run_files_read_back_exactly_what_was_written(tmp_path):
    from cotkit.jsonl import atomic_write_jsonl, read_jsonl

    rows = [{"completion": f"a{LINE_BREAKS_INSIDE_TEXT}b", "n": 1}, {"completion": "\ud83d alone", "nested": [[["x"]]]}, {"e": "é 😀"}]
    path = tmp_path / "iter_001" / "samples.jsonl"
    atomic_write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    text = path.read_text(encoding="utf-8")
    assert "\\ud83d" in text and "é 😀" in text  # the lone surrogate escaped, everything else left readable


def test_teacher_cache_survives_a_torn_line_and_a_lone_surrogate(tmp_path):
    from cotkit_plugins.methods.finetune_cot import TeacherCache

    path = tmp_path / "teacher_cache.jsonl"
    cache = TeacherCache(path)
    cache.add([{"key": "a", "text": "fine"}, {"key": "b", "text": "half \udc80 pair\u2028next"}])
    with open(path, "ab") as f:
        f.write('{"key": "c", "text": "cut in the middle of \u00e9'.encode()[:-1])  # a kill tore the last line mid-character
    reread = TeacherCache(path)
    assert reread.get("a") == {"key": "a", "text": "fine"}
    assert reread.get("b") == {"key": "b", "text": "half \udc80 pair\u2028next"}
    assert reread.get("c") is None
