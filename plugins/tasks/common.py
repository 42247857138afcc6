"""What the built-in tasks share: prompt assembly for every style, hints, numbers, carving, data files.

A task describes its format (how a question is shown, its few-shot exemplars, its answer cue);
`CotTask` turns that into the `fewshot`, `bare`, `zeroshot` and `chat` prompts, with or without a
hint. `bare` is the few-shot prompt's last block alone (`Q: ...\\nA:`): what STaR's reference code
trains on and prompts its fine-tuned models with.

A hint gives the gold answer in one of two formats. Multiple choice marks the correct option
` (CORRECT)` in both, as STaR's reference does; any other answer is either a sentence after the
question (`sentence`, cotkit's: `Hint: the answer is 72.`) or the answer in parentheses appended to
the question (`inline`, the reference's GSM8K hint: `... in April and May? (72)`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from cotkit import (
    AnswerKind,
    Choice,
    DataError,
    Example,
    Prompt,
    Task,
    UnknownNameError,
    check_styles,
    hint_format,
    require_fields,
    resolve_data_dir,
)

ZEROSHOT_TRIGGER = "Let's think step by step."
#: Where a completion in a `Q: ... A:` prompt ends: the model starting the next question.
QA_STOPS = ["\n\nQ:", "\nQ:"]
CORRECT_MARK = " (CORRECT)"

_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


def normalize_number(text: str | float | int, where: str) -> str:
    """A gold number in canonical form: no commas, `$` or spaces; `1,234.00` -> `1234`, `-0.50` -> `-0.5`."""
    if isinstance(text, bool):
        raise DataError(f"{where}: expected a number, got {text!r}")
    if isinstance(text, (int, float)):
        from decimal import Decimal

        text = format(Decimal(repr(text)), "f")
    s = str(text).strip().replace(",", "").replace("$", "").replace(" ", "")
    if not _NUMBER.fullmatch(s):
        raise DataError(f"{where}: expected a number, got {str(text)!r}")
    neg = s.startswith("-")
    s = s.lstrip("-")
    whole, _, frac = s.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    return f"-{out}" if neg and out != "0" else out


def carve_indices(n: int, size: int, seed: str) -> set[int]:
    """A seeded set of `size` indices out of range(n); the same for the same (n, size, seed) everywhere."""
    return set(random.Random(seed).sample(range(n), size))


def read_text(path: Path) -> str:
    """A UTF-8 text file; an unreadable file raises DataError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e


