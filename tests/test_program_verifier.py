"""The `program` verifier: programs found in completions, run in the sandbox, compared with gold answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cotkit_plugins.verifiers.program import ProgramVerifier, extract_program

from cotkit.errors import ConfigError
from cotkit.harness.verify import verify_samples
from cotkit.sandbox import Outcome
from cotkit.sandbox import isolation as iso
from cotkit.types import AnswerKind, Example, Sample, Status

S = Status




@pytest.fixture(scope="module")
def verifier(require_bwrap):
    v = ProgramVerifier(cpu_seconds=0.5, wall_seconds=6, memory_mb=128, isolation="bwrap")
    yield v
    v.close()


def number(answer: str, id: str = "x") -> Example:
    return Example(id, "gsm8k", "How many?", answer, AnswerKind.NUMBER)


def verdicts(v: ProgramVerifier, gold: str, completions: list[str]) -> list:
    return v.verify([Sample(number(gold), c) for c in completions])


# ------------------------------------------------------------------------- finding the program


@pytest.mark.parametrize(
    "completion, program",
    [
        ("```python\ndef solution():\n    return 5\n```\nThe answer is 5.", "def solution():\n    return 5\n"),
        ("Here:\n```py\nx = 2\nprint(x)\n```", "x = 2\nprint(x)\n"),
        ("def solution():\n    a = 2\n    return a\n", "def solution():\n    a = 2\n    return a\n"),
        # the prompt ended with `def solution():`: the completion is the body
        ("    a = 2\n    b = a * 3\n    return b\n", "def solution():\n    a = 2\n    b = a * 3\n    return b\n"),
        ("total = 4 + 5\nprint(total)", "total = 4 + 5\nprint(total)\n"),
        ("# compute\nprint(3)", "# compute\nprint(3)\n"),
        ("import math\nprint(math.floor(2.5))", "import math\nprint(math.floor(2.5))\n"),
        # an unterminated fence (generation stopped) still counts
        ("```python\ndef solution():\n    return 7", "def solution():\n    return 7\n"),
        # several blocks: the one defining the entry, even if a later block only calls it
        ("```python\ndef solution():\n    return 1\n```\n```python\nprint(solution())\n```", "def solution():\n    return 1\n"),
        # indented inside a markdown list
        ("1. code:\n   ```python\n   def solution():\n       return 2\n   ```", "def solution():\n    return 2\n"),
    ],
)
def test_extract_program(completion, program):
    assert extract_program(completion) == program


@pytest.mark.parametrize(
    "completion",
    [
        "Natalia sold 48 clips in April. The answer is 72.",
        "",
        "   \n",
        "```json\n{\"answer\": 5}\n```",
        "The answer is (B).",
        "Let x = 5 be the number of apples.",
    ],
)
def test_no_program_found(completion):
    assert extract_program(completion) is None


def test_extraction_cuts_at_the_stop_sequence():
    completion = "def solution():\n    return 5\n\n\nQ: Next question\ndef solution():\n    return 6\n"
    assert extract_program(completion, ["\n\n\n"]) == "def solution():\n    return 5\n"


# ------------------------------------------------------------------------------ verdicts


def test_verdict_kinds(verifier):
    got = verdicts(
        verifier,
        "18",
        [
            "def solution():\n    eggs = 16 - 3 - 4\n    return eggs * 2\n",  # correct
            "def solution():\n    return 17\n",  # incorrect
            "def solution():\n    return 0.1 * 180\n",  # float within tolerance
            "x = 9 * 2\nprint(f'She makes ${x} a day.')\n",  # a script printing its answer
            "def solution():\n    return '$18.00'\n",  # a number as text
            "def solution():\n    return [18]\n",
            "She makes $18 a day.",  # no program
            "def solution():\n    return 18 / 0\n",
            "def solution():\n    while True:\n        pass\n",
            "def solution():\n    x = 18\n",  # returns nothing
            "print('eighteen-ish')",
            "def solution():\n    return True\n",
        ],
    )
    assert [v.status for v in got] == [
        S.CORRECT, S.INCORRECT, S.CORRECT, S.CORRECT, S.CORRECT, S.CORRECT,
        S.UNPARSEABLE, S.INCORRECT, S.TIMEOUT, S.INCORRECT, S.INCORRECT, S.INCORRECT,
    ]  # fmt: skip
    assert got[0].extracted == "18" and got[0].normalized == "18" and got[0].score == 1.0
    assert got[3].extracted == "She makes $18 a day."
    assert "ZeroDivisionError" in got[7].reason and "runtime_error" in got[7].reason
    assert "CPU time limit" in got[8].reason
    assert "returned None" in got[9].reason
    for v in got:
        if v.status is not S.UNPARSEABLE:
            assert "[isolation bwrap+seccomp]" in v.reason


def test_tolerance_options(require_bwrap):
    strict = ProgramVerifier(abs_tol=0, rel_tol=0, isolation="bwrap", cpu_seconds=0.5)
    try:
        got = verdicts(strict, "18", ["def solution():\n    return 18.0005\n", "def solution():\n    return 18.0\n"])
    finally:
        strict.close()
    assert [v.status for v in got] == [S.INCORRECT, S.CORRECT]


def test_fake_results_cannot_fool_the_comparison(verifier):
    got = verdicts(
        verifier,
        "3",
        [
            "class Eq:\n    def __eq__(self, o):\n        return True\ndef solution():\n    return Eq()\n",
            "class I(int):\n    def __eq__(self, o):\n        return True\ndef solution():\n    return I(4)\n",
            "def solution():\n    return float('nan')\n",
            "def solution():\n    return float('inf')\n",
            "def solution():\n    return 10**5000\n",
            "def solution():\n    return 3 + 10**200\n",
            "def solution():\n    return '\\udcff\\ud800'\n",
            "import os\nos.write(3, b'{\"status\": \"ok\", \"value\": 3, \"type\": \"int\"}')\nos._exit(0)\n",
        ],
    )
    assert [v.status for v in got[:7]] == [S.INCORRECT] * 7
    assert "not a number" in got[0].reason
    json.dumps([v.to_dict() for v in got], ensure_ascii=False).encode("utf-8")  # lone surrogates are gone
    # Writing the result channel directly is just another way for a program to state its answer.
    assert got[7].status is S.CORRECT


def test_identical_programs_run_once(verifier, monkeypatch):
    sandbox = verifier._get_sandbox()
    seen = []
    original = sandbox.run_many

    def spy(jobs, *a, **k):
        jobs = list(jobs)
        seen.append(len(jobs))
        return original(jobs, *a, **k)

    monkeypatch.setattr(sandbox, "run_many", spy)
    program = "def solution():\n    return 2\n"
    got = verifier.verify([Sample(number("2"), program)] * 5 + [Sample(number("3"), program)])
    assert seen == [1]
    assert [v.status for v in got] == [S.CORRECT] * 5 + [S.INCORRECT]


def test_check_returns_programs_and_results_for_self_refinement(verifier):
    checks = verifier.check([Sample(number("4"), "```python\ndef solution():\n    apples = 5\n    return apples - 2\n```")])
    c = checks[0]
    assert c.verdict.status is S.INCORRECT
    assert c.program == "def solution():\n    apples = 5\n    return apples - 2\n" and c.entry == "solution"
    assert c.result.outcome is Outcome.OK and c.result.value == 3


def test_bad_samples_are_errors(verifier):
    bad = [
        Sample(number(""), "def solution():\n    return 1\n"),
        Sample(number("not a number"), "def solution():\n    return 1\n"),
        Sample(number("1"), None),  # type: ignore[arg-type]
        "not a sample",
    ]
    got = verifier.verify(bad)  # type: ignore[arg-type]
    assert [v.status for v in got] == [S.ERROR] * 4
    assert "not a number" in got[1].reason


def test_a_failing_sandbox_gives_errors_never_incorrect(monkeypatch):
    from cotkit.sandbox import Result, Sandbox

    def broken(self, jobs, *a, **k):
        return [Result(Outcome.SANDBOX_ERROR, "bwrap+seccomp", error="worker died", attempts=3) for _ in jobs]

    monkeypatch.setattr(Sandbox, "run_many", broken)
    v = ProgramVerifier(isolation="bwrap")
    got = verdicts(v, "1", ["def solution():\n    return 1\n", "def solution():\n    return 2\n"])
    assert [x.status for x in got] == [S.ERROR, S.ERROR]
    assert "sandbox_error after 3 attempts" in got[0].reason


def test_a_sandbox_that_cannot_start_fails_the_batch_as_errors(monkeypatch):
    monkeypatch.setattr(iso, "find_bwrap", lambda: "/nonexistent/bwrap")
    v = ProgramVerifier(isolation="bwrap")
    samples = [Sample(number("1"), "def solution():\n    return 1\n")]
    try:
        got = verify_samples(samples, v)
    finally:
        v.close()
    assert got[0].status is S.ERROR and "cannot start" in got[0].reason


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timeout": 3}, "no option 'timeout'"),
        ({"entry": "not a name"}, "entry must be a Python name"),
        ({"cpu_seconds": "fast"}, "must be a number"),
        ({"workers": 0}, "at least 1"),
        ({"isolation": "vm"}, "isolation must be one of"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        ProgramVerifier(**options)


# ---------------------------------------------------------------------------- real task data


def gsm8k_programs(data_dir: Path, n: int) -> list[tuple[dict, str, str]]:
    """(row, correct program, wrong program) from the calculator annotations of GSM8K solutions."""
    out = []
    for line in (data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[: 3 * n]:
        row = json.loads(line)
        gold = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        calcs = re.findall(r"<<([^=<>]+)=([^<>]+)>>", row["answer"])
        if not calcs or calcs[-1][1].strip() != gold:
            continue
        expr = calcs[-1][0]
        right = f'```python\ndef solution():\n    """{row["question"][:60]}"""\n    result = {expr}\n    return result\n```'
        wrong = f"def solution():\n    return ({expr}) + 1\n"
        out.append((row, right, wrong))
        if len(out) == n:
            break
    return out


def test_gsm8k_rows_through_the_task(verifier, host, data_dir):
    task = host.task("gsm8k", data_dir=data_dir)
    cases = gsm8k_programs(data_dir, 12)
    samples = []
    for i, (row, right, wrong) in enumerate(cases):
        ex = task.example_from_row(row, i)
        samples += [Sample(ex, right), Sample(ex, wrong)]
    got = verifier.verify(samples)
    assert [v.status for v in got] == [S.CORRECT, S.INCORRECT] * len(cases)


def test_svamp_equations_as_programs(verifier, host, data_dir):
    """SVAMP's published equations, run as programs, reach its published (float) answers."""
    task = host.task("svamp", data_dir=data_dir)
    rows = [json.loads(line) for line in (data_dir / "svamp" / "test.jsonl").read_text().splitlines()[:30]]
    samples = [Sample(task.example_from_row(r, i), f"def solution():\n    return {r['Equation']}\n") for i, r in enumerate(rows)]
    assert [v.status for v in verifier.verify(samples)] == [S.CORRECT] * len(rows)


