"""`math_equiv`: a MATH answer compared with the gold LaTeX answer, symbolically, under a hard time limit.

The caller's process does the cheap part: extract the answer (`extract_math_answer`),
normalize both sides, accept equal strings, compare plain numbers exactly and words as words.
Everything else goes to worker processes (`WorkerPool`) that parse LaTeX with
latex2sympy2_extended (a grammar, never `eval`) and compare with sympy; a comparison that runs
past `timeout` seconds is killed and reported as `timeout`, never as `incorrect`.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from cotkit import ConfigError, Sample, Status, Verdict, Verifier, option

#: Modules a worker imports before it takes tasks, so no time limit pays for imports.
_PRELOAD = ("sympy", "latex2sympy2_extended.latex2sympy2", "cotkit_plugins.verifiers.math_equiv")
_PARSER_DIST = "latex2sympy2_extended"


@dataclass
class MathEquivConfig:
    """Options of the `math_equiv` verifier."""

    timeout: float = option(
        5.0, minimum=0.01, help="seconds one symbolic comparison may take before its verdict is `timeout`"
    )
    workers: int = option(2, minimum=1, help="worker processes for symbolic comparison")
    memory_mb: int = option(2048, minimum=0, help="address-space limit of each worker in MiB; 0 for none")
    ordered_lists: str = option(
        "auto", help="auto (bare comma lists are ordered only when the question asks for an order), yes or no"
    )
    form_checks: bool = option(
        True, help="reject equivalent answers in a form the question rules out (common fraction, simplest radical form, ...)"
    )

    def __post_init__(self) -> None:
        self.ordered_lists = self.ordered_lists.lower()
        if self.ordered_lists not in ("auto", "yes", "no"):
            raise ConfigError(f"verifier math_equiv: ordered_lists must be auto, yes or no, not {self.ordered_lists!r}")


class MathEquiv(Verifier):
    """LaTeX-aware equivalence of MATH answers (sympy), with a hard per-answer time limit."""

    name = "math_equiv"
    description = "MATH answers compared symbolically (LaTeX normalization + sympy) under a hard time limit"
    Config = MathEquivConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._pool: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, tuple[Status, str]] = OrderedDict()

    # -- public ------------------------------------------------------------------------------

    def verify(self, samples: list[Sample]) -> list[Verdict]:
        """One verdict per sample, in order; bad input gives `error`, an overrun gives `timeout`."""
        verdicts: list[Verdict | None] = [None] * len(samples)
        jobs: dict[tuple, list[tuple[int, str, str]]] = {}
        for i, sample in enumerate(samples):
            try:
                got = self._prepare(sample)
            except Exception as e:  # a bug on one odd answer must not cost the batch
                got = Verdict(Status.ERROR, reason=f"math_equiv failed on this sample: {type(e).__name__}: {e}", score=0.0)
            if isinstance(got, Verdict):
                verdicts[i] = got
                continue
            key, extracted, normalized = got
            cached = self._cached(key)
            if cached is not None:
                verdicts[i] = _verdict(cached, extracted, normalized)
            else:
                jobs.setdefault(key, []).append((i, extracted, normalized))
        if jobs:
            for key, result in zip(jobs, self._compare_all(list(jobs))):
                if result[0] is not Status.ERROR:  # a timeout repeats: do not pay for it twice
                    self._remember(key, result)
                for i, extracted, normalized in jobs[key]:
                    verdicts[i] = _verdict(result, extracted, normalized)
        return [v if v is not None else Verdict(Status.ERROR, reason="not verified", score=0.0) for v in verdicts]

    def close(self) -> None:
        """Stop the worker processes (a later `verify` starts new ones)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()

    # -- steps -------------------------------------------------------------------------------

    def _prepare(self, sample: Any) -> Verdict | tuple[tuple, str, str]:
        """A final verdict decided without sympy, or (comparison key, extracted, normalized)."""
        from cotkit import extract_math_answer, form_problem, question_wants_order

        if not isinstance(sample, Sample):
            return Verdict(Status.ERROR, reason=f"expected a Sample, got {type(sample).__name__}", score=0.0)
        if not isinstance(sample.completion, str):
            return Verdict(Status.ERROR, reason=f"completion is {type(sample.completion).__name__}, not a string", score=0.0)
        gold = getattr(sample.example, "answer", None)
        if not isinstance(gold, str) or not gold.strip():
            return Verdict(Status.ERROR, reason=f"example {getattr(sample.example, 'id', '?')} has no gold answer", score=0.0)
        stop = [s for s in (sample.stop or []) if isinstance(s, str)]
        found = extract_math_answer(sample.completion, stop)
        if found is None:
            return Verdict(Status.UNPARSEABLE, reason="no answer found", score=0.0)
        try:
            gold_n = _normalize(gold)
        except RecursionError:
            return Verdict(Status.ERROR, reason=f"example {getattr(sample.example, 'id', '?')}: gold answer nested too deeply to read", score=0.0)
        try:
            pred_n = _normalize(found.text)
        except RecursionError:  # e.g. \frac inside \frac a thousand times: the model's answer, judged as such
            return Verdict(Status.INCORRECT, extracted=found.text, reason="the answer is nested too deeply to compare", score=0.0)
        if not pred_n:
            return Verdict(Status.UNPARSEABLE, extracted=found.text, reason=f"empty answer ({found.via})", score=0.0)
        if self.config.ordered_lists == "auto":
            ordered = question_wants_order(getattr(sample.example, "question", None))
        else:
            ordered = self.config.ordered_lists == "yes"
        if self.config.form_checks:
            why = form_problem(pred_n, gold_n, getattr(sample.example, "question", None), found.text, gold)
            if why:
                return _verdict((Status.INCORRECT, f"{why} (the question asks for a form)"), found.text, pred_n)
        quick = _quick_decision(gold_n, pred_n)
        if quick is not None:
            return _verdict(quick, found.text, pred_n)
        return (gold_n, pred_n, ordered), found.text, pred_n

    def _compare_all(self, keys: list[tuple]) -> list[tuple[Status, str]]:
        from cotkit import TimeLimitExceeded, WorkerCrashed, WorkerFailed, answer_structure

        if importlib.util.find_spec(_PARSER_DIST) is None:
            reason = f"{_PARSER_DIST} is not installed: pip install {_PARSER_DIST.replace('_', '-')}"
            return [(Status.ERROR, reason)] * len(keys)
        def tree(s: str, ordered: bool) -> tuple:
            try:
                return answer_structure(s, ordered)
            except Exception:  # an answer too odd to split is still comparable as one expression
                return ("scalar", s)

        tasks = [(tree(g, ordered), tree(p, ordered)) for g, p, ordered in keys]
        outcomes = self._get_pool().map(compare_answers, tasks, timeout=self.config.timeout)
        results: list[tuple[Status, str]] = []
        for out in outcomes:
            if out.ok:
                equal, why = out.value
                results.append((Status.CORRECT if equal else Status.INCORRECT, why))
            elif isinstance(out.error, TimeLimitExceeded):
                results.append((Status.TIMEOUT, f"symbolic comparison exceeded the {self.config.timeout:g}s time limit"))
            elif isinstance(out.error, WorkerFailed) and out.error.exc_type == "MemoryError":
                results.append((Status.TIMEOUT, f"symbolic comparison exceeded the {self.config.memory_mb} MiB memory limit"))
            elif isinstance(out.error, WorkerFailed):
                results.append((Status.INCORRECT, f"not shown equal: sympy raised {out.error}"))
            elif isinstance(out.error, WorkerCrashed):
                results.append((Status.ERROR, f"comparison worker failed: {out.error}"))
            else:  # pragma: no cover - every pool error is one of the above
                results.append((Status.ERROR, str(out.error)))
        return results

    def _get_pool(self) -> Any:
        from cotkit import WorkerPool

        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(
                    self.config.workers, self.config.timeout, memory_mb=self.config.memory_mb or None, preload=_PRELOAD
                )
            return self._pool

    def _cached(self, key: tuple) -> tuple[Status, str] | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit

    def _remember(self, key: tuple, result: tuple[Status, str]) -> None:
        with self._lock:
            self._cache[key] = result
            if len(self._cache) > 50_000:
                self._cache.popitem(last=False)


