"""MATH (Hendrycks et al. 2021) by subject and level, and MATH-500 (the PRM800K evaluation subset).

Only MATH's test split is commonly shipped offline. With a local data directory, `train` is the
4,500 test problems that are not in MATH-500 (the PRM800K convention), so it overlaps `test`;
`heldout` is always the part of `test` disjoint from `train` (MATH-500 locally, all of `test`
with the hub, whose `train` is MATH's own train split).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cotkit import (
    AnswerKind,
    ConfigError,
    DataError,
    Example,
    UnknownNameError,
    last_boxed,
    load_rows,
    option,
    read_jsonl,
)

from .common import CotTask, Exemplar, task_data

#: Subject slug (the hub config name) -> the `type` / `subject` value in the publisher's rows.
SUBJECTS: dict[str, str] = {
    "algebra": "Algebra",
    "counting_and_probability": "Counting & Probability",
    "geometry": "Geometry",
    "intermediate_algebra": "Intermediate Algebra",
    "number_theory": "Number Theory",
    "prealgebra": "Prealgebra",
    "precalculus": "Precalculus",
}
HUB_MATH = "EleutherAI/hendrycks_math"
HUB_MATH500 = "HuggingFaceH4/MATH-500"
LOCAL_TEST = ["math/test.jsonl"]
LOCAL_MATH500 = ["math/math500.jsonl", "math500/test.jsonl"]


def subject_slug(name: str) -> str:
    """`Counting & Probability`, `counting-and-probability` -> `counting_and_probability`."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower().replace("&", "and"))


def parse_level(value: Any) -> int | None:
    """`Level 3`, `3` or 3 -> 3; `Level ?` (a few unrated problems) -> None."""
    m = re.fullmatch(r"(?:level\s*)?([1-5])", str(value).strip(), re.IGNORECASE)
    return int(m.group(1)) if m else None


def problem_key(problem: str) -> str:
    """A problem's text with whitespace collapsed: how MATH-500 rows are found in other copies."""
    return " ".join(str(problem).split())


def gold_answer(row: dict[str, Any], where: str) -> str:
    """The row's `answer` if it has one (MATH-500), else the last `\\boxed{...}` of its `solution`."""
    answer = row.get("answer")
    if answer is not None and str(answer).strip():
        return str(answer).strip()
    solution = row.get("solution")
    if solution is None:
        raise DataError(f"{where}: missing field 'solution' (or 'answer')")
    boxed = last_boxed(str(solution))
    if boxed is None or not boxed.strip():
        raise DataError(f"{where}: field 'solution' has no \\boxed{{...}} answer")
    return boxed.strip()


@dataclass
class MATHConfig:
    """Options of the `math` and `math500` tasks (`-O KEY=VALUE`, `task_options:` in a run config)."""

    subject: list[str] | None = option(
        None, help="only these subjects, comma-separated (e.g. algebra,number_theory or 'Counting & Probability')"
    )
    level: str | None = option(None, help="only these difficulty levels 1-5, comma-separated (e.g. 5, 4,5 or 'Level 5')")


