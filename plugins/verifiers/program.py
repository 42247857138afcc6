"""`program`: run the Python program a completion holds (PAL / PaD style) in the sandbox and compare its result.

A completion may hold `def solution(): ... return result` (the function is called), or a script
that prints its answer (the last printed line is the answer), fenced in ```python or not, or just
the indented body of `def solution():` when the prompt ended with that line. The program runs in
`cotkit.sandbox` (bubblewrap namespaces where available; the isolation level is in every
verdict's reason), never in this process. Its result is compared in this process: numerically for
NUMBER tasks (GSM8K, SVAMP) with a float tolerance, with the `math_equiv` verifier for MATH.

Verdicts: `correct` / `incorrect` (a wrong result, or a program that crashed, ran out of memory,
printed too much or gave no result), `timeout` (over its CPU time), `unparseable` (no program
found), `error` (bad gold answer, or the sandbox itself failed even after retries; never
`incorrect`).
"""

from __future__ import annotations

import math
import re
import textwrap
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from cotkit import (
    AnswerKind,
    ConfigError,
    Example,
    Number,
    Sample,
    Status,
    Verdict,
    Verifier,
    cut_completion,
    digit_limit,
    format_number,
    last_number,
    normalize_label,
    normalize_text,
    option,
    parse_gold_number,
    parse_number,
)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_FENCE_LANGS = {"", "python", "py", "python3", "python2", "pycon", "ipython"}
# A line that can only be Python (used to tell an unfenced program from prose).
_CODE_LINE = re.compile(
    r"^(?:def\s+\w+\s*\(|class\s+\w+|import\s+\w|from\s+[\w.]+\s+import\s|print\s*\(|return\b|"
    r"(?:for|while|if|elif|with)\s.*:\s*(?:#.*)?$|else\s*:|try\s*:|#|@\w|"
    r"[A-Za-z_][\w.]*(?:\s*\[[^\]]*\])?(?:\s*,\s*[A-Za-z_]\w*)*\s*(?:[-+*/%]|//|\*\*)?=(?!=)\s*\S)"
)


@dataclass
class ProgramCheck:
    """What the verifier did with one sample: the program it ran, how it ran, and the verdict."""

    verdict: Verdict
    program: str | None = None
    entry: str | None = None
    #: The sandbox Result (None when no program was found).
    result: Any = None


@dataclass
class ProgramConfig:
    """Options of the `program` verifier."""

    entry: str | None = option(
        "solution", help="function to call after running the program; empty: the last printed line is the answer"
    )
    cpu_seconds: float = option(2.0, minimum=0.01, help="CPU time each program may use")
    wall_seconds: float | None = option(
        None, minimum=0.01, help="wall-clock backstop per program (default 5 + 5 x cpu_seconds)"
    )
    memory_mb: int = option(512, minimum=16, help="memory each program may allocate beyond the interpreter, in MiB")
    workers: int = option(2, minimum=1, help="sandbox workers running programs side by side")
    isolation: str | None = option(
        None, help="auto (bubblewrap, else a loud fallback), bwrap or process (default: $COTKIT_SANDBOX_ISOLATION or auto)"
    )
    abs_tol: float = option(1e-3, minimum=0.0, help="absolute tolerance for numeric answers (PAL's)")
    rel_tol: float = option(1e-6, minimum=0.0, help="relative tolerance for numeric answers")
    retries: int = option(2, minimum=0, help="times a program is re-run after a sandbox failure")
    preload: list[str] = option(
        default_factory=list, help="modules each sandbox worker imports once, comma-separated (sympy is added for MATH)"
    )

    def __post_init__(self) -> None:
        self.entry = self.entry or None
        if self.entry is not None and not self.entry.isidentifier():
            raise ConfigError(f"verifier program: entry must be a Python name, not {self.entry!r}")
        self.preload = [m.strip() for m in self.preload if m.strip()]
        if self.isolation is not None:
            from cotkit import requested_isolation

            requested_isolation(self.isolation)  # a bad name fails here, not at the first batch


