"""Score a JSONL file of completions: malformed rows become `error` verdicts, never a crash."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cotkit.contracts import Task
from cotkit.errors import CotkitError, DataError
from cotkit.harness.verify import make_verifier, summarize, verify_samples
from cotkit.jsonl import loads_line, read_lines
from cotkit.outputs import save_jsonl
from cotkit.types import Sample, Status, Verdict


#: Fields `cotkit score` writes; stale copies in an input row (a re-scored run) are replaced.
VERDICT_FIELDS = ("verdict", "correct", "extracted", "normalized", "reason")


#: Distinct error and timeout reasons a summary lists, most common first (the output file holds every row's).
REASONS_SHOWN = 10


def parse_rows(task: Task, lines: list[str]) -> tuple[list[dict[str, Any]], list[Sample | Verdict], list[int]]:
    """For each non-blank line, its row, either a Sample to verify or an `error` Verdict saying what is wrong, and its line number.

    Reasons name the line's number in the file (blank lines count but produce no row).
    """
    rows: list[dict[str, Any]] = []
    items: list[Sample | Verdict] = []
    line_numbers: list[int] = []
    stop = task.stop_sequences("fewshot")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        line_numbers.append(lineno)
        where = f"line {lineno}"
        try:
            row = loads_line(line)
        except json.JSONDecodeError as e:
            rows.append({"line": line.rstrip("\n")})
            items.append(Verdict(Status.ERROR, reason=f"{where}: not valid JSON ({e.msg})"))
            continue
        if not isinstance(row, dict):
            rows.append({"line": line.rstrip("\n")})
            items.append(Verdict(Status.ERROR, reason=f"{where}: expected a JSON object"))
            continue
        row = {k: v for k, v in row.items() if k not in VERDICT_FIELDS}
        rows.append(row)
        completion = row.get("completion")
        if "completion" not in row:
            items.append(Verdict(Status.ERROR, reason=f"{where}: missing field 'completion'"))
            continue
        if not isinstance(completion, str):
            items.append(Verdict(Status.ERROR, reason=f"{where}: field 'completion' must be a string, got {type(completion).__name__}"))
            continue
        try:
            example = task.example_from_row(row, lineno - 1)
        except DataError as e:
            items.append(Verdict(Status.ERROR, reason=f"{where}: {e}"))
            continue
        except Exception as e:  # a task plugin's bug on an odd row must not stop the run
            items.append(Verdict(Status.ERROR, reason=f"{where}: cannot read the row ({type(e).__name__}: {e})"))
            continue
        items.append(Sample(example=example, completion=completion, stop=stop))
    return rows, items, line_numbers


def score_rows(task: Task, lines: list[str], verifier_name: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Output rows (input rows plus verdict fields, in input order) and a summary."""
    verifier = make_verifier(verifier_name, task)
    try:
        rows, items, line_numbers = parse_rows(task, lines)
        samples = [it for it in items if isinstance(it, Sample)]
        verify_samples(samples, verifier)
    finally:
        verifier.close()
    verdicts = [it.verdict if isinstance(it, Sample) else it for it in items]
    out_rows = []
    for row, verdict in zip(rows, verdicts):
        out_rows.append({**row, **verdict.to_dict()})
    summary = {"task": task.full_name, "verifier": verifier.name, **summarize(verdicts)}
    if not verdicts:  # no rows: no accuracy and no interval, rather than a 0% [0, 0] that reads as a result
        summary.update({"accuracy": None, "ci_low": None, "ci_high": None, "unparseable": None})
    summary["problems"] = problem_reasons(verdicts, line_numbers)
    return out_rows, summary


def problem_reasons(verdicts: list[Verdict], line_numbers: list[int]) -> list[dict[str, Any]]:
    """The most common reasons rows errored or timed out: [{reason, count, lines}], most common first."""
    groups: dict[str, list[int]] = {}
    for verdict, lineno in zip(verdicts, line_numbers):
        if verdict.status not in (Status.ERROR, Status.TIMEOUT):
            continue
        reason = re.sub(r"^line \d+: ", "", verdict.reason or "(no reason given)")
        groups.setdefault(f"{verdict.status.value}: {reason}", []).append(lineno)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))
    return [{"reason": reason, "count": len(lines), "lines": lines} for reason, lines in ranked[:REASONS_SHOWN]]


def score_file(task: Task, input_path: Path, verifier_name: str | None, output: Path | None) -> dict[str, Any]:
    """Score `input_path`; write output rows atomically if `output` is given; return the summary."""
    try:
        lines = read_lines(input_path)
    except OSError as e:
        raise CotkitError(f"--input {input_path}: cannot read ({e.strerror or e})") from e
    out_rows, summary = score_rows(task, lines, verifier_name)
    if output:
        save_jsonl(output, out_rows, "--output")
    return summary