class MATH(CotTask):
    """MATH competition problems (Hendrycks et al.), by subject (`math:algebra`) and level; Minerva 4-shot."""

    name = "math"
    splits = ("train", "test", "heldout")
    train_split = "train"
    heldout_split = "heldout"
    subsets = tuple(SUBJECTS)
    group = True
    default_verifier = "math_equiv"
    cue = "The final answer is"
    row_fields = ("problem",)
    Config = MATHConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.subjects = self._parse_subjects()
        self.levels = self._parse_levels()
        self._ids: dict[str, list[str]] = {}

    def _parse_subjects(self) -> list[str]:
        given = self.config.subject
        wanted = list(SUBJECTS)
        if given:
            wanted = []
            for item in given:
                slug = subject_slug(item)
                if slug not in SUBJECTS:
                    raise UnknownNameError("MATH subject", item.strip(), SUBJECTS)
                wanted.append(slug)
        if self.subset:
            if self.subset not in wanted:
                raise ConfigError(f"task {self.full_name}: option subject={','.join(given)} excludes {self.subset}")
            wanted = [self.subset]
        return [s for s in SUBJECTS if s in wanted]

    def _parse_levels(self) -> set[int] | None:
        value = self.config.level
        if value is None or not value.strip():
            return None
        levels = set()
        for item in value.split(","):
            level = parse_level(item)
            if level is None:
                raise ConfigError(f"task option level={value!r}: expected levels 1-5, e.g. 5 or 4,5")
            levels.add(level)
        return levels

    # -- data --------------------------------------------------------------------------------

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """A split's rows, filtered by the subject and level options."""
        pairs = [(i, r) for i, r in self._load_split(split) if self._selected(r)]
        self._ids[split] = [i for i, _ in pairs]
        return [r for _, r in pairs]

    def _selected(self, row: dict[str, Any]) -> bool:
        subject = row.get("type", row.get("subject"))
        if subject is not None and subject_slug(subject) not in self.subjects:
            return False
        return self.levels is None or parse_level(row.get("level")) in self.levels

    def _load_split(self, split: str) -> list[tuple[str, dict[str, Any]]]:
        """(stable id, row) pairs of an unfiltered split."""
        if self.data_dir is None:
            if split == "heldout":
                split = "test"
            return self._hub_math(split, self.subjects)
        test = self._local_test()
        if split == "test":
            return test
        in_500 = self._math500_keys(test)
        return [(i, r) for i, r in test if (problem_key(r["problem"]) in in_500) == (split == "heldout")]

    def _local_test(self) -> list[tuple[str, dict[str, Any]]]:
        rows = load_rows("math test (hub EleutherAI/hendrycks_math)", self.data_dir, LOCAL_TEST, read_jsonl)
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or "problem" not in r:
                raise DataError(f"{self.data_dir / LOCAL_TEST[0]}: row {i} has no field 'problem'")
        return [(f"math/test/{r.get('idx', i)}", r) for i, r in enumerate(rows)]

    def _hub_math(self, split: str, subjects: list[str]) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for subject in subjects:
            rows = load_rows(
                f"math:{subject} {split} (hub {HUB_MATH} config {subject})",
                None,
                LOCAL_TEST,
                read_jsonl,
                [(HUB_MATH, subject, split)],
            )
            out.extend((f"math/{split}/{subject}/{j}", r) for j, r in enumerate(rows))
        return out

    def _math500_rows(self) -> list[dict[str, Any]]:
        return load_rows(f"MATH-500 (hub {HUB_MATH500})", self.data_dir, LOCAL_MATH500, read_jsonl, [(HUB_MATH500, None, "test")])

    def _math500_keys(self, test: list[tuple[str, dict[str, Any]]]) -> set[str]:
        """Problem keys of MATH-500, after checking that every one of them is in `test`."""
        keys = {problem_key(r["problem"]) for r in self._math500_rows()}
        found = keys & {problem_key(r["problem"]) for _, r in test}
        if len(found) != len(keys):
            raise DataError(
                f"{len(keys) - len(found)} MATH-500 problems are not in the MATH test split: cannot separate "
                "train from MATH-500 safely; use matching copies of math/test.jsonl and math/math500.jsonl"
            )
        return keys

    def make_example(self, row: dict[str, Any], index: int, split: str | None, where: str) -> Example:
        """Problem, gold answer (last `\\boxed{}` or `answer`), the solution as rationale; subject and level in meta."""
        subject_name = row.get("type", row.get("subject"))
        subject = subject_slug(subject_name) if subject_name is not None else None
        ids = self._ids.get(split or "")
        if row.get("unique_id"):
            ex_id = str(row["unique_id"])
        elif ids is not None and index < len(ids):
            ex_id = ids[index]
        else:
            ex_id = self.default_id(index, split)
        return Example(
            id=ex_id,
            task=self.example_task(subject),
            question=str(row["problem"]).strip(),
            answer=gold_answer(row, where),
            answer_kind=AnswerKind.MATH,
            rationale=row.get("solution"),
            meta={"subject": subject, "level": parse_level(row.get("level"))},
            raw=row,
        )

    def example_task(self, subject: str | None) -> str:
        """`math:<subject>` (the group's member), or `math` when the row has no subject."""
        return f"{self.name}:{subject}" if subject in SUBJECTS else self.name

    # -- prompts -----------------------------------------------------------------------------

    def answer_text(self, example: Example) -> str:
        """The answer in inline math: `$\\frac{1}{2}$`."""
        return f"${example.answer}$"

    def hint_sentence(self, example: Example) -> str:
        """`Hint: the final answer is $X$.`"""
        return f"Hint: the final answer is {self.answer_text(example)}."

    def answer_format(self, example: Example) -> str:
        """Ask for Minerva's final sentence."""
        return '"The final answer is $X$." where X is the final answer in LaTeX'

    def fewshot_query(self, question: str) -> str:
        """Minerva's `Problem:` / `Solution:` layout."""
        return f"Problem:\n{question}\n\nSolution:"

    def exemplars(self, example: Example) -> list[Exemplar]:
        """The Minerva 4-shot exemplars (Lewkowycz et al. 2022)."""
        return [
            Exemplar(Example(f"math/fewshot/{i}", self.name, d["problem"], str(d["answer"]), AnswerKind.MATH), d["solution"])
            for i, d in enumerate(task_data("math", "fewshot.yaml"))
        ]

    def stop_sequences(self, style: str = "fewshot") -> list[str]:
        """The next `Problem:` for few-shot and bare prompts; the next `Q:` for zero-shot."""
        if style in ("fewshot", "bare"):
            return ["\n\nProblem:", "\nProblem:"]
        return super().stop_sequences(style)


class MATH500(MATH):
    """MATH-500: the 500-problem PRM800K test subset of MATH; `train` is the other 4,500 test problems."""

    name = "math500"
    splits = ("train", "test")
    train_split = "train"
    heldout_split = "test"
    subsets = ()
    group = False

    def _load_split(self, split: str) -> list[tuple[str, dict[str, Any]]]:
        if split == "test":
            return [(str(r.get("unique_id", i)), r) for i, r in enumerate(self._math500_rows())]
        test = self._local_test() if self.data_dir is not None else self._hub_math("test", list(SUBJECTS))
        in_500 = self._math500_keys(test)
        return [(i, r) for i, r in test if problem_key(r["problem"]) not in in_500]

    def example_task(self, subject: str | None) -> str:
        """Always `math500`."""
        return self.name
