"""Answer extraction shared by verifiers, task loaders and methods (no task names here).

The pipeline `extract_answer` runs on a completion:

1. `cut_completion`: drop everything from the first stop sequence, next-question marker
   ("\n\nQ:", "\nQuestion:", "\n\nProblem:", "Question 2:", an inline ". Q: ") or chat-turn
   marker on, so no answer is ever read from a question the model hallucinated after its own.
2. `find_cues`: every answer cue in the cut text ("The answer is", "the final answer is",
   "The answer (arabic numerals) is", "####", `\\boxed{}`, "Answer:", a "### Final Answer"
   heading, a final "A: ..." line, "-->"), each with the span of text it introduces.
3. From the last cue back: the first span that parses as an answer of the example's kind wins;
   a span that names two answers is a hedge ("(A) or (B)"); a span that declines ("dependent
   on ...", "impossible to say") ends the search with no answer.
4. Without a usable cue: a completion that is nothing but an answer ("(B)", "True"), a final
   code-output block, and -- for numbers only -- the last number of the cut text.

Parsers per kind: numbers (`$1,234.00`, `3/4`, `25%`, `\\frac{3}{4}`, "5 + 3 = 8", "seventy
six"), choices (a label anchored on a cue, or the option's text; never a bare letter found
somewhere in the text), closed sets (True/False, Yes/No, valid/invalid, with "not valid" never
read as "valid"), open text (token sequences: dyck closing brackets, sorted word lists) and a
light LaTeX normal form for MATH strings.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# ------------------------------------------------------------------------------ \boxed{...}


def closing_brace(text: str, i: int) -> int | None:
    """Index of the `}` that closes the `{` at text[i], nested braces respected; None when it never closes."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def _bare_token_end(text: str, i: int) -> int:
    """End of the `\\boxed 5` form's argument: the token up to whitespace or `$`."""
    j = i
    while j < len(text) and not text[j].isspace() and text[j] != "$":
        j += 1
    return j


def iter_boxed(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, content) of every complete `\\boxed{...}` / `\\fbox{...}`, in order of position."""
    boxes = list(re.finditer(r"\\(?:boxed|fbox)\b *", text))
    if not boxes:
        return
    # one pass pairs every brace, so many unclosed boxes in a degenerate completion stay linear
    closing: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closing[stack.pop()] = i
    for m in boxes:
        i = m.end()
        if i >= len(text):
            continue
        if text[i] != "{":
            j = _bare_token_end(text, i)
            if j > i:
                yield m.start(), j, text[i:j]
        elif i in closing:
            yield m.start(), closing[i] + 1, text[i + 1 : closing[i]]


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in text, nested braces respected."""
    best = None
    for cmd in ("\\boxed", "\\fbox"):
        idx = text.rfind(cmd)
        if idx >= 0 and (best is None or idx > best[0]):
            best = (idx, cmd)
    if best is None:
        return None
    idx, cmd = best
    i = idx + len(cmd)
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":
        return text[i : _bare_token_end(text, i)] or None
    j = closing_brace(text, i)
    return None if j is None else text[i + 1 : j]


# ------------------------------------------------------------------------------ cutting

#: Where a completion stops being the answer to *this* question: a next question or a new chat turn.
CUT_MARKERS: tuple[str, ...] = (
    "\n\nQ:",
    "\nQ:",
    "\nQuestion:",
    "\n\nProblem:",
    "\nUser:",
    "\nHuman:",
    "\n### Instruction",
    "<|im_end|>",
    "<|im_start|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end|>",
    "<|user|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "</s>",
    "[INST]",
)
# "... So the answer is 18. Q: Tom has ..." -- a next question started on the same line.
_INLINE_QUESTION = re.compile(r"(?<=[.!?])[ \t]+Q:[ \t]")
# "\n\nQuestion 2: ...", "\nProblem 3." -- a numbered next question.
_NUMBERED_QUESTION = re.compile(r"\n\s*(?:Q|Question|Problem)[ \t]*\d+[ \t]*[:.)]")


def cut_completion(text: str, stop: Iterable[str] = ()) -> str:
    """The completion up to its first stop sequence or next-question / chat-turn marker.

    A marker counts only once some answer text precedes it (a completion that *starts* with
    "Question:" is kept); a whitespace-only stop sequence such as "\\n\\n" is ignored while
    it lies in the completion's leading whitespace, as a model's leading newline is not an end.
    """
    content_start = len(text) - len(text.lstrip())
    cut = len(text)
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and not s.strip():
            while 0 <= i < content_start:
                i = text.find(s, i + 1)
        if 0 <= i < cut:
            cut = i
    for marker in CUT_MARKERS:
        i = text.find(marker, content_start)
        while i >= 0 and not text[:i].strip():
            i = text.find(marker, i + 1)
        if 0 <= i < cut:
            cut = i
    for pattern in (_INLINE_QUESTION, _NUMBERED_QUESTION):
        for m in pattern.finditer(text, content_start):
            if text[: m.start()].strip():
                cut = min(cut, m.start())
                break
    return text[:cut]


