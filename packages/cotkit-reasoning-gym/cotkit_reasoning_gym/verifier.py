"""`rg_score`: the generator's own `score_answer` on the answer a completion states.

reasoning-gym scores the answer string, not the completion, and strictly (basic_arithmetic gives
`-4.0` half credit against `-4`): so the answer is read with cotkit's extraction (the last
"The answer is ..." cue, cut at the stop sequences), a number handed over in canonical form, and
the score kept on the verdict. A completion with no answer is `unparseable`, counted apart from a
wrong answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cotkit import (
    AnswerKind,
    Example,
    Sample,
    Status,
    Verdict,
    Verifier,
    extract_answer,
    option,
)

from .generators import generator_options, make_generator


@dataclass
class RGScoreConfig:
    """Options of the `rg_score` verifier."""

    min_score: float = option(1.0, help="the generator's score (0 to 1) that counts as correct", minimum=0.0, maximum=1.0)
    last_number: bool = option(
        True, help="with no answer cue, take the last number of the cut completion (number answers only)"
    )


class RGScore(Verifier):
    """The reasoning-gym generator's own score_answer on the stated answer (rg:<dataset> tasks)."""

    name = "rg_score"
    Config = RGScoreConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._generators: dict[str, Any] = {}

    def verify(self, samples: list[Sample]) -> list[Verdict]:
        """One verdict per sample, in order; a sample that cannot be scored gets an `error` verdict."""
        return [self._verify_alone(s) for s in samples]

    def _verify_alone(self, sample: Sample) -> Verdict:
        try:
            return self.verify_one(sample)
        except Exception as e:  # a generator's scorer failing on one row costs that row only
            return Verdict(Status.ERROR, reason=f"rg_score failed on this row: {type(e).__name__}: {str(e)[:200]}", score=0.0)

    def verify_one(self, sample: Sample) -> Verdict:
        """The verdict for one sample: unparseable, or correct/incorrect by the generator's score."""
        if not isinstance(sample, Sample) or not isinstance(sample.example, Example):
            return Verdict(Status.ERROR, reason="expected a Sample of an rg:<dataset> example", score=0.0)
        ex = sample.example
        if not ex.meta.get("dataset"):
            return Verdict(Status.ERROR, reason=f"example {ex.id} is not from an rg:<dataset> task", score=0.0)
        if not isinstance(ex.answer, str) or not ex.answer.strip():
            return Verdict(Status.ERROR, reason=f"example {ex.id}: gold answer is empty", score=0.0)
        if not isinstance(sample.completion, str):
            return Verdict(Status.ERROR, reason=f"completion is {type(sample.completion).__name__}, not a string", score=0.0)
        kind = AnswerKind(ex.answer_kind)
        got = extract_answer(
            sample.completion,
            kind.value,
            stop=[s for s in (sample.stop or []) if isinstance(s, str)],
            last_number_fallback=self.config.last_number,
        )
        if got is None:
            return Verdict(Status.UNPARSEABLE, reason="no answer found", score=0.0)
        if got.status == "refusal":
            return Verdict(Status.UNPARSEABLE, extracted=got.raw, reason=f"the {got.via!r} cue gives no answer", score=0.0)
        if got.status == "hedge":
            return Verdict(Status.INCORRECT, extracted=got.raw, normalized=got.normalized, reason="names more than one answer", score=0.0)
        answer = got.normalized if kind is AnswerKind.NUMBER else got.raw.strip()
        score = float(self.generator(ex).score_answer(answer, ex.raw))
        reason = "no answer cue; took the last number" if got.via == "last number" else None
        status = Status.CORRECT if score >= self.config.min_score else Status.INCORRECT
        return Verdict(status, extracted=got.raw, normalized=answer, reason=reason, score=score)

    def generator(self, example: Example) -> Any:
        """The example's generator with its options (built once per generator and options)."""
        dataset = example.meta["dataset"]
        options = generator_options(dataset, example.meta.get("generator_options") or {})
        key = json.dumps([dataset, options], sort_keys=True, default=str)
        if key not in self._generators:
            self._generators[key] = make_generator(dataset, options, seed=0, size=1)
        return self._generators[key]
