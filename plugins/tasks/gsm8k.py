"""GSM8K: grade-school math word problems (Cobbe et al. 2021), answers after `#### `."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from cotkit import AnswerKind, DataError, Example, load_rows, read_jsonl

from .common import CotTask, Exemplar, normalize_number, task_data

_CALCULATOR = re.compile(r"<<[^<>]*>>")


def split_solution(answer: str, where: str) -> tuple[str, str]:
    """(rationale without calculator annotations, normalized final number) of a GSM8K `answer` field."""
    if not isinstance(answer, str):
        raise DataError(f"{where}: field 'answer' must be a string, got {type(answer).__name__}")
    head, sep, tail = answer.rpartition("####")
    if not sep:
        # A user row may hold just the number; anything else lacks the publisher's `#### N` line.
        try:
            return "", normalize_number(answer, f"{where}: field 'answer'")
        except DataError:
            raise DataError(f"{where}: field 'answer' has no '#### <number>' line") from None
    return _CALCULATOR.sub("", head).strip(), normalize_number(tail, f"{where}: field 'answer' after '####'")


class GSM8K(CotTask):
    """GSM8K grade-school math word problems (train 7,473 / test 1,319)."""

    name = "gsm8k"
    splits = ("train", "test")
    train_split = "train"
    heldout_split = "test"
    row_fields = ("question", "answer")
    HUB: ClassVar[tuple[str, str]] = ("openai/gsm8k", "main")

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """`gsm8k/<split>.jsonl` under the data dir (or the official repo layout), else the hub."""
        return load_rows(
            f"gsm8k {split} (hub {self.HUB[0]})",
            self.data_dir,
            [f"gsm8k/{split}.jsonl", f"grade_school_math/data/{split}.jsonl"],
            read_jsonl,
            [(*self.HUB, split)],
        )

    def make_example(self, row: dict[str, Any], index: int, split: str | None, where: str) -> Example:
        """Question, the number after `####`, and the worked solution as rationale."""
        rationale, answer = split_solution(row["answer"], where)
        return Example(
            id=self.default_id(index, split),
            task=self.name,
            question=str(row["question"]).strip(),
            answer=answer,
            answer_kind=AnswerKind.NUMBER,
            rationale=rationale or None,
            raw=row,
        )

    def exemplars(self, example: Example) -> list[Exemplar]:
        """The 8 exemplars of Wei et al. 2022."""
        return [
            Exemplar(
                Example(f"gsm8k/fewshot/{i}", self.name, d["question"], str(d["answer"]), AnswerKind.NUMBER),
                d["rationale"],
            )
            for i, d in enumerate(task_data("gsm8k", "fewshot.yaml"))
        ]