def trim_after_answer(completion: str, sentence: str, answer: str) -> str | None:
    """The completion cut right after its first statement of `answer`, or None if it has none.

    The statement is `sentence`, the task's answer sentence (`So the answer is (B).`), or,
    leniently, its last two cue words followed by the answer (`The answer is: (B)`),
    case-insensitive. Training methods cut a sampled rationale here so the text a model learns
    from ends where the answer is given, not in whatever the sampler wrote after it.
    """
    i = completion.find(sentence)
    if i >= 0:
        return completion[: i + len(sentence)]
    if not answer:
        return None
    head, _, _ = sentence.rstrip(". ").rpartition(answer)
    cue = head.rstrip().rstrip("(").split()[-2:]
    if not cue:
        return None
    bare = answer.strip("()")
    pattern = r"\s+".join(re.escape(w) for w in cue) + rf"\s*:?\s*\(?{re.escape(bare)}\)?(?![\w])\.?"
    m = re.search(pattern, completion, flags=re.IGNORECASE)
    return completion[: m.end()] if m else None


# ------------------------------------------------------------------------------ cues


@dataclass(frozen=True)
class Cue:
    """One answer cue in a text: its name, where it starts, and the text it introduces."""

    name: str
    start: int
    span: str


# "the answer is", "the final answer is", "the correct option is", "the answer (arabic numerals) is";
# a bare "option"/"choice" needs an adjective ("The last option is 12/25" names no answer), and a
# parenthetical needs two characters ("option (C) is wrong" is not a cue).
_ANSWER_IS = re.compile(
    r"\b(?:the\s+)?(?:(?:correct|final|best|right|only)\s+(?:answer|option|choice)|answer)"
    r"(?:\s*\([^()\n]{2,40}\))?[*_]*\s+(?:is|would\s+be|should\s+be|will\s+be)\b[*_]*[ \t]*:?",
    re.IGNORECASE,
)
_ANSWER_COLON = re.compile(r"\b(?:final\s+)?answer[*_]*\s*:[*_]*", re.IGNORECASE)
_HASHES = re.compile(r"####(?![ \t]*(?:final[ \t]+)?answer\b)", re.IGNORECASE)
# a markdown heading "### Final Answer" or a bold "**Final Answer**" line, the answer on the next line
_HEADING = re.compile(
    r"(?im)^[ \t]*(?:#{1,6}[ \t]*|\*\*)(?:final[ \t]+)?answer[ \t]*:?[ \t]*(?:\*\*)?[ \t]*:?[ \t]*$"
)
_ARROW = re.compile(r"-->")
_A_LINE = re.compile(r"(?m)^[ \t*_]*A[*_]*[ \t]*:")
_OUTPUT_BLOCK = re.compile(r"```output[ \t]*\n(.*?)\n?```", re.DOTALL)


def _strip_decoration(s: str) -> str:
    return s.strip().strip("*_:").strip()


def _span_after(text: str, pos: int) -> str:
    """The rest of the line after `pos` (the next non-blank line when that is blank); a line
    ending in "=" continues onto the next non-blank line ("$192 x 12 =\\n\\n$2,304")."""
    lines: list[str] = []
    end = pos - 1
    first = True
    while True:
        start = pos if first else end + 1
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        first = False
        if _strip_decoration(line):
            lines.append(line)
            if not line.rstrip().endswith("="):
                break
        if end < 0:
            break
    return " ".join(lines)


def find_cues(text: str) -> list[Cue]:
    """Every answer cue in text, in order of position (text should already be cut)."""
    cues: list[Cue] = []
    for m in _ANSWER_IS.finditer(text):
        cues.append(Cue("answer is", m.start(), _span_after(text, m.end())))
    for m in _ANSWER_COLON.finditer(text):
        cues.append(Cue("answer:", m.start(), _span_after(text, m.end())))
    for m in _HASHES.finditer(text):
        cues.append(Cue("####", m.start(), _span_after(text, m.end())))
    for m in _HEADING.finditer(text):
        cues.append(Cue("answer:", m.start(), _span_after(text, m.end())))
    for m in _ARROW.finditer(text):
        span = _span_after(text, m.end())
        cues.append(Cue("-->", m.start(), re.sub(r"\s*\bEND\b.*$", "", span)))
    for start, _end, content in iter_boxed(text):
        cues.append(Cue("boxed", start, content))
    # "A: 18" counts only as the text's last line: earlier "A:" lines are echoed exemplars.
    lines = text.rstrip().rsplit("\n", 1)
    last_start = 0 if len(lines) == 1 else len(lines[0]) + 1
    m = _A_LINE.match(text, last_start)
    if m:
        cues.append(Cue("A:", m.start(), _span_after(text, m.end())))
    cues.sort(key=lambda c: c.start)
    return cues