@functools.lru_cache(maxsize=65536)
def _normalize(s: str) -> str:
    from cotkit import normalize_answer

    return normalize_answer(s)


def _quick_decision(gold: str, pred: str) -> tuple[Status, str] | None:
    """Decide without sympy where that is safe: equal strings, plain numbers, words."""
    from cotkit import digit_limit, is_plain_number, is_words

    if gold == pred:
        return Status.CORRECT, "equal after normalization"
    longest = max(_number_digits(gold), _number_digits(pred))
    if longest > digit_limit():
        # Python (and sympy) refuse to read such a number: plain decimals are equal only when
        # spelled alike, which normalization made canonical; any other form is not compared.
        if is_plain_number(gold) and is_plain_number(pred):
            same = _canonical_decimal(gold) == _canonical_decimal(pred)
            return (Status.CORRECT if same else Status.INCORRECT), f"compared as text: a number with {longest} digits is too long to read as a value"
        return Status.INCORRECT, f"a number with {longest} digits is too long to compare (more than {digit_limit()})"
    g, p = _rational(gold), _rational(pred)
    if g is not None and p is not None:
        return (Status.CORRECT if g == p else Status.INCORRECT), "numbers compared exactly"
    if is_words(gold) or is_words(pred):
        return Status.INCORRECT, "different text"
    return None


