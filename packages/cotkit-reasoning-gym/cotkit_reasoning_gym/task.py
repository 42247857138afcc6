"""`rg:<dataset>`: one reasoning-gym generator as a cotkit task, with generated train/dev/held-out splits.

Prompts follow the built-in tasks' `Q: ... A: ...` layout ending in "The answer is X.", so every
method and verifier reads these answers the same way. Few-shot exemplars come from the generator
(their own seed, apart from every split). reasoning-gym writes no chain of thought, so an exemplar
answers directly ("The answer is 41."), except for a chain of sums (`chain_sum`,
`basic_arithmetic` with + and -), whose exemplars work the sum left to right from the expression in
the item's metadata ("4 + 7 = 11. 11 - 3 = 8. The answer is 8.").
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from cotkit import (
    AnswerKind,
    ConfigError,
    Example,
    Prompt,
    Task,
    UnknownNameError,
    check_styles,
    hint_format,
    require_fields,
)

from .generators import (
    DATASETS,
    RGConfig,
    draw_split,
    generator_options,
    make_generator,
    running_sum_rationale,
    task_config_class,
)

ZEROSHOT_TRIGGER = "Let's think step by step."
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class ReasoningGym(Task):
    """reasoning-gym procedural generators (rg:<dataset>), difficulty options as -O KEY=VALUE; generated splits."""

    name = "rg"
    splits = ("train", "dev", "heldout")
    train_split = "train"
    heldout_split = "heldout"
    eval_split = "heldout"
    subsets = DATASETS
    default_verifier = "rg_score"
    row_fields = ("question", "answer")
    Config = RGConfig
    cue: ClassVar[str] = "The answer is"
    #: Regenerated with `python -m cotkit.lmeval.yamls packages/cotkit-reasoning-gym/cotkit_reasoning_gym/lm_eval rg`.
    lm_eval_yamls = str(Path(__file__).parent / "lm_eval")
    #: The order splits are drawn in: an earlier split's questions are never repeated by a later one.
    DRAW_ORDER: ClassVar[tuple[str, ...]] = ("fewshot", "heldout", "dev", "train")

    def __init__(self, subset: str | None = None, *args: Any, **kwargs: Any):
        if subset in self.subsets:
            # this generator's own fields become typed options of this task object
            self.Config = task_config_class(subset)
        super().__init__(subset, *args, **kwargs)
        if self.subset is None:
            raise ConfigError("task rg needs a generator: rg:<dataset>, e.g. rg:chain_sum (`cotkit show rg` lists them)")
        self.dataset: str = self.subset
        self.generator_options = generator_options(self.dataset, asdict(self.config))
        make_generator(self.dataset, self.generator_options, seed=0, size=1)  # refuse bad options now, not at the first split
        self._drawn: dict[str, list[dict[str, Any]]] = {}
        self._taken: set[str] = set()

    # -- data --------------------------------------------------------------------------------

    def split_size(self, split: str) -> int:
        """How many questions a split holds; `dev` is the run's dev_size, else a tenth of train (1 to 500)."""
        if split == "fewshot":
            return self.config.shots
        if split == "heldout":
            return self.config.heldout_size
        if split == "dev":
            return self.dev_size or max(1, min(500, self.config.train_size // 10))
        return self.config.train_size

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The generator's items of a split (`fewshot` too), drawn once per task object in DRAW_ORDER."""
        if split not in self.DRAW_ORDER:
            raise UnknownNameError(f"split of task {self.full_name}", split, (*self.splits, "fit"))
        for name in self.DRAW_ORDER:
            if name not in self._drawn:
                self._drawn[name] = draw_split(
                    self.dataset, self.generator_options, self.config.seed, name, self.split_size(name), self._taken
                )
            if name == split:
                return self._drawn[name]
        raise AssertionError(split)  # unreachable: split is in DRAW_ORDER

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        """A generated split; `fit` is all of `train` (dev is generated apart from it, not carved out)."""
        split = "train" if split == "fit" else split
        if split not in self.splits:
            raise UnknownNameError(f"split of task {self.full_name}", split, (*self.splits, "fit"))
        rows = self.rows(split)[:limit] if limit is not None else self.rows(split)
        return [self.make_example(row, f"{self.full_name}/{split}/{i}") for i, row in enumerate(rows)]

    def example_from_row(self, row: dict[str, Any], index: int) -> Example:
        """A user's row (`cotkit score`): `question` and `answer`, scored by this task's generator and options."""
        require_fields(row, self.row_fields, f"{self.full_name} row {index}")
        return self.make_example(row, f"{self.full_name}/row/{index}")

    def make_example(self, row: dict[str, Any], example_id: str) -> Example:
        """An Example of a generator item; the generator and its options in `meta` for the verifier."""
        answer = str(row["answer"]).strip()
        kind = AnswerKind.NUMBER if _PLAIN_NUMBER.fullmatch(answer) else AnswerKind.TEXT
        return Example(
            id=example_id,
            task=self.full_name,
            question=str(row["question"]).strip(),
            answer=answer,
            answer_kind=kind,
            meta={"dataset": self.dataset, "generator_options": dict(self.generator_options)},
            raw=row,
        )

    # -- prompts -----------------------------------------------------------------------------

    def question_text(self, example: Example, hint: bool | str = False) -> str:
        """The generator's question; a hint adds the gold answer as a sentence or in parentheses."""
        fmt = hint_format(hint)
        if fmt == "inline":
            return f"{example.question} ({example.answer})"
        if fmt == "sentence":
            return f"{example.question}\nHint: the answer is {example.answer}."
        return example.question

    def answer_sentence(self, example: Example) -> str:
        """`The answer is 41.`"""
        return f"{self.cue} {example.answer}."

    def exemplars(self) -> list[Example]:
        """The few-shot exemplars (`shots` of them), the same for every question."""
        return [self.make_example(row, f"{self.full_name}/fewshot/{i}") for i, row in enumerate(self.rows("fewshot"))]

    def exemplar_answer(self, example: Example) -> str:
        """An exemplar's answer: the running sum where the item is a chain of sums, then the answer sentence."""
        expression = (example.raw.get("metadata") or {}).get("expression")
        steps = running_sum_rationale(str(expression), example.answer) if expression else None
        return f"{steps} {self.answer_sentence(example)}" if steps else self.answer_sentence(example)

    def prompt(self, example: Example, style: str = "fewshot", hint: bool | str = False) -> Prompt:
        """`Q: ...\\nA:` prompts as the built-in tasks write them; `chat` asks for the answer sentence."""
        check_styles(style)
        if style == "bare":
            return f"Q: {self.question_text(example, hint)}\nA:"
        if style == "zeroshot":
            return f"Q: {self.question_text(example, hint)}\nA: {ZEROSHOT_TRIGGER}"
        if style == "fewshot":
            blocks = [
                f"Q: {self.question_text(ex, hint)}\nA: {self.exemplar_answer(ex)}"
                for ex in self.exemplars()
            ]
            return "\n\n".join([*blocks, f"Q: {self.question_text(example, hint)}\nA:"])
        instruction = f'Think step by step, then finish with one sentence of the form "{self.cue} X." where X is the answer.'
        if hint_format(hint):
            instruction += " The hint is the correct answer: explain step by step how to reach it."
        return [{"role": "user", "content": f"{self.question_text(example, hint)}\n\n{instruction}"}]

    def stop_sequences(self, style: str = "fewshot") -> list[str]:
        """Where a completion ends: the model starting a next question (none for chat)."""
        check_styles(style)
        return [] if style == "chat" else ["\n\nQ:", "\nQ:"]