@dataclass(frozen=True)
class Parsed:
    """What one span says: the answer as written, its normal form and value; or a hedge."""

    raw: str
    normalized: str
    value: object = None
    #: True when the span names more than one answer ("(A) or (B)", "Yes or No", "18 or 20").
    hedge: bool = False


def _hedge(first: Parsed, second: Parsed, joiner: str) -> Parsed:
    return Parsed(f"{first.raw}{joiner}{second.raw}", f"{first.normalized}|{second.normalized}", None, hedge=True)


#: Words a model puts between the cue and the answer ("the answer is most likely (B)").
_FILLER = re.compile(
    r"^(?:(?:therefore|thus|so|hence|clearly|definitely|certainly|simply|probably|most\s+likely|likely|"
    r"possibly|perhaps|either|indeed|actually|then|just|that|to\s+be|the\s+letter|the\s+option|the\s+choice|"
    r"letter|option|choice)\b[\s,:]*)+",
    re.IGNORECASE,
)
#: A cue followed by one of these gives no answer; earlier cues are then not consulted.
_REFUSAL = re.compile(
    r"^(?:it\s+|that\s+|this\s+)?(?:is\s+)?(?:depend|dependent|impossible|not\b|unclear|unknown|uncertain|"
    r"undetermin|indetermin|inconclusive|ambiguous|cannot|can't|can\s+not|none\b|neither\b|both\b|based\s+on|"
    r"more\s+complicated|hard\s+to|difficult\s+to|the\s+same\b|unanswerable|undefined|n/a\b|"
    r"no\s+(?:answer|solution|way|correct))",
    re.IGNORECASE,
)


def _clean_span(span: str) -> str:
    s = _strip_decoration(clean_latex(span)).replace("$", "")
    return _FILLER.sub("", s).strip().lstrip("*_:\"'`").strip()


def is_refusal(span: str) -> bool:
    """True when a cue's span declines to answer ("dependent on ...", "impossible to say", "not clear")."""
    return bool(_REFUSAL.match(normalize_text(_clean_span(span))))


# ------------------------------------------------------------------------------ numbers


#: Digits a number may have and still be read as a value. Python refuses to turn longer integers
#: into text (`sys.get_int_max_str_digits`, 4300 by default) because the conversion takes
#: quadratic time: a million-digit number would take half a minute. A longer number in a
#: completion is kept as text (`Number.long_form`): it still answers, and it equals no short number.
MAX_NUMBER_DIGITS = 4300


def canonical_numeral(digits: str) -> str:
    """One spelling per decimal value, sign left out: `0012.500` -> `12.5`, `1,234` -> `1234`, `.5` -> `0.5`."""
    whole, _, decimals = digits.replace(",", "").partition(".")
    whole, decimals = whole.lstrip("0") or "0", decimals.rstrip("0")
    return f"{whole}.{decimals}" if decimals else whole


def numeral_size(canonical: str) -> int:
    """Digits a canonical numeral's exact value needs: its integer digits plus its decimals
    (`0.0001` needs 4: its value is 1/10**4)."""
    whole, _, decimals = canonical.partition(".")
    return (0 if whole == "0" else len(whole)) + len(decimals)


def digit_limit() -> int:
    """The most digits a number may have to be read as a value (lower if this interpreter's own limit is)."""
    configured = sys.get_int_max_str_digits()  # 0 means unlimited
    return min(MAX_NUMBER_DIGITS, configured) if configured else MAX_NUMBER_DIGITS


@dataclass(frozen=True)
class Number:
    """A number found in text: the text it came from and its exact value."""

    raw: str
    #: The exact value; None for a number longer than `digit_limit()` digits (see `long_form`).
    value: Fraction | None
    percent: bool = False
    #: A number too long to hold as a value, as canonical text (`-7777...`, `1/3333...`): it is
    #: compared as text, so it equals only the same number written as long.
    long_form: str | None = None

    @property
    def normalized(self) -> str:
        """Canonical text: `18`, `-0.5`, `1/3`, with `%` kept when it was written."""
        text = self.long_form if self.value is None else format_number(self.value)
        return f"{text}{'%' if self.percent else ''}"

    @property
    def digits(self) -> int:
        """How many digits the number has (integer digits plus decimals; both sides of a fraction)."""
        text = self.long_form if self.value is None else format_number(self.value)
        return sum(numeral_size(part) for part in str(text).lstrip("-").split("/"))


