"""`arith`: check the arithmetic a text step states (`a op b = c`, GSM8K `<<48/2=24>>` annotations).

Scores: 0.0 when a calculation in the step is wrong, else 1.0. A step with no calculation that
can be checked ("The answer is 18.") gets `neutral`, by default 1.0: the neutral element of the
`min` and `prod` aggregations, so a solution is rated by its arithmetic errors alone and stating
the answer costs nothing (with 0.5, every solution that states an answer would be capped at 0.5
and beam search would prefer partial solutions to finished ones).

What is checked: an expression of numbers joined by `+ - * / x × ÷ · ^ **` (parentheses,
`$`, thousands commas, decimals and a unary minus allowed) followed by `=` and a number or
another expression; chains `a = b = c` are checked link by link, and a sloppy chain
"2 * 3 = 6 * 2 = 12" counts as written when the next link starts with the value. A percentage
is a hundredth in products and quotients ("20% * 50 = 10", "20% of 50 = 10") and an expression
of percentages only may add up ("25% + 15% = 40%"); a percentage added to a plain number is
ambiguous and not checked. A result written with d decimals may be rounded or truncated there
("10/3 = 3.33"); an integer result must be exact.

Evaluation is exact (fractions) by a walker over the parsed expression tree that accepts only
numbers and arithmetic operators: nothing is evaluated with `eval`, powers are limited to small
integer exponents and numbers to 30 digits, so no input can make the check slow.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar

from cotkit import TEXT_UNITS, Example, StepScorer, option, split_text

_NUM = r"(?:\$\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?%)?|(?:\$\s?)?\.\d+(?:\s?%)?"
# "x" multiplies only between numbers ("2 x 3", "5x3"), never in "4x-7" or "box"
_TIMES_X = r"(?<![A-Za-z])x(?=\s*[\d$(.])"
_OP = rf"(?:\*\*|[-+*/×÷·^]|{_TIMES_X}|of(?=\s))"
# (no two unbounded whitespace runs touch: the pattern cannot backtrack exponentially)
_OPERAND = rf"(?:\(\s*)*(?:-\s*)?(?:{_NUM})(?:\s*\))*"
# At most 30 operators, so a degenerate "1+1+1+..." generation costs linear time, not quadratic.
_EXPR = rf"{_OPERAND}(?:\s*{_OP}\s*{_OPERAND}){{1,30}}"
# An equation starts at an expression with at least one operator, not in the middle of a word or number.
_LHS = re.compile(rf"(?<![\w.,$])(?:{_EXPR})(?=\s*=(?!=))")
_MIXED = r"\d+[ \t]+\d+/\d+(?![\d/])"  # "1 1/2"
# A written result: an expression, a mixed number or a number, not glued to a letter ("5A/5").
# (atomic, so "12,000MB" is not read as "12"; "18 000" with a space separator is not read at all)
_LINK = re.compile(rf"\s*=(?!=)\s*((?>{_EXPR}|{_MIXED}|(?:-\s*)?(?:{_NUM})))(?![A-Za-z\d]|[ \t]\d{{3}}(?!\d))")
_ANNOTATION = re.compile(r"<<([^<>=]{1,200})=([^<>=]{1,60})>>")
_TOKEN = re.compile(rf"\s*({_NUM}|\*\*|[-+*/×÷·^()]|{_TIMES_X}|of(?=\s))")

MAX_DIGITS = 30
MAX_EXPONENT = 64
MAX_POWER_BITS = 4096
MAX_EXPRESSION = 300


class Unchecked(Exception):
    """The text is not an arithmetic statement this checker can judge."""


@dataclass(frozen=True)
class Check:
    """One calculation found in a step: what was written and whether it holds."""

    expression: str
    written: str
    ok: bool
    value: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"expression": self.expression, "written": self.written, "ok": self.ok, "value": self.value}


@dataclass(frozen=True)
class _Number:
    value: Fraction
    percent: bool
    decimals: int


def _number(token: str) -> _Number:
    text = token.replace("$", "").replace(",", "").replace(" ", "")
    percent = text.endswith("%")
    text = text.rstrip("%")
    if re.match(r"0\d", text):
        raise Unchecked(f"a clock time or code, not a number: {token}")  # "0900 - 0130"
    digits = text.replace(".", "").lstrip("0")
    if len(digits) > MAX_DIGITS:
        raise Unchecked(f"number too long: {token[:40]}")
    decimals = len(text.split(".", 1)[1]) if "." in text else 0
    value = Fraction(text)
    return _Number(value / 100 if percent else value, percent, decimals)


def _parse(expression: str) -> tuple[ast.Expression, dict[str, _Number]]:
    """The expression as a Python expression tree over placeholder names, and the numbers they stand for."""
    if len(expression) > MAX_EXPRESSION:
        raise Unchecked("expression too long")
    pos, parts, numbers = 0, [], {}
    previous_percent = False
    while pos < len(expression):
        m = _TOKEN.match(expression, pos)
        if not m:
            if expression[pos:].strip():
                raise Unchecked(f"unexpected text {expression[pos : pos + 20]!r}")
            break
        tok = m.group(1)
        pos = m.end()
        if tok[0].isdigit() or tok[0] in "$.":
            name = f"n{len(numbers)}"
            numbers[name] = _number(tok)
            parts.append(name)
            previous_percent = numbers[name].percent
            continue
        if tok == "of":
            if not previous_percent:
                raise Unchecked("'of' without a percentage")
            tok = "*"
        previous_percent = False
        parts.append({"x": "*", "×": "*", "·": "*", "÷": "/", "^": "**"}.get(tok, tok))
    try:
        tree = ast.parse(" ".join(parts), mode="eval")
    except SyntaxError as e:
        raise Unchecked("not an expression") from e
    return tree, numbers


def _walk(node: ast.AST, numbers: dict[str, _Number], depth: int = 0) -> tuple[Fraction, bool]:
    """(exact value, whether it is a percentage) of a tree of numbers and arithmetic operators only."""
    if depth > 60:
        raise Unchecked("expression nested too deeply")
    if isinstance(node, ast.Expression):
        return _walk(node.body, numbers, depth + 1)
    if isinstance(node, ast.Name) and node.id in numbers:
        n = numbers[node.id]
        return n.value, n.percent
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value, pct = _walk(node.operand, numbers, depth + 1)
        return (-value if isinstance(node.op, ast.USub) else value), pct
    if isinstance(node, ast.BinOp):
        left, lpct = _walk(node.left, numbers, depth + 1)
        right, rpct = _walk(node.right, numbers, depth + 1)
        op = node.op
        if isinstance(op, (ast.Add, ast.Sub)):
            if lpct != rpct:
                raise Unchecked("a percentage added to a plain number")
            return (left + right if isinstance(op, ast.Add) else left - right), lpct
        if isinstance(op, ast.Mult):
            return left * right, False
        if isinstance(op, ast.Div):
            if right == 0:
                raise ZeroDivisionError
            return left / right, False
        if isinstance(op, ast.Pow):
            if right.denominator != 1 or abs(right) > MAX_EXPONENT:
                raise Unchecked("exponent not a small integer")
            size = max(abs(left.numerator).bit_length(), left.denominator.bit_length())
            if size * abs(int(right)) > MAX_POWER_BITS:
                raise Unchecked("power too large")
            if left == 0 and right < 0:
                raise ZeroDivisionError
            return left ** int(right), False
    raise Unchecked(f"unsupported {type(node).__name__}")


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression as people write it ("$1,200 x 3", "20% of 50"); raises Unchecked."""
    tree, numbers = _parse(expression)
    return _walk(tree, numbers)[0]


