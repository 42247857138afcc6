"""LaTeX answers as text: find the final answer of a math completion, normalize it, split its structure.

Everything here is plain string work (no sympy), cheap enough to run in the caller's process:
a verifier normalizes both sides, accepts equal strings at once, and sends only the rest to a
time-limited worker for symbolic comparison (see `cotkit.reading.timelimit`).

- `extract_math_answer`: cut the completion at stop sequences and next-problem markers, then
  take the last `\\boxed{}`, else Minerva's "Final Answer: The final answer is X. I hope it is
  correct.", else PRM800K's "# Answer" line, else "The answer is X", else a final `$...$`.
- `normalize_answer`: one canonical spelling (`\\dfrac`->`\\frac`, `\\frac12`->`\\frac{1}{2}`, no
  `\\left`/`\\right`, spacing, degrees, `\\%`, `\\$`, units, thousands separators, `x = 5` -> `5`,
  `.5` -> `0.5`, `18.00` -> `18`, `40_9` -> `40`, `\\text{(C)}` -> `C`).
- `answer_structure`: a nested plain-data description (scalar, tuple or interval with its
  brackets, set, list, union of intervals, matrix) that a comparer walks element by element.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cotkit.reading.answers import closing_brace, cut_completion, digit_limit, last_boxed

#: Markers of a next problem in MATH-style prompts (Minerva "Problem:", PRM800K), besides the shared ones.
MATH_CUT_MARKERS: tuple[str, ...] = ("\n\nProblem:", "\nProblem:", "\n\nQuestion:", "\nQuestion:")


@dataclass(frozen=True)
class Extracted:
    """An answer found in a completion and the cue that introduced it."""

    text: str
    via: str  # "boxed", "final answer", "# Answer", "the answer is", "final math"


# ------------------------------------------------------------------------------ extraction

_FINAL_ANSWER_IS = re.compile(r"final answer is\s*:?\s*", re.IGNORECASE)
_ANSWER_HEADING = re.compile(r"(?m)^#+\s*Answer\s*:?\s*$")
_THE_ANSWER_IS = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+(?:is|would\s+be|should\s+be)\s*:?\s*", re.IGNORECASE)
_FINAL_MATH = re.compile(r"((?<!\\)\$\$?|\\\(|\\\[)((?:\\\$|(?!\$|\\\)|\\\]).)+?)((?<!\\)\$\$?|\\\)|\\\])\s*[.!]?\s*$", re.DOTALL)
_INLINE_MATH = re.compile(r"(?<!\\)\$\$?((?:\\\$|[^$])+?)(?<!\\)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)


def extract_math_answer(completion: str, stop: Iterable[str] = ()) -> Extracted | None:
    """The final answer a math completion states, or None when it states none.

    The strong cues (`\\boxed{}`, Minerva's "The final answer is X. I hope it is correct.", a
    PRM800K "# Answer" line) compete by position: the one stated last is the final answer. Only
    without them do "The answer is X" and then a final `$...$` count.
    """
    text = cut_completion(completion, [*stop, *MATH_CUT_MARKERS])
    strong: list[tuple[int, Extracted]] = []
    boxed = _last_boxed_with_position(text)
    if boxed is not None:
        strong.append(boxed)
    minerva = _minerva_answer(text)
    if minerva is not None:
        strong.append(minerva)
    m = _last(_ANSWER_HEADING.finditer(text))
    if m is not None:
        rest = text[m.end() :].strip()
        if rest:
            strong.append((m.start(), Extracted(_unwrap_math(rest.splitlines()[0].strip()), "# Answer")))
    if strong:
        return max(strong, key=lambda pair: pair[0])[1]
    last = _last(_FINAL_ANSWER_IS.finditer(text)) or _last(_THE_ANSWER_IS.finditer(text))
    if last is not None:
        got = _sentence_answer(text[last.end() :])
        if got:
            return Extracted(got, "the answer is")
    # A final $...$ ends the text: searching only its tail keeps a long completion full of `$` linear.
    m = _FINAL_MATH.search(text.rstrip()[-2000:])
    if m and m.group(2).strip():
        return Extracted(m.group(2).strip(), "final math")
    return None


def _minerva_answer(text: str) -> tuple[int, Extracted] | None:
    """Minerva's "The final answer is X. I hope it is correct." (found without a backtracking regex)."""
    lower = text.lower()
    hope = lower.rfind("i hope it is correct")
    if hope < 0:
        return None
    cue = lower.rfind("final answer is", 0, hope)
    if cue < 0:
        return None
    got = _sentence_answer(text[cue + len("final answer is") : hope].strip().removeprefix(":").strip())
    return (cue, Extracted(got, "final answer")) if got else None