class ProgramVerifier(Verifier):
    """Runs the completion's Python program in the sandbox and compares its result with the gold answer."""

    name = "program"
    description = "Run the completion's Python program (PAL/PaD) in the sandbox; compare its result"
    Config = ProgramConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._sandbox: Any = None
        self._math: Any = None
        self._lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------

    def verify(self, samples: list[Sample]) -> list[Verdict]:
        """One verdict per sample, in order; bad input gives `error`, never an exception."""
        return [c.verdict for c in self.check(samples)]

    def check(self, samples: list[Sample]) -> list[ProgramCheck]:
        """Like `verify`, with the program and the sandbox result of each sample (for PaD's self-refinement data).

        Each sample is judged on its own: a completion or program output that breaks a step here
        gets its own `error` verdict, and the other samples' verdicts stay what they would be without it.
        """
        checks: list[ProgramCheck | None] = [None] * len(samples)
        todo: dict[tuple[str, str | None], list[int]] = {}  # identical programs run once
        for i, sample in enumerate(samples):
            try:
                found = self._program_of(sample)
            except Exception as e:  # a bug this completion triggers costs this row only
                found = ProgramCheck(_failed_on_row("reading the program", e))
            if isinstance(found, ProgramCheck):
                checks[i] = found
            else:
                todo.setdefault(found, []).append(i)
        if todo:
            from cotkit import Job

            keys = list(todo)
            # MATH programs import sympy: once per worker instead of ~0.5 s of CPU per program
            wants_sympy = any(AnswerKind(samples[i].example.answer_kind) is AnswerKind.MATH for ids in todo.values() for i in ids)
            results = self._get_sandbox(wants_sympy).run_many([Job(code, entry) for code, entry in keys])
            math_jobs: list[tuple[int, str, str]] = []
            for (code, entry), result in zip(keys, results):
                for i in todo[(code, entry)]:
                    try:
                        verdict = self._judge(samples[i].example, result)
                        if verdict is None:  # a MATH answer: compared below, in one batch
                            math_jobs.append((i, _math_answer(result), f"[isolation {result.isolation}]"))
                    except Exception as e:  # what this program printed or returned costs this row only
                        verdict = _failed_on_row("judging the program's result", e)
                    checks[i] = ProgramCheck(verdict, code, entry, result)  # type: ignore[arg-type]
            if math_jobs:
                for (i, _, _), verdict in zip(math_jobs, self._compare_math(samples, math_jobs)):
                    checks[i].verdict = verdict  # type: ignore[union-attr]
        return [c if c is not None else ProgramCheck(Verdict(Status.ERROR, reason="not verified", score=0.0)) for c in checks]

    def _program_of(self, sample: Any) -> ProgramCheck | tuple[str, str | None]:
        """(program, entry function or None) to run, or the final check when there is nothing to run."""
        problem = _sample_problem(sample)
        if problem:
            return ProgramCheck(Verdict(Status.ERROR, reason=problem, score=0.0))
        program = extract_program(sample.completion, [s for s in (sample.stop or []) if isinstance(s, str)], self.config.entry)
        if program is None:
            return ProgramCheck(Verdict(Status.UNPARSEABLE, reason="no Python program found", score=0.0))
        return program, self.config.entry if self.config.entry and _defines(program, self.config.entry) else None

    def close(self) -> None:
        """Stop the sandbox workers and the math_equiv workers (a later call starts new ones)."""
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
                self._sandbox = None
            if self._math is not None:
                self._math.close()
                self._math = None

    # -- steps -------------------------------------------------------------------------------

    def _get_sandbox(self, sympy: bool = False) -> Any:
        from cotkit import Limits, Sandbox

        with self._lock:
            if sympy and "sympy" not in self.config.preload:
                self.config.preload.append("sympy")
                if self._sandbox is not None:  # started without it: start again with it
                    self._sandbox.close()
                    self._sandbox = None
            if self._sandbox is None:
                limits = Limits(cpu_seconds=self.config.cpu_seconds, wall_seconds=self.config.wall_seconds, memory_mb=self.config.memory_mb)
                self._sandbox = Sandbox(
                    workers=self.config.workers,
                    limits=limits,
                    isolation=self.config.isolation,
                    retries=self.config.retries,
                    preload=(*Sandbox.DEFAULT_PRELOAD, *self.config.preload),
                )
            return self._sandbox

    def _judge(self, example: Example, result: Any) -> Verdict | None:
        """The verdict from a sandbox result; None for a MATH answer still to compare."""
        from cotkit import Outcome

        where = f"[isolation {result.isolation}]"
        if result.outcome is Outcome.SANDBOX_ERROR:
            return Verdict(Status.ERROR, reason=f"sandbox_error after {result.attempts} attempts: {result.error} {where}", score=0.0)
        if result.outcome is Outcome.TIMEOUT:
            return Verdict(Status.TIMEOUT, reason=f"timeout: {result.error} {where}", score=0.0)
        if result.outcome is not Outcome.OK:
            return Verdict(Status.INCORRECT, reason=f"{result.outcome.value}: {result.error} {where}", score=0.0)
        answer = result.answer_text()
        if answer is None:
            return Verdict(Status.INCORRECT, reason=f"no_result: the program printed nothing and returned nothing {where}", score=0.0)
        kind = AnswerKind(example.answer_kind)
        if kind is AnswerKind.MATH:
            return None
        if kind is AnswerKind.NUMBER:
            return self._compare_number(example, result, answer, where)
        return _compare_text(example, answer, where)

    def _compare_number(self, example: Example, result: Any, answer: str, where: str) -> Verdict:
        gold = parse_gold_number(example.answer)
        if gold is None:
            return Verdict(Status.ERROR, reason=f"example {example.id}: gold answer {example.answer!r} is not a number", score=0.0)
        got, why = _as_number(result)
        if got is None:
            return Verdict(Status.INCORRECT, extracted=answer, reason=f"{why} {where}", score=0.0)
        ok = self._close(got, gold.value)
        return Verdict(
            Status.CORRECT if ok else Status.INCORRECT,
            extracted=answer,
            normalized=format_number(got),
            reason=f"ok: the program {'returned' if result.has_value else 'printed'} {answer[:80]} {where}",
            score=1.0 if ok else 0.0,
        )

    def _close(self, got: Fraction, gold: Fraction) -> bool:
        """Equal within abs_tol or rel_tol, computed exactly (huge integers cannot overflow)."""
        diff = abs(got - gold)
        return diff == 0 or diff <= Fraction(self.config.abs_tol) or diff <= Fraction(self.config.rel_tol) * abs(gold)

    def _compare_math(self, samples: list[Sample], jobs: list[tuple[int, str, str]]) -> list[Verdict]:
        """Compare program answers with MATH gold answers through the `math_equiv` verifier."""
        from cotkit import make_verifier

        with self._lock:
            if self._math is None:
                self._math = make_verifier("math_equiv")
        from cotkit import verify_samples

        boxed = [Sample(example=samples[i].example, completion=f"\\boxed{{{answer}}}") for i, answer, _ in jobs]
        out = []
        # verify_samples: should math_equiv fail on one answer, the other answers keep their verdicts
        for (_, answer, where), v in zip(jobs, verify_samples(boxed, self._math)):
            status = Status.INCORRECT if v.status is Status.UNPARSEABLE else v.status
            reason = f"math_equiv: {v.reason or status.value} {where}"
            out.append(Verdict(status, extracted=answer, normalized=v.normalized, reason=reason, score=1.0 if v.correct else 0.0))
        return out