def _agrees(value: Fraction, written: str) -> bool:
    """Whether a computed value matches a written result, exactly or rounded or truncated to its decimals."""
    n = _number(written)
    candidates = [n.value] + ([n.value * 100] if n.percent else [])  # "1/4 = 25%" and "0.25 * 100 = 25%"
    scale = 10**n.decimals
    for target in candidates:
        if value == target or abs(value - target) <= abs(target) * Fraction(1, 10**9):
            return True
        if n.decimals and (abs(value - target) * 2 * scale <= 1 or math.trunc(value * scale) == target * scale):
            return True
    return False


_NUMBER_ONLY = re.compile(rf"(?:-\s*)?(?:{_NUM})")


def _leading_number(text: str) -> str | None:
    m = re.match(rf"\s*((?:-\s*)?(?:{_NUM}))", text)
    return m.group(1) if m else None


def check_arithmetic(text: str) -> list[Check]:
    """Every checkable calculation in a piece of text, in order, with whether it holds."""
    checks: list[Check] = []
    for m in _ANNOTATION.finditer(text):
        expression, written = m.group(1).strip(), m.group(2).strip()
        if _NUMBER_ONLY.fullmatch(written):
            checks.append(_check_link(expression, written))
    plain = _ANNOTATION.sub("", text)  # "48/2 = <<48/2=24>>24" reads "48/2 = 24"
    pos = 0
    while m := _LHS.search(plain, pos):
        left, pos = m.group(0), m.end()
        partial = _continues_before(plain[: m.start()], left)
        while link := _LINK.match(plain, pos):
            right, pos = link.group(1).strip(), link.end()
            if not partial:
                checks.append(_check_link(left, right))
            left, partial = right, False
    return [c for c in checks if c is not None]