@cache
def task_data(*parts: str) -> Any:
    """A YAML file shipped in `cotkit_tasks` (few-shot exemplars, tables), parsed once."""
    from importlib.resources import files

    import yaml

    resource = files("cotkit_tasks").joinpath(*parts)
    try:
        return yaml.safe_load(resource.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError(f"cotkit task data file {'/'.join(parts)} is missing from the installation") from e


def format_options(choices: Sequence[Choice], mark: str | None = None) -> str:
    """`Options:` then one `(L) text` line per choice; the `mark` label gets ` (CORRECT)`."""
    lines = ["Options:"]
    for c in choices:
        lines.append(f"({c.label}) {c.text}{CORRECT_MARK if c.label == mark else ''}")
    return "\n".join(lines)


def mark_option_line(text: str, label: str) -> str:
    """Append ` (CORRECT)` to the `(label) ...` option line inside a question that lists its options."""
    pattern = re.compile(rf"^(\({re.escape(label)}\)[^\n]*)$", re.MULTILINE)
    matches = list(pattern.finditer(text))
    if not matches:
        raise DataError(f"cannot mark option ({label}): no such option line in the question")
    m = matches[-1]  # the options block comes last in the question
    return text[: m.end()] + CORRECT_MARK + text[m.end() :]


@dataclass
class Exemplar:
    """One few-shot demonstration: an example (for its question and gold) and the text answering it."""

    example: Example
    #: The demonstration's answer text, ending in the task's answer sentence.
    rationale: str
    #: What separates the answer prefix (`A:`) from the rationale.
    sep: str = " "


class CotTask(Task):
    """A task whose prompts are `Q: ... A: ...` chains of thought ending in an answer sentence.

    Subclasses implement `load_rows` / `make_example` / `exemplars` and may override the format
    hooks (`question_text`, `fewshot_query`, `cue`, `fewshot_header`).
    """

    #: The words before the final answer in a rationale ("The answer is 18.").
    cue: ClassVar[str] = "The answer is"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.data_dir is None:
            self.data_dir = resolve_data_dir(None)  # COTKIT_DATA_DIR, for Python API users
        self._rows: dict[str, list[dict[str, Any]]] = {}

    # -- data --------------------------------------------------------------------------------

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The publisher's rows for a split, unchanged (loaded once per task object)."""
        if split not in self.splits:
            raise UnknownNameError(f"split of task {self.full_name}", split, self.splits)
        if split not in self._rows:
            self._rows[split] = self.load_rows(split)
        return self._rows[split]

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """Read a split's rows from the data directory or the hub."""
        raise NotImplementedError

    def example_from_row(self, row: dict[str, Any], index: int) -> Example:
        """One publisher row (or a user row in the publisher's format) as an Example."""
        where = f"{self.full_name} row {index}"
        require_fields(row, self.row_fields, where)
        return self.make_example(row, index, None, where)

    def make_example(self, row: dict[str, Any], index: int, split: str | None, where: str) -> Example:
        """Build the Example; `split` is None for rows that come from users."""
        raise NotImplementedError

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        """Examples of a split; ids name the split so they stay unique across splits."""
        if split in self.splits:
            out = []
            for i, row in enumerate(self.rows(split)):
                where = f"{self.full_name} {split} row {i}"
                require_fields(row, self.row_fields, where)
                out.append(self.make_example(row, i, split, where))
            return out[:limit] if limit is not None else out
        return super().examples(split, limit)

    def default_id(self, index: int, split: str | None) -> str:
        """`task/split/index`, or `task/row/index` for user rows."""
        return f"{self.full_name}/{split or 'row'}/{index}"

    # -- prompt pieces -----------------------------------------------------------------------

    def question_text(self, example: Example, hint: bool | str = False) -> str:
        """The question as the model sees it: options listed (the correct one marked for a hint), or the hint given."""
        if example.choices:
            marked = example.answer if hint_format(hint) else None
            return f"{example.question}\n{format_options(example.choices, marked)}"
        return self.with_hint(example.question, example, hint)

    def with_hint(self, text: str, example: Example, hint: bool | str) -> str:
        """`text` with the gold answer in the asked hint format: a sentence after it, or ` (answer)` appended."""
        fmt = hint_format(hint)
        if fmt is None:
            return text
        if fmt == "inline":
            return f"{text} ({self.answer_text(example)})"
        return f"{text}\n{self.hint_sentence(example)}"

    def hint_sentence(self, example: Example) -> str:
        """The gold answer as a hint line (non-multiple-choice rationalization)."""
        return f"Hint: the answer is {self.answer_text(example)}."

    def answer_text(self, example: Example) -> str:
        """The gold answer as the answer sentence writes it (`(C)` for options)."""
        if example.answer_kind is AnswerKind.CHOICE:
            return f"({example.answer})"
        return example.answer

    def answer_sentence(self, example: Example) -> str:
        """The sentence ending a rationale, in this task's cue: `The answer is 18.`."""
        return f"{self.cue} {self.answer_text(example)}."

    def fewshot_query(self, question: str) -> str:
        """One question in the few-shot layout, ending where the model's answer starts."""
        return f"Q: {question}\nA:"

    def fewshot_header(self, example: Example) -> str:
        """Text before the first exemplar (a task description), or ''."""
        return ""

    def exemplars(self, example: Example) -> list[Exemplar]:
        """The few-shot demonstrations used for `example`."""
        raise NotImplementedError

    def answer_format(self, example: Example) -> str:
        """What the chat instruction asks the final sentence to look like."""
        if example.answer_kind is AnswerKind.CHOICE:
            return f'"{self.cue} (X)." where X is the letter of the correct option'
        if example.answer_kind is AnswerKind.NUMBER:
            return f'"{self.cue} N." where N is a number'
        if example.answer_set:
            return f'"{self.cue} X." where X is one of: {", ".join(example.answer_set)}'
        return f'"{self.cue} X." where X is the answer'

    # -- prompts -----------------------------------------------------------------------------

    def prompt(self, example: Example, style: str = "fewshot", hint: bool | str = False) -> Prompt:
        """The model input for `example` in a prompt style; `hint` gives the gold answer (rationalization).

        `hint` is False, True (the `sentence` format) or a format of HINT_FORMATS; a few-shot prompt
        gives its exemplars' answers in the same format, so the demonstrations show what it means.
        """
        check_styles(style)
        if style == "bare":
            return self.fewshot_query(self.question_text(example, hint))
        if style == "fewshot":
            parts = []
            header = self.fewshot_header(example)
            if header:
                parts.append(header)
            for ex in self.exemplars(example):
                parts.append(self.fewshot_query(self.question_text(ex.example, hint)) + ex.sep + ex.rationale)
            parts.append(self.fewshot_query(self.question_text(example, hint)))
            return "\n\n".join(parts)
        if style == "zeroshot":
            return f"Q: {self.question_text(example, hint)}\nA: {ZEROSHOT_TRIGGER}"
        instruction = f"Think step by step, then finish with one sentence of the form {self.answer_format(example)}."
        fmt = hint_format(hint)
        if fmt:
            given = {"sentence": "hint", "inline": "answer in parentheses after the question"}[fmt]
            given = "option marked (CORRECT)" if example.choices else given
            instruction += f" The {given} is the correct answer: explain step by step how to reach it."
        return [{"role": "user", "content": f"{self.question_text(example, hint)}\n\n{instruction}"}]

    def stop_sequences(self, style: str = "fewshot") -> list[str]:
        """Where a completion ends: the model starting a next question (none for chat)."""
        check_styles(style)
        return [] if style == "chat" else list(QA_STOPS)