# ------------------------------------------------------------------------------ programs


def extract_program(completion: str, stop: list[str] | tuple[str, ...] = (), entry: str | None = "solution") -> str | None:
    """The Python program a completion holds, or None (plain text only; nothing is compiled or run).

    Takes a ```python fenced block (the last one defining `entry` if several, else the last),
    else the completion itself when its first line is code. An indented body without its `def`
    (the prompt ended with `def solution():`) is wrapped in `def {entry}():`.
    """
    text = cut_completion(completion, stop)
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _CODE_FENCE_LANGS]
    blocks = [b for b in blocks if b.strip()]
    if blocks:
        defining = [b for b in blocks if entry and _defines(textwrap.dedent(b), entry)]
        code = (defining or blocks)[-1]
    elif "```" in text:
        return None  # fenced, but not Python
    else:
        code = text
        first = next((ln for ln in code.splitlines() if ln.strip()), "")
        if not _CODE_LINE.match(first.strip()):
            return None
    code = code.strip("\n").rstrip()
    if not code.strip():
        return None
    dedented = textwrap.dedent(code)
    if entry and not _defines(dedented, entry):
        first = next(ln for ln in code.splitlines() if ln.strip())
        if first[:1] in (" ", "\t") or re.search(r"^return\b", dedented, re.MULTILINE):
            return f"def {entry}():\n" + textwrap.indent(dedented, "    ") + "\n"
    return dedented + "\n"