def _last(matches: Iterable[re.Match[str]]) -> re.Match[str] | None:
    m = None
    for m in matches:
        pass
    return m


def _last_boxed_with_position(text: str) -> tuple[int, Extracted] | None:
    """The last non-empty `\\boxed{}` content and where it starts (`last_boxed` does the parsing)."""
    end = len(text)
    pos = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    for _ in range(50):  # past 50 empty or broken boxes there is no answer worth the time
        if pos < 0:
            break
        content = last_boxed(text[pos:end])
        if content is not None and content.strip():
            return pos, Extracted(content.strip(), "boxed")
        end = pos
        pos = max(text.rfind("\\boxed", 0, pos), text.rfind("\\fbox", 0, pos))
    return None


def _sentence_answer(span: str) -> str | None:
    """The answer in the text after a cue: its first math span, else the rest of the sentence."""
    line = span.strip().split("\n", 1)[0].strip()
    if not line:
        return None
    m = _INLINE_MATH.search(line)
    if m and line[: m.start()].strip(" :") == "":
        inner = next(g for g in m.groups() if g is not None).strip()
        return inner or None
    # End of sentence: a period followed by a space or the end (not the point in "0.5").
    end = re.search(r"\.(?=\s|$)", line)
    out = line[: end.start()] if end else line
    return out.strip().rstrip(".") or None


def _unwrap_math(s: str) -> str:
    m = _INLINE_MATH.fullmatch(s.strip().rstrip("."))
    if m:
        return next(g for g in m.groups() if g is not None).strip()
    return s


# ------------------------------------------------------------------------------ normalization

_UNIT_WORDS = (
    "degrees?",
    "deg",
    "units?",
    "sq(?:uare)?\\s*units?",
    "cm",
    "centimeters?",
    "mm",
    "millimeters?",
    "m",
    "meters?",
    "km",
    "kilometers?",
    "inch(?:es)?",
    "in",
    "feet",
    "foot",
    "ft",
    "yards?",
    "yd",
    "miles?",
    "mi",
    "mph",
    "seconds?",
    "sec",
    "s",
    "minutes?",
    "min",
    "hours?",
    "hr",
    "days?",
    "weeks?",
    "months?",
    "years?",
    "dollars?",
    "cents?",
    "pounds?",
    "lbs?",
    "ounces?",
    "oz",
    "grams?",
    "g",
    "kg",
    "liters?",
    "ml",
    "gallons?",
    "people",
    "students?",
    "points?",
    "ways?",
    "times",
    "percent",
)
_UNIT_RE = re.compile(r"(?<=[\d}).])\s*(?:\\,|\\ |~)?\s*(?:" + "|".join(_UNIT_WORDS) + r")(?:\s*\^\s*\{?[23]\}?)?\s*$", re.IGNORECASE)
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad\b|\\(?:thinspace|medspace|thickspace|enspace)\b|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|°|\\degree(?![a-zA-Z])")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|biggl|biggr)(?![a-zA-Z])\s*")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_VAR_SUFFIX = re.compile(r"(?<=\S)\s*=\s*[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\s*$")
_VAR_PREFIX = re.compile(r"^\s*[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\s*(?:=|\\in\b)\s*(?=\S)")
_BASE_SUBSCRIPT = re.compile(r"^([0-9A-Za-z]+)_\{?(\d+)\}?$")
_CHOICE = re.compile(r"^\(?([A-Ha-h])\)?$")


