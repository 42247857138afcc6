"""ARC, the AI2 Reasoning Challenge (Clark et al. 2018): `arc:challenge` and `arc:easy`, as chain of thought."""

from __future__ import annotations

from typing import Any, ClassVar

from cotkit import AnswerKind, Choice, ConfigError, DataError, Example, load_rows, read_jsonl

from .common import CotTask, Exemplar, task_data

CONFIGS: dict[str, str] = {"challenge": "ARC-Challenge", "easy": "ARC-Easy"}


def parse_choices(value: Any, where: str) -> list[Choice]:
    """`{"text": [...], "label": [...]}` (the hub row format) as Choices; also accepts a list of {label, text}."""
    if isinstance(value, dict):
        labels, texts = value.get("label"), value.get("text")
        if not isinstance(labels, list) or not isinstance(texts, list):
            raise DataError(f"{where}: field 'choices' needs lists 'label' and 'text'")
        if len(labels) != len(texts):
            raise DataError(f"{where}: field 'choices' has {len(labels)} labels but {len(texts)} texts")
        pairs = list(zip(labels, texts, strict=True))
    elif isinstance(value, list) and all(isinstance(c, dict) and {"label", "text"} <= set(c) for c in value):
        pairs = [(c["label"], c["text"]) for c in value]
    else:
        raise DataError(f'{where}: field \'choices\' must be {{"label": [...], "text": [...]}}')
    if len(pairs) < 2:
        raise DataError(f"{where}: field 'choices' has {len(pairs)} options, expected 2 or more")
    choices = [Choice(str(label).strip(), str(text).strip()) for label, text in pairs]
    if len({c.label for c in choices}) != len(choices):
        raise DataError(f"{where}: field 'choices' repeats a label")
    return choices


class ARC(CotTask):
    """AI2 Reasoning Challenge science questions (arc:challenge, arc:easy) as multiple-choice chain of thought."""

    name = "arc"
    splits = ("train", "validation", "test")
    train_split = "train"
    heldout_split = "test"
    subsets = tuple(CONFIGS)
    row_fields = ("question", "choices", "answerKey")
    HUB: ClassVar[str] = "allenai/ai2_arc"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.subset is None:
            raise ConfigError("task arc needs a subset: arc:challenge or arc:easy")

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """`arc/<Config>-<split>.jsonl` under the data dir, else the hub config (ARC-Easy is hub-only here)."""
        config = CONFIGS[self.subset]
        return load_rows(
            f"arc:{self.subset} {split} (hub {self.HUB} config {config})",
            self.data_dir,
            [f"arc/{config}-{split}.jsonl", f"arc/{config}/{config}-{split}.jsonl"],
            read_jsonl,
            [(self.HUB, config, split)],
        )

    def make_example(self, row: dict[str, Any], index: int, split: str | None, where: str) -> Example:
        """Question, its options, and `answerKey` (a letter, or `1`..`4` in some rows) as the answer."""
        choices = parse_choices(row["choices"], where)
        key = str(row["answerKey"]).strip()
        if key not in {c.label for c in choices}:
            labels = ", ".join(c.label for c in choices)
            raise DataError(f"{where}: answerKey {key!r} is not one of the choice labels ({labels})")
        return Example(
            id=str(row["id"]) if row.get("id") else self.default_id(index, split),
            task=self.full_name,
            question=str(row["question"]).strip(),
            answer=key,
            answer_kind=AnswerKind.CHOICE,
            choices=choices,
            raw=row,
        )

    def exemplars(self, example: Example) -> list[Exemplar]:
        """Five ARC-Challenge train questions with cotkit's rationales (tasks/arc/fewshot.yaml)."""
        out = []
        for i, d in enumerate(task_data("arc", "fewshot.yaml")):
            ex = self.make_example(d, i, "fewshot", f"tasks/arc/fewshot.yaml item {i}")
            out.append(Exemplar(ex, d["rationale"]))
        return out
