"""`exact_match`: the answer a completion states, compared with the gold answer of its task kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cotkit import (
    AnswerKind,
    Example,
    Extraction,
    Number,
    Sample,
    Status,
    Verdict,
    Verifier,
    digit_limit,
    extract_answer,
    normalize_label,
    normalize_math,
    normalize_text,
    numbers_equal,
    open_text_equal,
    option,
    parse_gold_number,
)


@dataclass
class ExactMatchConfig:
    """Options of the `exact_match` verifier."""

    last_number: bool = option(
        True, help="fall back to the last number of the cut completion when no answer cue parses (number answers only)"
    )


class ExactMatch(Verifier):
    """Task-aware exact match: numbers, option labels, closed-set words, dyck/word-list sequences."""

    name = "exact_match"
    description = "Task-aware exact match of the final answer (numbers, choices, BBH targets)"
    Config = ExactMatchConfig

    def verify(self, samples: list[Sample]) -> list[Verdict]:
        """One verdict per sample, in order; bad input gives an `error` verdict, never an exception.

        Each sample is judged on its own: whatever one completion holds, the others' verdicts stay the same.
        """
        return [self._verify_alone(s) for s in samples]

    def _verify_alone(self, sample: Sample) -> Verdict:
        try:
            return self.verify_one(sample)
        except Exception as e:  # a bug this row's content triggers costs this row only, with the cause kept
            return Verdict(Status.ERROR, reason=f"exact_match failed on this row: {type(e).__name__}: {str(e)[:200]}", score=0.0)

    def verify_one(self, sample: Sample) -> Verdict:
        """The verdict for one sample."""
        if not isinstance(sample, Sample):
            return Verdict(Status.ERROR, reason=f"expected a Sample, got {type(sample).__name__}", score=0.0)
        if not isinstance(sample.completion, str):
            return Verdict(Status.ERROR, reason=f"completion is {type(sample.completion).__name__}, not a string", score=0.0)
        ex = sample.example
        gold_problem = _check_gold(ex)
        if gold_problem:
            return Verdict(Status.ERROR, reason=gold_problem, score=0.0)
        kind = AnswerKind(ex.answer_kind).value
        choices = [(c.label, c.text) for c in ex.choices] if ex.choices else None
        stop = [s for s in (sample.stop or []) if isinstance(s, str)]
        got = extract_answer(
            sample.completion,
            kind,
            choices=choices,
            answer_set=ex.answer_set,
            stop=stop,
            last_number_fallback=self.config.last_number,
        )
        if got is None:
            return Verdict(Status.UNPARSEABLE, reason="no answer found", score=0.0)
        if got.status == "refusal":
            return Verdict(Status.UNPARSEABLE, extracted=got.raw, reason=f"the {got.via!r} cue gives no answer", score=0.0)
        if got.status == "hedge":
            reason = "names more than one answer"
            return Verdict(Status.INCORRECT, extracted=got.raw, normalized=got.normalized, reason=reason, score=0.0)
        ok = _matches(got, ex, kind, choices)
        reason = "no answer cue; took the last number" if got.via == "last number" else None
        if isinstance(got.value, Number) and got.value.value is None:
            too_long = f"the answer has {got.value.digits} digits, more than the {digit_limit()} read as a value: compared as text"
            reason = f"{reason}; {too_long}" if reason else too_long
        return Verdict(
            Status.CORRECT if ok else Status.INCORRECT,
            extracted=got.raw,
            normalized=got.normalized,
            reason=reason,
            score=1.0 if ok else 0.0,
        )


def _check_gold(ex: Any) -> str | None:
    """Why an example cannot be scored, or None."""
    if not isinstance(ex, Example):
        return f"sample has no Example (got {type(ex).__name__})"
    if not isinstance(ex.answer, str) or not ex.answer.strip():
        return f"example {ex.id}: gold answer is empty"
    try:
        kind = AnswerKind(ex.answer_kind)
    except ValueError:
        return f"example {ex.id}: unknown answer kind {ex.answer_kind!r}"
    if kind is AnswerKind.NUMBER and parse_gold_number(ex.answer) is None:
        return f"example {ex.id}: gold answer {ex.answer!r} is not a number"
    return None


def _matches(got: Extraction, ex: Example, kind: str, choices: list[tuple[str, str]] | None) -> bool:
    gold = ex.answer
    if kind == "number":
        gold_n = parse_gold_number(gold)
        return gold_n is not None and numbers_equal(got.value, gold_n)
    if kind == "choice":
        return got.normalized == _gold_label(gold, choices)
    if kind == "text":
        if ex.answer_set:
            return normalize_text(str(got.value)) == normalize_text(gold)
        return open_text_equal(str(got.value), gold)
    # math: a light string normal form, or equal numbers (`math_equiv` compares symbolically)
    if got.normalized == normalize_math(gold):
        return True
    p, g = parse_gold_number(str(got.value)), parse_gold_number(gold)
    return p is not None and g is not None and numbers_equal(p, g)


def _gold_label(gold: str, choices: list[tuple[str, str]] | None) -> str:
    """The gold option's label: `(B)` -> `B`; a gold given as the option's text maps to its label."""
    label = normalize_label(gold)
    if not choices:
        return label
    labels = [normalize_label(lab) for lab, _ in choices]
    if label in labels:
        return label
    norm = normalize_text(gold)
    for lab, text in choices:
        if normalize_text(text) == norm:
            return normalize_label(lab)
    return "\x00" + norm  # a gold that names no option can never be matched by a label