def normalize_answer(s: str) -> str:
    """A canonical spelling of a LaTeX answer, for string comparison and for parsing."""
    s = s.strip()
    s = _strip_math_delimiters(s)
    inner = last_boxed(s) if s.startswith(("\\boxed", "\\fbox")) else None
    if inner is not None:
        s = inner.strip()
    s = s.replace("\\displaystyle", "").replace("\\mathrm{~}", " ")
    s = s.replace("\n", " ")
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
    s = _LEFT_RIGHT.sub("", s)
    s = s.replace("{,}", ",")
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\le(?:q|qslant)?(?![a-zA-Z])", r"\\le ", s)
    s = re.sub(r"\\ge(?:q|qslant)?(?![a-zA-Z])", r"\\ge ", s)
    s = re.sub(r"\\neq?(?![a-zA-Z])", r"\\ne ", s)
    s = re.sub(r"\\varnothing(?![a-zA-Z])", r"\\emptyset", s)
    s = s.replace("\\infinity", "\\infty")
    s = _drop_text(s)
    s = _fix_args(s, "\\frac", 2)
    s = _fix_args(s, "\\sqrt", 1)
    s = _fix_args(s, "\\binom", 2)
    s = _mixed_numbers(s)
    s = _squeeze_spaces(s)
    s = s.rstrip(".,;")
    s = _strip_math_delimiters(s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if s.count("=") <= 1:  # "x = 5", "x \\in [1, 2]" and "5 = x" answer the value alone
        s = _VAR_PREFIX.sub("", s)
        s = _VAR_SUFFIX.sub("", s)
    s = re.sub(r"(?<![\d}\w])\.(\d)", r"0.\1", s)
    s = _DECIMAL.sub(_drop_trailing_zeros, s)
    s = re.sub(r"(\d)\.(?!\d)", r"\1", s)
    m = _BASE_SUBSCRIPT.fullmatch(s)
    if m and not m.group(1).isalpha():
        s = m.group(1)
    m = _CHOICE.fullmatch(s)
    if m:
        s = m.group(1).upper()
    if re.fullmatch(r"[A-Za-z]+(?: [A-Za-z]+)*", s) and len(s) > 1:
        s = s.lower()
    return s


# A decimal, matched only from the start of its digits: a pattern that may start inside a run of
# digits, or backtrack over its decimals, takes quadratic time on a number of 10,000 digits.
_DECIMAL = re.compile(r"(?<!\d)(\d+)\.(\d+)")


def _drop_trailing_zeros(m: re.Match[str]) -> str:
    """`18.00` -> `18.` and `2.50` -> `2.5` (the bare point goes next)."""
    return f"{m.group(1)}.{m.group(2).rstrip('0')}"


def _strip_math_delimiters(s: str) -> str:
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    return s


def _drop_text(s: str) -> str:
    """Unwrap `\\text{...}` answers, drop unit words after a number, and keep the words otherwise."""
    whole = _TEXT_CMD.fullmatch(s.strip())
    if whole:
        return whole.group(1).strip()
    # "\text{ and }" / "\text{ or }" between answers separate them like a comma.
    s = re.sub(r"\\text\s*\{\s*(?:and|or|,)\s*\}", ",", s)

    def unit_or_word(m: re.Match[str]) -> str:
        content = m.group(1).strip()
        before = s[: m.start()].rstrip()
        is_unit = re.fullmatch(r"[A-Za-z. ]+", content) and before and (before[-1].isdigit() or before[-1] in "})")
        return " " if is_unit else content

    s = _TEXT_CMD.sub(unit_or_word, s)
    s = re.sub(r"\s*\^\s*\{?[23]\}?\s*$", "", s) if re.search(r"\d\s+\^\s*\{?[23]\}?\s*$", s) else s
    for _ in range(2):  # "5 square units", "12 inches^2"
        s = _UNIT_RE.sub("", s).rstrip()
    return s


def _read_arg(s: str, i: int) -> tuple[str, int] | None:
    """The argument at s[i:] of a LaTeX command: a braced group, a command name, or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] == "{":
        j = closing_brace(s, i)
        return None if j is None else (s[i + 1 : j], j + 1)
    if s[i] == "\\":
        m = re.match(r"\\[a-zA-Z]+", s[i:])
        if m:
            return m.group(0), i + m.end()
        return s[i : i + 2], i + 2
    return s[i], i + 1


def _fix_args(s: str, cmd: str, nargs: int) -> str:
    """Brace the arguments of `cmd`: `\\frac12` -> `\\frac{1}{2}`, `\\sqrt3` -> `\\sqrt{3}`."""
    out = []
    i = 0
    pattern = re.compile(re.escape(cmd) + r"(?![a-zA-Z])")
    while True:
        m = pattern.search(s, i)
        if not m:
            out.append(s[i:])
            break
        out.append(s[i : m.end()])
        j = m.end()
        if cmd == "\\sqrt":  # an optional [n] root index stays as written
            k = j
            while k < len(s) and s[k] == " ":
                k += 1
            if k < len(s) and s[k] == "[":
                close = s.find("]", k)
                if close > 0:
                    out.append(s[k : close + 1])
                    j = close + 1
        args = []
        for _ in range(nargs):
            got = _read_arg(s, j)
            if got is None:
                break
            arg, j = got
            args.append(arg)
        if len(args) < nargs:
            out.append(s[m.end() :])
            break
        out.append("".join("{" + _fix_args(_fix_args(a, "\\frac", 2), "\\sqrt", 1) + "}" for a in args))
        i = j
    return "".join(out)


_MIXED = re.compile(r"(?<![\w^_}.)\\])(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}")


def _mixed_numbers(s: str) -> str:
    """`3\\frac{1}{2}` and `137 \\frac{1}{2}` are mixed numbers: `(3+\\frac{1}{2})`."""
    return _MIXED.sub(r"(\1+\\frac{\2}{\3})", s)


def _squeeze_spaces(s: str) -> str:
    """Remove whitespace, except the one space that keeps `\\cot x` from becoming `\\cotx`."""
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x00", s)
    s = re.sub(r"\s+", "", s)
    return s.replace("\x00", " ")


# ------------------------------------------------------------------------------ structure

_OPEN = {"(": ")", "[": "]", "\\{": "\\}", "\\langle": "\\rangle"}
_ORDER_WORDS = re.compile(r"\border|increasing|decreasing|ascending|descending|ordered|respectively|in the form", re.IGNORECASE)


def question_wants_order(question: str | None) -> bool:
    """True when a question asks for its answers in a given order (then bare lists are ordered)."""
    return bool(question and _ORDER_WORDS.search(question))


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split at `sep` where it is not inside braces, brackets or parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _enclosing(s: str) -> tuple[str, str, str] | None:
    """(open, close, inner) when one bracket pair encloses all of s (the close may differ: `(1,3]`)."""
    for o in ("\\langle", "\\{", "(", "["):
        if not s.startswith(o):
            continue
        closes = [c for c in ("\\rangle", "\\}", ")", "]") if s.endswith(c)]
        if not closes:
            return None
        c = closes[0]
        inner = s[len(o) : len(s) - len(c)]
        # the pair must match each other, not "(1)+(2)"
        depth = 0
        i = 0
        while i < len(inner):
            ch = inner[i]
            if ch == "\\" and i + 1 < len(inner) and inner[i + 1] in "{}":
                depth += 1 if inner[i + 1] == "{" else -1
                i += 2
                if depth < 0:
                    return None
                continue
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
                if depth < 0:
                    return None
            i += 1
        return (o, c, inner) if depth == 0 else None
    return None


_MATRIX = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.DOTALL)


def answer_structure(s: str, ordered: bool = True) -> tuple:
    """A plain-data tree of a normalized answer for element-wise comparison.

    Nodes: `("scalar", text)`, `("tuple", open, close, [nodes])` (ordered pairs and intervals,
    brackets kept), `("set", [nodes])` (unordered), `("list", ordered, [nodes])` (a bare comma
    list), `("union", [nodes])`, `("matrix", [[nodes]])`.
    """
    s = s.strip()
    m = _MATRIX.match(s)
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
        return ("matrix", [[answer_structure(normalize_answer(c)) for c in r.split("&")] for r in rows])
    union = split_top_level(s, "\\cup")
    if len(union) > 1:
        return ("union", [answer_structure(p) for p in union])
    enc = _enclosing(s)
    if enc:
        o, c, inner = enc
        parts = split_top_level(inner)
        if o == "\\{" and c == "\\}":
            return ("set", [_element(p) for p in _expand_pm(parts)])
        if len(parts) > 1:
            return ("tuple", o, c, [_element(p) for p in parts])
    parts = split_top_level(s)
    if len(parts) > 1:
        return ("list", ordered, [_element(p) for p in _expand_pm(parts)])
    expanded = _expand_pm([s])
    if len(expanded) > 1:
        return ("list", False, [_element(p) for p in expanded])
    return ("scalar", s)


def _element(p: str) -> tuple:
    p = _VAR_PREFIX.sub("", p.strip())
    return answer_structure(p) if p else ("scalar", "")


def _expand_pm(parts: list[str]) -> list[str]:
    """`1\\pm\\sqrt{2}` stands for two answers, `1+\\sqrt{2}` and `1-\\sqrt{2}`; `\\pm 8` for `8` and `-8`."""
    out = []
    for p in parts:
        halves = split_top_level(p, "\\pm")
        if len(halves) == 2 and halves[1].strip():
            a, b = halves[0].strip(), halves[1].strip()
            out += [f"{a}+{b}", f"{a}-{b}"] if a else [b, f"-{b}"]
        else:
            out.append(p)
    return out


def is_plain_number(s: str) -> bool:
    """True for `-12`, `3.5`, `0.25`: numbers the caller can compare without sympy."""
    return bool(re.fullmatch(r"-?\d+(?:\.\d+)?", s))


def is_words(s: str) -> bool:
    """True when a normalized answer is text (a run of 3+ letters outside a LaTeX command)."""
    s = re.sub(r"\\(?:begin|end)\{[a-zA-Z*]+\}|\\[a-zA-Z]+", " ", s)
    return bool(re.search(r"[a-zA-Z]{3,}", s))


# ------------------------------------------------------------------------------ requested forms

_FORM_COMMON_FRACTION = re.compile(r"common fraction|single fraction|improper fraction|as a fraction|lowest terms|simplest form|reduced fraction", re.IGNORECASE)
_FORM_RADICAL = re.compile(r"simplest radical form|simplest form|simplify", re.IGNORECASE)
_FORM_RATIONALIZE = re.compile(r"rationaliz|simplest radical form", re.IGNORECASE)
_FORM_PAIR = re.compile(r"ordered (?:pair|triple)", re.IGNORECASE)
_INT_FRACTION = re.compile(r"\\frac\{-?(\d+)\}\{-?(\d+)\}|(?<![\w.}])(\d+)/(\d+)(?![\w.])")
_ARITHMETIC = re.compile(r"^[-+]?[\d.]+(?:\s*(?:\\times|\\cdot|\*|\+|-)\s*[\d.]+)+$")


def form_problem(pred: str, gold: str, question: str | None, raw_pred: str = "", raw_gold: str = "") -> str | None:
    """Why a normalized answer breaks a form the question asks for (and the gold keeps), or None.

    Equivalence alone accepts `\\frac{72}{375}` for `\\frac{24}{125}`; a question that says
    "Express your answer as a common fraction" does not. Checked only where the question asks:
    a reduced single fraction of integers (common fraction, lowest terms), no square factor under
    a root (simplest radical form), no root in a denominator (rationalize), parentheses (ordered
    pair), an equation when the question asks for one and the gold is one (the raw strings
    tell, as normalization drops `y =`). Always: a number for a numeric gold, not arithmetic left
    to do (`5+50\\times7`).
    """
    checks = []
    if (
        "=" in raw_gold
        and "=" not in raw_pred
        and re.search(r"equation of|in the form", question or "", re.IGNORECASE)
        and ("=" in gold or re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", gold)))
    ):
        return "an equation is asked for"  # "y = -2x", not the value of a variable like "x = 5"
    if _ARITHMETIC.match(pred) and is_plain_number(gold):
        return "arithmetic left undone"
    q = question or ""
    if _FORM_COMMON_FRACTION.search(q):
        checks += [_unreduced_fraction, _fraction_of_decimals, _sum_of_fractions, _mixed_number]
    if _FORM_RADICAL.search(q):
        checks.append(_unsimplified_root)
    if _FORM_RATIONALIZE.search(q):
        checks.append(_root_in_denominator)
    if _FORM_PAIR.search(q):
        checks.append(_bare_tuple)
    for check in checks:
        why = check(pred)
        if why and not check(gold):
            return why
    return None


def _unreduced_fraction(s: str) -> str | None:
    from math import gcd

    for m in _INT_FRACTION.finditer(s):
        a, b = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
        if max(len(a), len(b)) > digit_limit():
            continue  # Python will not read it (the comparison says so)
        if int(b) != 0 and gcd(int(a), int(b)) > 1:
            return "fraction not in lowest terms"
    return None


def _fraction_of_decimals(s: str) -> str | None:
    return "fraction of decimals" if re.search(r"\\frac\{[^{}]*\d\.\d|\d\.\d*/", s) else None


def _sum_of_fractions(s: str) -> str | None:
    terms = [t for t in split_top_level(s.lstrip("-+"), "+") for t in split_top_level(t, "-")]
    return "not a single fraction" if len(terms) > 1 and "\\frac" in s else None


def _mixed_number(s: str) -> str | None:
    return "a mixed number, not a common fraction" if _MIXED_NORMALIZED.search(s) else None


_MIXED_NORMALIZED = re.compile(r"\(\d+\+\\frac\{\d+\}\{\d+\}\)")


def _unsimplified_root(s: str) -> str | None:
    for m in re.finditer(r"\\sqrt\{(\d+)\}", s):
        if len(m.group(1).lstrip("0")) > 12:
            continue  # too large to factor here (and longer than Python reads, past 4300 digits)
        n = int(m.group(1))
        if n < 10**12 and any(n % (k * k) == 0 for k in range(2, int(n**0.5) + 1)):
            return "root not in simplest radical form"
    return None


def _root_in_denominator(s: str) -> str | None:
    for m in re.finditer(r"\\frac\{", s):
        num = _read_arg(s, m.end() - 1)
        den = _read_arg(s, num[1]) if num else None
        if den and "\\sqrt" in den[0]:
            return "root in the denominator"
    return None


def _bare_tuple(s: str) -> str | None:
    return "an ordered pair needs parentheses" if len(split_top_level(s)) > 1 and not s.startswith("(") else None