def format_number(value: Fraction) -> str:
    """`18`, `0.75`, `-2.5`, or `1/3` when no finite decimal exists."""
    if value.denominator == 1:
        return _int_text(value.numerator)
    d, twos, fives = value.denominator, 0, 0
    while d % 2 == 0:
        d, twos = d // 2, twos + 1
    while d % 5 == 0:
        d, fives = d // 5, fives + 1
    if d != 1:
        return f"{_int_text(value.numerator)}/{_int_text(value.denominator)}"
    # integer arithmetic, so every decimal is exact (a Decimal division rounds past 28 digits)
    places = max(twos, fives)
    scaled = value.numerator * 10**places // value.denominator
    text = _int_text(abs(scaled)).rjust(places + 1, "0")
    s = f"{'-' if scaled < 0 else ''}{text[:-places]}.{text[-places:]}"
    return s.rstrip("0").rstrip(".")


def _int_text(n: int) -> str:
    """str(n), also for an integer beyond this interpreter's int-to-text limit (a computed value can be)."""
    try:
        return str(n)
    except ValueError:  # Decimal converts without the limit (the value's size was already paid for)
        return format(Decimal(n), "f")


_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-+](?=[$\d.]))?(?P<cur>\$\s?)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:/(?P<den>\d+(?:\.\d+)?)(?![\d/]))?"
    r"(?P<pct>\s?%|\s?percent\b)?"
)
# A number that is the left side of a calculation ("5 + 3 = 8"): the answer is after the "=".
_OPERATOR_AFTER = re.compile(r"\s*(?:[-+*/×÷x^]|\\times|\\cdot|\\div)\s*[$\d(]")
_OR_NUMBER = re.compile(r"\s*,?\s*or\s+")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+(?:\.\d+)?)\s*\}\s*\{\s*(\d+(?:\.\d+)?)\s*\}")
_LATEX_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)(\d)")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit|emph|mbox)\s*\{([^{}]*)\}")
_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_FRACTION_WORDS = {
    "half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4, "fourths": 4,
    "fifth": 5, "fifths": 5, "sixth": 6, "sixths": 6, "seventh": 7, "sevenths": 7, "eighth": 8, "eighths": 8,
    "ninth": 9, "ninths": 9, "tenth": 10, "tenths": 10,
}
_WORD_TOKEN = re.compile(r"[a-z]+", re.IGNORECASE)


def clean_latex(s: str) -> str:
    """Plain text for number and label parsing: `\\frac{3}{4}` -> `3/4`, `\\$` -> `$`, `{,}` -> `,`."""
    s = s.replace("\u2212", "-").replace("\u2013", "-")
    for _ in range(3):  # nested \text{\textbf{...}}
        s = _LATEX_TEXT.sub(r"\1", s)
    s = _LATEX_FRAC.sub(r"\1/\2", s)
    s = _LATEX_FRAC_SHORT.sub(r"\1/\2", s)
    s = s.replace("{,}", ",").replace("\\%", "%").replace("\\$", "$").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = re.sub(r"\\boxed\s*\{|\\fbox\s*\{", "", s)
    s = s.replace("\\(", " ").replace("\\)", " ").replace("\\[", " ").replace("\\]", " ")
    s = s.replace("**", "").replace("__", "")
    return s


def _to_number(m: re.Match[str]) -> Number | None:
    raw, percent, sign = m.group(0).strip(), bool(m.group("pct")), m.group("sign") == "-"
    num = canonical_numeral(m.group("num"))
    den = canonical_numeral(m.group("den")) if m.group("den") else None
    if den == "0":
        return None
    limit = digit_limit()
    if numeral_size(num) > limit or (den is not None and numeral_size(den) > limit):
        long_form = f"{'-' if sign and num != '0' else ''}{num}{'/' + den if den else ''}"
        return Number(raw=raw, value=None, percent=percent, long_form=long_form)
    try:
        value = Fraction(Decimal(num))
        if den is not None:
            value /= Fraction(Decimal(den))
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None
    return Number(raw=raw, value=-value if sign else value, percent=percent)


