"""The data that flows between tasks, backends, verifiers and methods."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Union

Message = dict[str, str]
#: A prompt is plain text, or chat messages that a backend renders with the model's template.
Prompt = Union[str, list[Message]]


class AnswerKind(str, enum.Enum):
    """How a gold answer is compared: it tells a verifier what to extract from a completion."""

    NUMBER = "number"  # GSM8K, SVAMP, BBH object_counting / multistep_arithmetic
    CHOICE = "choice"  # a label among `Example.choices` (ARC, BBH multiple choice)
    TEXT = "text"  # a word or phrase from a closed or open set (True/False, valid/invalid, dyck)
    MATH = "math"  # a LaTeX expression compared symbolically (MATH)


class Status(str, enum.Enum):
    """A verdict's outcome. `unparseable` means no answer was found; `error` means bad input."""

    CORRECT = "correct"
    INCORRECT = "incorrect"
    UNPARSEABLE = "unparseable"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True)
class Choice:
    """One option of a multiple-choice question."""

    label: str
    text: str


@dataclass
class Example:
    """One task question with its gold answer, in a task-independent form."""

    id: str
    task: str
    question: str
    answer: str
    answer_kind: AnswerKind
    choices: list[Choice] | None = None
    rationale: str | None = None
    #: Answers a verifier may accept besides `answer` for TEXT tasks (e.g. BBH's closed label set).
    answer_set: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: The publisher's row this example came from, unchanged (what `cotkit score` reads and writes).
    raw: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enum values as strings)."""
        return {
            "id": self.id,
            "task": self.task,
            "question": self.question,
            "answer": self.answer,
            "answer_kind": self.answer_kind.value,
            "choices": [[c.label, c.text] for c in self.choices] if self.choices else None,
            "rationale": self.rationale,
            "answer_set": self.answer_set,
            "meta": self.meta,
        }


@dataclass
class Verdict:
    """What a verifier concluded about one completion."""

    status: Status
    extracted: str | None = None
    normalized: str | None = None
    reason: str | None = None
    #: A graded score where the verifier has one (1.0/0.0 otherwise).
    score: float | None = None

    @property
    def correct(self) -> bool:
        """True only for a `correct` verdict."""
        return self.status is Status.CORRECT

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d: dict[str, Any] = {"verdict": self.status.value, "correct": self.correct, "extracted": self.extracted}
        if self.normalized is not None:
            d["normalized"] = self.normalized
        if self.reason is not None:
            d["reason"] = self.reason
        return d


@dataclass
class Sample:
    """One completion for one example, with its verdict once verified."""

    example: Example
    completion: str
    prompt: Prompt | None = None
    #: Stop sequences the completion was (or should have been) cut at; verifiers cut here first.
    stop: list[str] = field(default_factory=list)
    verdict: Verdict | None = None
    meta: dict[str, Any] = field(default_factory=dict)