def _number_digits(s: str) -> int:
    """Digits of the longest number in a plain number or simple fraction (`-0012.5` has 3); 0 for anything else."""
    from cotkit import canonical_numeral, is_plain_number, numeral_size

    if is_plain_number(s):
        return numeral_size(canonical_numeral(s.lstrip("-")))
    m = _SIMPLE_FRACTION.fullmatch(s)
    if not m:
        return 0
    parts = [g.lstrip("-") for g in m.groups()[1:] if g is not None]
    return max(numeral_size(canonical_numeral(p)) for p in parts)


def _canonical_decimal(s: str) -> str:
    from cotkit import canonical_numeral

    digits = canonical_numeral(s.lstrip("-"))
    return f"-{digits}" if s.startswith("-") and digits != "0" else digits


_SIMPLE_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}|(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)")


def _rational(s: str) -> Fraction | None:
    """The exact value of `3`, `-0.25`, `\\frac{3}{4}`, `-\\frac{3}{4}` or `3/4`; None for anything else."""
    from cotkit import is_plain_number

    if is_plain_number(s):
        return Fraction(s)
    m = _SIMPLE_FRACTION.fullmatch(s)
    if not m:
        return None
    sign, a, b = (m.group(1), m.group(2), m.group(3)) if m.group(2) is not None else ("", m.group(4), m.group(5))
    if Fraction(b) == 0:
        return None
    return (-1 if sign else 1) * Fraction(a) / Fraction(b)


def _verdict(result: tuple[Status, str], extracted: str, normalized: str) -> Verdict:
    status, reason = result
    return Verdict(status, extracted=extracted, normalized=normalized, reason=reason, score=1.0 if status is Status.CORRECT else 0.0)


# ------------------------------------------------------------------------------ worker side
# Everything below runs inside a time-limited worker process (it imports sympy).


def compare_answers(gold: tuple, pred: tuple) -> tuple[bool, str]:
    """(equal, why) for two answer trees from `answer_structure`."""
    return _compare(gold, pred)


def _compare(g: tuple, p: tuple) -> tuple[bool, str]:
    gk, pk = g[0], p[0]
    if gk == "scalar" and pk == "scalar":
        return _scalar_equal(g[1], p[1])
    if gk == "tuple" and pk == "tuple":
        if (g[1], g[2]) != (p[1], p[2]):
            return False, f"brackets differ: {g[1]}..{g[2]} vs {p[1]}..{p[2]}"
        return _in_order(g[3], p[3])
    if gk == "tuple" and pk == "list" and (g[1], g[2]) == ("(", ")"):
        return _in_order(g[3], p[2])  # "(3, -1)" answered as "3, -1"
    if gk == "list" and pk in ("list", "set", "tuple"):
        items = p[3] if pk == "tuple" else p[2] if pk == "list" else p[1]
        if pk == "tuple" and (p[1], p[2]) != ("(", ")"):
            return False, "an interval is not a list"
        return _in_order(g[2], items) if g[1] and pk != "set" else _any_order(g[2], items)
    if gk == "set" and pk in ("set", "list"):
        return _any_order(g[1], p[1] if pk == "set" else p[2])
    if gk == "union" and pk == "union":
        same, why = _in_order(g[1], p[1])
        return (same, why) if same else _any_order(g[1], p[1])
    if gk == "matrix" and pk == "matrix":
        if [len(r) for r in g[1]] != [len(r) for r in p[1]]:
            return False, "matrix shapes differ"
        return _in_order([c for r in g[1] for c in r], [c for r in p[1] for c in r])
    if gk == "matrix" and pk == "tuple" and (p[1], p[2]) == ("(", ")") and all(len(r) == 1 for r in g[1]):
        return _in_order([r[0] for r in g[1]], p[3])  # a column vector written as a tuple
    return False, f"different kinds of answer ({gk} vs {pk})"


def _in_order(gs: list, ps: list) -> tuple[bool, str]:
    if len(gs) != len(ps):
        return False, f"different number of elements ({len(gs)} vs {len(ps)})"
    for i, (a, b) in enumerate(zip(gs, ps)):
        same, why = _compare(a, b)
        if not same:
            return False, f"element {i + 1}: {why}"
    return True, "equal element by element"


def _any_order(gs: list, ps: list) -> tuple[bool, str]:
    if len(gs) != len(ps):
        return False, f"different number of elements ({len(gs)} vs {len(ps)})"
    unused = list(range(len(ps)))
    for a in gs:
        for j in unused:
            if _compare(a, ps[j])[0]:
                unused.remove(j)
                break
        else:
            return False, "an element has no equal counterpart"
    return True, "equal as sets"