def _continues_before(before: str, expression: str) -> bool:
    """Whether an expression found after `before` is only the end of a longer one.

    "60 students x 2/3 = 40", "M + 4 + 2 = 8", "8 x 1 1/2 = 12": an operator or a number just
    before it means the real left side includes words or a mixed number, so it is not checked.
    """
    before = before.rstrip()
    if not before:
        return False
    if expression.startswith("-") and (before[-1].isalnum() or before[-1] == ")"):
        return True  # "3*X - 3*6 = 77": a binary minus
    return before[-1] in "+-*/×÷^·" or before[-1].isdigit() or re.search(r"(?<![A-Za-z])x$", before) is not None


def _check_link(left: str, right: str) -> Check | None:
    """Whether the value of `left` matches `right`: a written number, or an expression of the same value.

    A right side that is an expression of another value still counts when it starts with the
    value ("2 * 3 = 6 * 2 = 12"). None when the left side cannot be checked.
    """
    left = left.strip()
    try:
        value = evaluate(left)
    except ZeroDivisionError:
        return Check(left, right, False, "division by zero")
    except Unchecked:
        return None
    if re.fullmatch(_MIXED, right):
        whole, frac = right.split(None, 1)
        mixed = Fraction(whole) + Fraction(frac) if Fraction(frac) < 1 else None
        return Check(left, right, mixed == value, _show(value)) if mixed is not None else None
    if not _NUMBER_ONLY.fullmatch(right):
        try:
            if evaluate(right) == value:
                return Check(left, right, True, _show(value))
        except (Unchecked, ZeroDivisionError):
            pass
        right = _leading_number(right) or ""
        if not right:
            return None
    try:
        return Check(left, right, _agrees(value, right), _show(value))
    except (Unchecked, ValueError, ZeroDivisionError):
        return None


def _show(value: Fraction) -> str:
    """The value as a short string (huge powers as a magnitude)."""
    if abs(value) >= 10**18:
        # Decimal counts the digits: str() refuses integers past 4300 digits, and a product of
        # large powers ("99^40 * 99^40 * ...") has more
        digits = Decimal(abs(value.numerator) // value.denominator).adjusted() + 1
        return f"{'-' if value < 0 else ''}~1e{digits - 1}"
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6g}"


@dataclass
class ArithConfig:
    """Options of the `arith` step scorer (`-S KEY=VALUE`)."""

    unit: str = option("sentence", choices=TEXT_UNITS, help="what a step is")
    neutral: float = option(1.0, minimum=0.0, maximum=1.0, help="score of a step with no checkable arithmetic")


class ArithScorer(StepScorer):
    """Checks the arithmetic each step states: 0 if a calculation is wrong, else 1 (neutral: no calculation)."""

    name = "arith"
    description = "Check `a op b = c` statements and <<48/2=24>> annotations in each text step (0 wrong, 1 otherwise)"
    step_unit: ClassVar[str] = "text"
    Config = ArithConfig

    def split(self, completion: str, example: Example | None = None) -> list[str]:
        """Sentences (or lines) of the completion, joining back to it."""
        return split_text(completion, self.config.unit)

    def score_steps(self, example: Example, steps: list[str]) -> list[float]:
        """0.0 if a step has a wrong calculation, 1.0 if all hold, `neutral` if it has none."""
        return [self._score_alone(step) for step in steps]

    def _score_alone(self, step: str) -> float:
        try:
            return self.score_step(step)
        except Exception:  # a bug this step's text triggers: its arithmetic is not checked, nothing else changes
            return self.config.neutral

    def score_step(self, step: str) -> float:
        """The score of one step on its own (arithmetic needs no context)."""
        checks = check_arithmetic(step)
        if not checks:
            return self.config.neutral
        return 1.0 if all(c.ok for c in checks) else 0.0