def parse_number(span: str) -> Number | None:
    """The answer number a cue introduces: the first number, or the result of a leading calculation.

    "18 dollars" -> 18; "$1,234.00." -> 1234; "5 + 3 = 8" -> 8; "3/4" -> 3/4; "25%" -> 25%;
    "five" -> 5 (number words only when the span has no digits).
    """
    got = _parse_number_span(span)
    return got.value if got is not None and not got.hedge else None  # type: ignore[return-value]


def _parse_number_span(span: str) -> Parsed | None:
    s = clean_latex(span)
    if re.match(r"^\W*not\b", s, re.IGNORECASE):
        return None
    pos = 0
    while True:
        m = _NUMBER.search(s, pos)
        if m is None:
            break
        rest = s[m.end() :]
        eq = rest.find("=")
        if eq >= 0 and (_OPERATOR_AFTER.match(rest) or not rest[:eq].strip()):
            pos = m.end() + eq + 1
            continue
        n = _to_number(m)
        if n is None:
            pos = m.end()
            continue
        first = Parsed(n.raw, n.normalized, n)
        alt = _OR_NUMBER.match(rest)
        if alt:
            m2 = _NUMBER.match(rest, alt.end())
            n2 = _to_number(m2) if m2 else None
            if n2 is not None and (n2.value, n2.long_form) != (n.value, n.long_form):
                return _hedge(first, Parsed(n2.raw, n2.normalized, n2), " or ")
        return first
    if not re.search(r"\d", s):
        n = _word_number(s)
        return Parsed(n.raw, n.normalized, n) if n else None
    return None