def _scalar_equal(a: str, b: str) -> tuple[bool, str]:
    if a == b:
        return True, "equal after normalization"
    ea, eb = _parse(a), _parse(b)
    if ea is None or eb is None:
        return False, f"cannot parse {(a if ea is None else b)[:100]!r}"
    return _sympy_equal(ea, eb)


@functools.lru_cache(maxsize=8192)
def _parse(s: str) -> Any:
    """The sympy object of a normalized LaTeX answer, decimals made exact; None if it does not parse."""
    import re

    import sympy
    from latex2sympy2_extended.latex2sympy2 import ConversionConfig, latex2sympy

    if not s:
        return None
    # plain-text function names a model may write without the backslash
    s = re.sub(r"(?<![\\a-zA-Z])sqrt\(([^()]*)\)", r"\\sqrt{\1}", s)
    s = re.sub(r"(?<![\\a-zA-Z])pi(?![a-zA-Z])", r"\\pi ", s)
    config = ConversionConfig(interpret_as_mixed_fractions=False, lowercase_symbols=False)
    try:
        expr = latex2sympy(s, normalization_config=None, conversion_config=config)
    except Exception:
        return None
    if isinstance(expr, sympy.Basic):
        floats = expr.atoms(sympy.Float)
        if floats:  # 0.1 is exactly 1/10 here, not the nearest binary float
            expr = expr.xreplace({f: sympy.Rational(str(f)) for f in floats})
        i = sympy.Symbol("i")
        if i in expr.free_symbols:
            expr = expr.xreplace({i: sympy.I})
    return expr


def _sympy_equal(a: Any, b: Any) -> tuple[bool, str]:
    import sympy
    from sympy.core.relational import Relational
    from sympy.matrices import MatrixBase

    if a == b:
        return True, "equal as parsed"
    if isinstance(a, MatrixBase) or isinstance(b, MatrixBase):
        if not (isinstance(a, MatrixBase) and isinstance(b, MatrixBase)) or a.shape != b.shape:
            return False, "matrix shapes differ"
        for x, y in zip(a, b):
            if not _sympy_equal(x, y)[0]:
                return False, "matrix entries differ"
        return True, "matrices equal entry by entry"
    if isinstance(a, Relational) or isinstance(b, Relational):
        if not (isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq)):
            return False, "an equation and a non-equation (or inequalities written differently)"
        da, db = a.lhs - a.rhs, b.lhs - b.rhs
        if _is_zero(da - db):
            return True, "same equation"
        # "y = 2x + 3" and "2x + 3 = y" are one equation; "Ax+By+Cz+D=0" forms are normalized
        # (A > 0, gcd 1), so there a factor, even -1, makes a different answer.
        if _is_zero(da + db) and not (a.rhs == 0 and b.rhs == 0):
            return True, "same equation, sides swapped"
        return False, "different equations (or not in the same normalized form)"
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return False, "not comparable as expressions"
    if a.is_infinite or b.is_infinite:
        return bool(a == b), "infinities compared"
    diff = a - b
    if diff == 0:
        return True, "equal as parsed"
    if not a.free_symbols and not b.free_symbols:
        va, vb = sympy.N(a, 50), sympy.N(b, 50)
        if not (va.is_number and vb.is_number):
            return False, "not numbers"
        scale = max(1, abs(va), abs(vb))
        same = bool(abs(va - vb) <= sympy.Float(10) ** -35 * scale)
        return same, "values compared to 35 digits"
    if sympy.expand(diff) == 0:
        return True, "equal after expansion"
    return _equal_at_points(diff, a, b)


def _is_zero(e: Any) -> bool:
    import sympy

    return sympy.expand(e) == 0 or sympy.simplify(e) == 0


def _equal_at_points(diff: Any, a: Any, b: Any) -> tuple[bool, str]:
    """Expressions with variables: equal where they agree at several fixed, generic points."""
    import sympy

    symbols = sorted(diff.free_symbols, key=lambda s: s.name)
    points = [(0.7390851, -1.3247180, 2.2360680, 0.5772157, 1.6180340), (-0.4142136, 1.4142136, -2.7182818, 3.1415927, 0.3183099)]
    points += [tuple(x * 1.37 + 0.11 for x in points[0])]
    checked = 0
    for values in points:
        subs = {s: sympy.Float(values[k % len(values)]) for k, s in enumerate(symbols)}
        try:
            d = complex(diff.evalf(30, subs=subs))
            scale = max(1.0, abs(complex(a.evalf(30, subs=subs))), abs(complex(b.evalf(30, subs=subs))))
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if d != d or abs(d) == float("inf"):  # nan or a pole at this point
            continue
        if abs(d) > 1e-9 * scale:
            return False, "values differ at a test point"
        checked += 1
    if checked >= 2:
        return True, f"equal at {checked} test points"
    if sympy.simplify(diff) == 0:
        return True, "equal after simplification"
    return False, "not shown equal"