def _defines(code: str, entry: str) -> bool:
    return re.search(rf"^def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE) is not None


# ------------------------------------------------------------------------------- answers


def _as_number(result: Any) -> tuple[Fraction | None, str]:
    """The program's answer as an exact number, or (None, why not)."""
    if not result.has_value:
        line = result.answer_text() or ""
        n = last_number(line)
        return _value_of(n) if n is not None else (None, f"no number in the printed answer {line[:80]!r}")
    value = result.value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None, f"returned a boolean ({value})"
    if isinstance(value, int):
        return Fraction(value), ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, f"returned {value}"
        return Fraction(repr(value)), ""  # the decimal it prints as: 18.0000001, not its binary value
    if isinstance(value, str) and result.value_type == "str":  # a string the program wrote: "$18.00"
        n = parse_number(value)
        return _value_of(n) if n is not None else (None, f"returned text that is not a number: {value[:80]!r}")
    if isinstance(value, str):  # another object as text: a Fraction's "3/4" counts, an object's repr does not
        n = parse_gold_number(value)
        return _value_of(n) if n is not None else (None, f"returned a {result.value_type}, not a number")
    return None, f"returned a {result.value_type or type(value).__name__}, not a number"


def _value_of(n: Number) -> tuple[Fraction | None, str]:
    """A number's exact value, or (None, why) for one too long to read as a value."""
    if n.value is None:
        return None, f"the answer has {n.digits} digits, more than the {digit_limit()} read as a number"
    return n.value, ""


def _failed_on_row(step: str, e: Exception) -> Verdict:
    return Verdict(Status.ERROR, reason=f"program verifier failed {step} of this row: {type(e).__name__}: {str(e)[:200]}", score=0.0)


def _math_answer(result: Any) -> str:
    """A MATH answer: the returned value (sympy objects arrive as LaTeX), or what the last printed line states."""
    text = result.answer_text() or ""
    if result.has_value:
        return text
    from cotkit import extract_math_answer

    found = extract_math_answer(text)
    return found.text if found is not None else text


def _compare_text(example: Example, answer: str, where: str) -> Verdict:
    """CHOICE and TEXT tasks: labels or normalized words."""
    if AnswerKind(example.answer_kind) is AnswerKind.CHOICE:
        ok = normalize_label(answer) == normalize_label(example.answer)
    else:
        ok = normalize_text(answer) == normalize_text(example.answer)
    return Verdict(Status.CORRECT if ok else Status.INCORRECT, extracted=answer, reason=f"ok {where}", score=1.0 if ok else 0.0)


def _sample_problem(sample: Any) -> str | None:
    if not isinstance(sample, Sample):
        return f"expected a Sample, got {type(sample).__name__}"
    if not isinstance(sample.completion, str):
        return f"completion is {type(sample.completion).__name__}, not a string"
    ex = sample.example
    if not isinstance(ex, Example):
        return f"sample has no Example (got {type(ex).__name__})"
    if not isinstance(ex.answer, str) or not ex.answer.strip():
        return f"example {ex.id}: gold answer is empty"
    try:
        AnswerKind(ex.answer_kind)
    except ValueError:
        return f"example {ex.id}: unknown answer kind {ex.answer_kind!r}"
    return None