def _word_number(s: str) -> Number | None:
    """A number written in words at the start of s: "seventy six", "two hundred and eighty",
    "one hundred seventy-four thousand", "fifty-two point six two", "three-tenths"."""
    m = re.match(r"^[^\w]*", s)
    pos = m.end() if m else 0
    tokens = [(t.group(0).lower(), t.start(), t.end()) for t in _WORD_TOKEN.finditer(s, pos)]
    # only words separated by spaces or hyphens count as one number
    run = []
    for i, tok in enumerate(tokens):
        if i and not re.fullmatch(r"[\s-]+", s[tokens[i - 1][2] : tok[1]]):
            break
        run.append(tok)
    words = [w for w, _, _ in run]
    sign = 1
    i = 0
    if words and words[0] in ("negative", "minus"):
        sign, i = -1, 1
    total, current, seen, end = Fraction(0), Fraction(0), False, None

    def is_num(w: str) -> bool:
        return w in _UNITS or w in _TENS or w == "hundred" or w in _SCALES

    while i < len(words):
        w = words[i]
        if w in _UNITS:
            current += _UNITS[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred" and seen:
            current = (current or 1) * 100
        elif w in _SCALES and seen:
            total += (current or 1) * _SCALES[w]
            current = Fraction(0)
        elif w == "and" and seen and i + 1 < len(words) and is_num(words[i + 1]):
            i += 1
            continue
        elif w in ("point", "dot") and seen:
            digits, j = "", i + 1
            while j < len(words) and (words[j] in _UNITS and _UNITS[words[j]] < 10 or words[j] in _TENS):
                if words[j] in _TENS:
                    tens = _TENS[words[j]] // 10
                    if j + 1 < len(words) and words[j + 1] in _UNITS and 0 < _UNITS[words[j + 1]] < 10:
                        digits += f"{tens}{_UNITS[words[j + 1]]}"
                        j += 1
                    else:
                        digits += f"{tens}0"
                else:
                    digits += str(_UNITS[words[j]])
                j += 1
            if not digits:
                return None
            current += Fraction(int(digits), 10 ** len(digits))
            end, i = run[j - 1][2], j
            break
        elif w in _FRACTION_WORDS and seen:
            value = (total + current) / _FRACTION_WORDS[w]
            return Number(raw=s[pos : run[i][2]].strip(), value=sign * value)
        else:
            break
        seen = True
        end = run[i][2]
        i += 1
    if not seen or end is None:
        return None
    return Number(raw=s[pos:end].strip(), value=sign * (total + current))


def last_number(text: str) -> Number | None:
    """The last number in text (the fallback when no answer cue parses)."""
    for m in reversed(list(_NUMBER.finditer(clean_latex(text)))):
        n = _to_number(m)
        if n is not None:
            return n
    return None


def parse_gold_number(answer: str) -> Number | None:
    """A gold numeric answer (`1,234`, `-3`, `0.5`, `3/4`, `25%`, `\\frac{1}{2}`), or None."""
    s = clean_latex(answer).strip().strip("$").strip()
    m = _NUMBER.fullmatch(s.rstrip("."))
    return _to_number(m) if m else None


def numbers_equal(pred: Number, gold: Number) -> bool:
    """Equal values, compared as written: `25%` = 25 and `18.00` = 18, but `70%` != 0.7.

    A number too long to hold as a value equals only the same long number (as canonical text).
    """
    if pred.value is None or gold.value is None:
        return pred.long_form is not None and pred.long_form == gold.long_form
    return pred.value == gold.value


# ------------------------------------------------------------------------------ choices


def normalize_label(label: str) -> str:
    """`(c)` / ` C ` / `[C]` -> `C`; numeric labels stay digits."""
    return label.strip().strip("()[]{}.:").strip().upper()


def normalize_text(s: str) -> str:
    """Lowercase, quotes and markdown stripped, whitespace collapsed, trailing punctuation removed."""
    s = clean_latex(s).replace("$", "")
    s = re.sub(r"[\"'“”‘’`*_]", "", s.lower())
    s = re.sub(r"\s+", " ", s).strip()
    return s.strip(" .,;:!?").strip()


_PAREN_LABEL = re.compile(r"[(\[]\s*([A-Za-z]|\d{1,2})\s*[)\]]")
_LABEL_START = re.compile(r"[(\[]\s*([A-Za-z]|\d{1,2})\s*[)\]]|([A-Z]|\d{1,2}|[b-hj-z])(?![\w])")
_JOINER = re.compile(r"\s*(?:,\s*(?:(?:or|and)\s+)?|/\s*|&\s*|(?:or|and)(?:\s+then)?\s+)(?:option\s+|choice\s+)?", re.IGNORECASE)


def _label_at(s: str, pos: int, labels: Sequence[str] | None) -> tuple[str, str, int] | None:
    """(raw, label, end) of an option label written at s[pos:]: "(C)", "C.", "C," -- not "A bird"."""
    m = _LABEL_START.match(s, pos)
    if not m:
        return None
    if m.group(2):
        after = s[m.end() :]
        if m.group(2).islower() and not re.match(r"\s*(?:[.)\]]|$)", after):
            return None
        # "A bird ..." is an article; "A or B" / "A and C" still name labels
        if re.match(r"\s+[a-z]", after) and not re.match(r"\s+(?:or|and)\s+(?:\(?[A-Z]\b|\d)", after):
            return None
    lab = (m.group(1) or m.group(2)).upper()
    if labels is not None and lab not in labels:
        return None
    return m.group(0), lab, m.end()


def _option_at(text: str, choices: Sequence[tuple[str, str]]) -> tuple[str, str, int] | None:
    """(option text, label, length) of the longest option text that `text` (normalized) starts with."""
    best: tuple[str, str, int] | None = None
    for label, option in choices:
        opt = normalize_text(option)
        if opt and (text == opt or (text.startswith(opt) and not text[len(opt)].isalnum())):
            if best is None or len(opt) > best[2]:
                best = (option, normalize_label(label), len(opt))
    return best


def parse_choice(span: str, choices: Sequence[tuple[str, str]] | None, strict: bool = False) -> Parsed | None:
    """The option a cue's span names, or None; a hedge when it names two ("(A) or (B)").

    Accepts "(C)", "C.", "option C", "\\boxed{C}", the option's text ("12/25/1937"), and unless
    `strict`, a parenthesized label later in the same sentence ("that Alice has the ball (C)").
    `choices` are (label, text) pairs; without them any single letter or number is a label.
    """
    s = _clean_span(span)
    labels = [normalize_label(lab) for lab, _ in choices] if choices else None
    first: Parsed | None = None
    rest = ""
    got = _label_at(s, 0, labels)
    if got:
        first, rest = Parsed(got[0], got[1], got[1]), s[got[2] :]
    elif choices:
        norm = normalize_text(s)
        opt = _option_at(norm, choices)
        if opt:
            first, rest = Parsed(opt[0], opt[1], opt[1]), norm[opt[2] :]
    if first is not None:
        j = _JOINER.match(rest)
        if j:
            second = _label_at(rest, j.end(), labels)
            if second is None and choices:
                opt = _option_at(normalize_text(rest[j.end() :]), choices)
                second = (opt[0], opt[1], 0) if opt else None
            if second is not None and second[1] != first.normalized:
                return _hedge(first, Parsed(second[0], second[1], second[1]), rest[: j.end()])
        return first
    if strict:
        return None
    sentence = re.split(r"(?<=[.!?])\s", s, maxsplit=1)[0]
    found = [(m.group(0), m.group(1).upper()) for m in _PAREN_LABEL.finditer(sentence)]
    found = [(raw, lab) for raw, lab in found if labels is None or lab in labels]
    distinct = list(dict.fromkeys(lab for _, lab in found))
    if len(distinct) == 1:
        return Parsed(found[0][0], distinct[0], distinct[0])
    if len(distinct) > 1:
        return Parsed(sentence, "|".join(distinct), None, hedge=True)
    return None


def lone_label(text: str, choices: Sequence[tuple[str, str]] | None) -> Parsed | None:
    """The label when the whole completion is just one ("(B)", " B."), as direct prompting gives."""
    s = _strip_decoration(text).rstrip(".")
    m = re.fullmatch(r"[(\[]?\s*([A-Za-z]|\d{1,2})\s*[)\]]?", s)
    if not m or (len(s) == 1 and s.islower()):
        return None
    lab = m.group(1).upper()
    labels = [normalize_label(lab_) for lab_, _ in choices] if choices else None
    return Parsed(s, lab, lab) if labels is None or lab in labels else None


# ------------------------------------------------------------------------------ text answers


def _starts_with_word(s: str, word: str) -> bool:
    return s.startswith(word) and (len(s) == len(word) or not (s[len(word)].isalnum() or s[len(word)] == "-"))


def parse_closed_text(span: str, answer_set: Sequence[str], strict: bool = False) -> Parsed | None:
    """The closed-set word a span states (case-insensitive), a hedge ("Yes or No"), or None.

    The member must start the span ("True, because ...") or, unless `strict`, be the only member
    the span's line states before punctuation ("3. Yes, it would"). "not valid" is read as "invalid" when the
    set has it, and never as "valid".
    """
    s = normalize_text(_clean_span(span))
    members = sorted({normalize_text(a): a for a in answer_set}.items(), key=lambda kv: -len(kv[0]))

    def member_at(text: str) -> tuple[str, str, int] | None:
        neg = re.match(r"not\s+", text)
        if neg:
            rest = text[neg.end() :]
            for norm, _orig in members:
                if _starts_with_word(rest, norm):
                    for prefix in ("in", "un", "non", "non-"):
                        for n2, o2 in members:
                            if n2 == prefix + norm:
                                return text[: neg.end() + len(norm)], o2, neg.end() + len(norm)
            return None
        for norm, orig in members:
            if _starts_with_word(text, norm):
                return norm, orig, len(norm)
        return None

    got = member_at(s)
    if got:
        first = Parsed(got[0], normalize_text(got[1]), got[1])
        rest = s[got[2] :]
        j = _JOINER.match(rest)
        if j:
            second = member_at(rest[j.end() :])
            if second and normalize_text(second[1]) != first.normalized:
                return _hedge(first, Parsed(second[0], normalize_text(second[1]), second[1]), rest[: j.end()])
        return first
    if strict or s.startswith("not "):
        return None
    found: dict[str, str] = {}
    for norm, orig in members:
        for m in re.finditer(rf"(?<![\w-]){re.escape(norm)}(?=\s*(?:[.,;:!?)]|$))", s):
            if not re.search(r"\bnot\s+$", s[: m.start()]):
                found[orig] = norm
    if len(found) == 1:
        orig, norm = next(iter(found.items()))
        return Parsed(norm, normalize_text(orig), orig)
    return None


def open_text_tokens(s: str) -> list[str]:
    """Tokens of a free-form answer: words split on whitespace and commas, lowercased."""
    s = normalize_text(s)
    return [t.strip("\"'") for t in re.split(r"[\s,]+", s) if t.strip("\"'")]


def parse_open_text(span: str) -> Parsed | None:
    """A free-form answer: the span's first sentence, decoration and trailing period removed."""
    s = _strip_decoration(clean_latex(span))
    s = re.split(r"\.(?:\s|$)", s, maxsplit=1)[0]
    s = s.strip().strip("*_\"'`$").strip()
    return Parsed(s, " ".join(open_text_tokens(s)), s) if s else None


def open_text_equal(pred: str, gold: str) -> bool:
    """Token sequences equal; for symbol-only golds (dyck brackets) whitespace is ignored."""
    p, g = open_text_tokens(pred), open_text_tokens(gold)
    if p == g:
        return True
    if not re.search(r"\w", gold):
        return re.sub(r"\s+", "", pred.strip().rstrip(".")) == re.sub(r"\s+", "", gold.strip())
    return False


# ------------------------------------------------------------------------------ MATH-ish strings


def normalize_math(s: str) -> str:
    """A light LaTeX normal form for string comparison (the `math_equiv` verifier does the real work)."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:left|right|!|,|;|:)", "", s)
    s = _LATEX_TEXT.sub(r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("%", "")
    s = re.sub(r"\s+", "", s).rstrip(".")
    return s


def parse_math(span: str) -> Parsed | None:
    """A LaTeX answer: the last `\\boxed{}` in the span, else its first `$...$`, else its first sentence."""
    boxed = last_boxed(span)
    if boxed is not None:
        t = boxed
    else:
        m = re.search(r"\$([^$]+)\$", span)
        t = m.group(1) if m else re.split(r"\.(?:\s|$)", _strip_decoration(span), maxsplit=1)[0]
    t = t.strip()
    return Parsed(t, normalize_math(t), t) if t else None


# ------------------------------------------------------------------------------ extraction


@dataclass(frozen=True)
class Extraction:
    """The answer found in a completion: as written, normalized, and how it was found."""

    raw: str
    normalized: str
    #: The cue that introduced it ("answer is", "####", "boxed", ...), "whole", "output" or "last number".
    via: str
    #: The parsed value (a Number, a choice label, a closed-set member, the answer text); None
    #: when the completion hedges or declines.
    value: object = None
    #: "answer", "hedge" (names more than one answer) or "refusal" (the cue declines to answer).
    status: str = "answer"


def extract_answer(
    text: str,
    kind: str,
    *,
    choices: Sequence[tuple[str, str]] | None = None,
    answer_set: Sequence[str] | None = None,
    stop: Iterable[str] = (),
    last_number_fallback: bool = True,
) -> Extraction | None:
    """The answer of `kind` ("number", "choice", "text", "math") that a completion gives, or None.

    The completion is cut first. The last cue whose span parses wins; a span that declines
    ("dependent on ...") ends the search. Then a completion that is nothing but an answer, a
    final code-output block, and for numbers only the last number of the cut text.
    """
    cut = cut_completion(text, stop)
    for cue in reversed(find_cues(cut)):
        if not _strip_decoration(cue.span):
            continue
        got = parse_span(cue.span, kind, choices, answer_set, strict=True)
        if got is not None:
            return _extraction(got, cue.name)
        if is_refusal(cue.span):
            said = re.split(r"(?<=[.!?])\s", cue.span.strip(), maxsplit=1)[0]
            return Extraction(said, "", cue.name, None, "refusal")
        got = parse_span(cue.span, kind, choices, answer_set)
        if got is not None:
            return _extraction(got, cue.name)
    whole = _whole_answer(cut, kind, choices, answer_set)
    if whole is not None:
        return _extraction(whole, "whole")
    outputs = _OUTPUT_BLOCK.findall(cut)
    if outputs and "\n" not in outputs[-1].strip():
        got = parse_span(outputs[-1], kind, choices, answer_set)
        if got is not None:
            return _extraction(got, "output")
    if kind == "number" and last_number_fallback:
        n = last_number(cut)
        if n is not None:
            return Extraction(n.raw, n.normalized, "last number", n)
    return None


def _extraction(p: Parsed, via: str) -> Extraction:
    return Extraction(p.raw, p.normalized, via, p.value, "hedge" if p.hedge else "answer")


def parse_span(
    span: str,
    kind: str,
    choices: Sequence[tuple[str, str]] | None = None,
    answer_set: Sequence[str] | None = None,
    strict: bool = False,
) -> Parsed | None:
    """What a cue's span says as an answer of `kind`, or None; `strict` reads only its start."""
    if kind == "number":
        return _parse_number_span(span)
    if kind == "choice":
        return parse_choice(span, choices, strict)
    if kind == "text":
        return parse_closed_text(span, answer_set, strict) if answer_set else parse_open_text(span)
    if kind == "math":
        return parse_math(span)
    raise ValueError(f"unknown answer kind {kind!r}")


def _whole_answer(
    cut: str, kind: str, choices: Sequence[tuple[str, str]] | None, answer_set: Sequence[str] | None
) -> Parsed | None:
    """A completion that is only an answer ("(B)", "True", "18", "] ) >") with no cue."""
    s = cut.strip()
    if not s or "\n" in s:
        return None
    if kind == "choice":
        return lone_label(s, choices)
    if kind == "number":
        n = parse_gold_number(s)
        return Parsed(n.raw, n.normalized, n) if n else None
    if kind == "text" and answer_set:
        norm = normalize_text(s)
        for a in answer_set:
            if normalize_text(a) == norm:
                return Parsed(s, norm, a)
        return None
    # a bare word list or bracket sequence, not a line of reasoning ("We now have: (1) arson < ...")
    if kind == "text" and (re.fullmatch(r"[\w\s,'&-]+\.?", s) or re.fullmatch(r"[\s()\[\]{}<>]+", s)):
        return parse_open_text(s)
    return None