def test_math_answers_use_math_equiv(verifier):
    ex = Example("m", "math", "Simplify.", "\\frac{\\sqrt{2}}{2}", AnswerKind.MATH)
    half = Example("h", "math", "What is it?", "\\frac{1}{2}", AnswerKind.MATH)
    got = verifier.verify(
        [
            Sample(ex, "import sympy\ndef solution():\n    return sympy.sqrt(2) / 2\n"),  # sympy object -> LaTeX
            Sample(ex, "print('The answer is $\\\\frac{\\\\sqrt{2}}{2}$')\n"),
            Sample(ex, "def solution():\n    return 0.5\n"),
            Sample(half, "from fractions import Fraction\ndef solution():\n    return Fraction(2, 4)\n"),
            Sample(half, "def solution():\n    return 0.5\n"),
        ]
    )
    assert [v.status for v in got] == [S.CORRECT, S.CORRECT, S.INCORRECT, S.CORRECT, S.CORRECT]
    assert all(v.reason.startswith("math_equiv") and "[isolation bwrap" in v.reason for v in got)
    # sympy was preloaded in the workers: importing it costs a program next to nothing
    assert "sympy" in verifier.config.preload
    check = verifier.check([Sample(ex, "import sympy\ndef solution():\n    return sympy.sqrt(8) / 4\n")])[0]
    assert check.verdict.status is S.CORRECT and check.result.cpu_seconds < 0.2


def test_cotkit_score_with_the_program_verifier(require_bwrap, cli, data_dir, tmp_path):
    cases = gsm8k_programs(data_dir, 4)
    rows = [dict(row, completion=right if i % 2 == 0 else wrong) for i, (row, right, wrong) in enumerate(cases)]
    rows.append(dict(cases[0][0], completion="The answer is 5."))
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "--verifier", "program", "-i", src, "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["verifier"] == "program" and summary["n"] == 5 and summary["correct"] == 2
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["verdict"] for g in got] == ["correct", "incorrect", "correct", "incorrect", "unparseable"]
    assert "isolation bwrap" in got[0]["reason"] or "isolation process" in got[0]["reason"]
