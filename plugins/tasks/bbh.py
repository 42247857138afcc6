"""BIG-Bench Hard (Suzgun et al. 2022): 27 tasks, the official 3-shot chain-of-thought prompts.

BBH publishes one set per task (`test`). For methods that train, `train` and `heldout` are a
seeded 2/3 : 1/3 carve of it, the same for everyone who uses the same `carve_seed`.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from cotkit import AnswerKind, Choice, DataError, Example, find_local, hint_format, load_rows, option, read_json

from .common import ZEROSHOT_TRIGGER, CotTask, Exemplar, carve_indices, mark_option_line, normalize_number, read_text, task_data

_TABLE: dict[str, dict[str, Any]] = task_data("bbh", "subtasks.yaml")
SUBTASKS: tuple[str, ...] = tuple(_TABLE)

_CHOICE_TARGET = re.compile(r"\(([A-Z])\)")
_OPTION_LINE = re.compile(r"\(([A-Z])\) ?(.*)")
FINAL_CUE = "So the answer is "
QUERY_SUFFIX = f"\nA: {ZEROSHOT_TRIGGER}"


def parse_options(text: str) -> list[Choice]:
    """The `(A) text` lines after the last `Options:` line of a BBH input."""
    head, sep, block = text.rpartition("\nOptions:\n")
    if not sep:
        return []
    choices = []
    for line in block.split("\n"):
        m = _OPTION_LINE.fullmatch(line)
        if not m:
            break
        choices.append(Choice(m.group(1), m.group(2)))
    return choices


def _closed_sets() -> list[list[str]]:
    sets: list[list[str]] = []
    for spec in _TABLE.values():
        if spec.get("answer_set") and spec["answer_set"] not in sets:
            sets.append(spec["answer_set"])
    return sets


def infer_kind(row: dict[str, Any]) -> dict[str, Any]:
    """A table entry guessed from one row's shape, for rows that do not say which BBH task they are."""
    target = str(row.get("target", "")).strip()
    if _CHOICE_TARGET.fullmatch(target) and parse_options(str(row.get("input", ""))):
        return {"kind": "choice"}
    if re.fullmatch(r"-?\d+", target):
        return {"kind": "number"}
    for labels in _closed_sets():
        if target in labels:
            return {"kind": "text", "answer_set": labels}
    return {"kind": "text"}


# ----------------------------------------------------------------------------- few-shot prompts


@dataclass(frozen=True)
class CotPrompt:
    """A BBH chain-of-thought prompt file, taken apart: description and (input, sep, rationale) exemplars."""

    description: str
    exemplars: tuple[tuple[str, str, str], ...]
    source: str


def parse_cot_prompt(text: str, source: str) -> CotPrompt:
    """Parse an official `cot-prompts/<task>.txt` (canary line, `-----`, description, `Q:`/`A:` blocks)."""
    _, sep, body = text.partition("-----\n")
    if not sep:
        raise DataError(f"{source}: not a BBH chain-of-thought prompt file (no '-----' line)")
    parts = re.split(r"\n\n(?=Q: )", body.strip("\n"))
    description, blocks = parts[0].strip(), parts[1:]
    exemplars = []
    for block in blocks:
        question, found, rest = block[len("Q: ") :].partition(QUERY_SUFFIX)
        if not found or not rest or rest[0] not in " \n":
            raise DataError(f"{source}: exemplar without '{QUERY_SUFFIX.strip()}' line: {block[:60]!r}")
        exemplars.append((question, rest[0], rest[1:].rstrip()))
    if not exemplars:
        raise DataError(f"{source}: no 'Q:' exemplars found")
    return CotPrompt(description, tuple(exemplars), source)


@cache
def _prompt_from_file(path: str) -> CotPrompt:
    return parse_cot_prompt(read_text(Path(path)), path)


def _lm_eval_prompt_path(subtask: str) -> Path | None:
    """lm-eval's copy of the same prompt (tasks/bbh/cot_fewshot/<task>.yaml), found without importing lm_eval."""
    try:
        spec = importlib.util.find_spec("lm_eval")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "tasks" / "bbh" / "cot_fewshot" / f"{subtask}.yaml"
        if path.is_file():
            return path
    return None


@cache
def _prompt_from_lm_eval(path: str) -> CotPrompt:
    import yaml

    try:
        doc = yaml.safe_load(read_text(Path(path)))
        samples = doc["fewshot_config"]["samples"]
        exemplars = tuple((str(s["input"]).strip(), "\n", str(s["target"]).strip()) for s in samples)
        description = str(doc.get("description", "")).strip()
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not an lm-eval BBH cot_fewshot task file ({type(e).__name__}: {e})") from e
    return CotPrompt(description, exemplars, path)


def load_cot_prompt(subtask: str, data_dir: Path | None) -> CotPrompt:
    """The official 3-shot CoT prompt: from the data dir, else from the installed lm-eval, else DataError."""
    local = find_local(data_dir, [f"bbh/cot-prompts/{subtask}.txt", f"cot-prompts/{subtask}.txt"])
    if local is not None:
        return _prompt_from_file(str(local))
    packaged = _lm_eval_prompt_path(subtask)
    if packaged is not None:
        return _prompt_from_lm_eval(str(packaged))
    where = f"data directory {data_dir}" if data_dir else "no data directory set"
    raise DataError(
        f"bbh:{subtask} few-shot prompt: no bbh/cot-prompts/{subtask}.txt ({where}) and lm-eval is not installed; "
        "put the official prompt files (github.com/suzgunmirac/BIG-Bench-Hard, cot-prompts/) in "
        "DATA_DIR/bbh/cot-prompts/ and pass --data-dir DATA_DIR, or pip install lm-eval"
    )


# ----------------------------------------------------------------------------------- the task


@dataclass
class BBHConfig:
    """Options of the `bbh` task (`-O KEY=VALUE`, `task_options:` in a run config)."""

    carve_seed: int = option(0, help="seed of the 2/3 train : 1/3 heldout carve of each task")


class BBH(CotTask):
    """BIG-Bench Hard: 27 tasks, official 3-shot CoT prompts; `bbh` is the group of all of them."""

    name = "bbh"
    splits = ("test", "train", "heldout")
    train_split = "train"
    heldout_split = "heldout"
    subsets = SUBTASKS
    group = True
    cue = "So the answer is"
    row_fields = ("input", "target")
    Config = BBHConfig
    HUB: ClassVar[tuple[tuple[str, str], ...]] = (("lukaemon/bbh", "test"), ("maveriq/bigbenchhard", "train"))
    HELDOUT_FRACTION: ClassVar[float] = 1 / 3

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._members: dict[str, BBH] = {}

    def member(self, subtask: str) -> BBH:
        """The task object of one subtask (the group delegates to these)."""
        if self.subset == subtask:
            return self
        if subtask not in self._members:
            self._members[subtask] = type(self)(
                subset=subtask, data_dir=self.data_dir, split_seed=self.split_seed, dev_size=self.dev_size, **self.task_options
            )
        return self._members[subtask]

    # -- data --------------------------------------------------------------------------------

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """A task's published rows (`test`) or its carved part (`train`, `heldout`); the group concatenates."""
        if self.subset is None:
            return [row for sub in SUBTASKS for row in self.member(sub).rows(split)]
        published = self.rows("test") if split != "test" else self._published()
        if split == "test":
            return published
        keep = self._carved_indices(len(published), split)
        return [row for i, row in enumerate(published) if i in keep]

    def _published(self) -> list[dict[str, Any]]:
        sub = self.subset

        def reader(path: Path) -> list[dict[str, Any]]:
            doc = read_json(path)
            if not isinstance(doc, dict) or not isinstance(doc.get("examples"), list):
                raise DataError(f"{path}: expected a JSON object with an 'examples' list")
            return doc["examples"]

        return load_rows(
            f"bbh:{sub} (hub {self.HUB[0][0]} config {sub})",
            self.data_dir,
            [f"bbh/data/{sub}.json", f"bbh/{sub}.json"],
            reader,
            [(hub, sub, split) for hub, split in self.HUB],
        )

    def _carved_indices(self, n: int, split: str) -> set[int]:
        heldout = carve_indices(n, int(n * self.HELDOUT_FRACTION), f"bbh:{self.subset}:{self.config.carve_seed}")
        return heldout if split == "heldout" else set(range(n)) - heldout

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        """Examples of a split; ids keep the row's index in the published file, whatever the split."""
        if split in ("dev", "fit"):
            return super().examples(split, limit)
        if self.subset is None and split in self.splits:
            out = [ex for sub in SUBTASKS for ex in self.member(sub).examples(split)]
        elif split in ("train", "heldout"):
            test = self.examples("test")
            keep = self._carved_indices(len(test), split)
            out = [ex for i, ex in enumerate(test) if i in keep]
        else:
            return super().examples(split, limit)
        return out[:limit] if limit is not None else out

    def default_id(self, index: int, split: str | None) -> str:
        """`bbh:<task>/<index in the published file>`; user rows get `.../row/<n>`."""
        return f"{self.full_name}/{index}" if split else f"{self.full_name}/row/{index}"

    def make_example(self, row: dict[str, Any], index: int, split: str | None, where: str) -> Example:
        """Input and target; the answer kind and label set from tasks/bbh/subtasks.yaml."""
        subtask = self.subset or self._subtask_of(row, where)
        spec = _TABLE[subtask] if subtask else infer_kind(row)
        task_name = f"bbh:{subtask}" if subtask else "bbh"
        question = str(row["input"])
        target = str(row["target"]).strip()
        choices = parse_options(question) if spec["kind"] == "choice" else None
        meta: dict[str, Any] = {"subtask": subtask} if subtask else {}
        answer_set = None
        m = _CHOICE_TARGET.fullmatch(target)
        if spec["kind"] == "choice" and m:
            if not choices:
                raise DataError(f"{where}: field 'input' has no 'Options:' block with '(A) ...' lines")
            kind, answer = AnswerKind.CHOICE, m.group(1)
            if answer not in {c.label for c in choices}:
                raise DataError(f"{where}: target {target!r} is not one of the options in 'input'")
        elif spec["kind"] == "choice":
            # A few published rows give the option text, not its letter (movie_recommendation 163,
            # ruin_names 99 and 144): keep the target string so scoring matches the published metric.
            kind, answer = AnswerKind.TEXT, target
            meta["irregular_target"] = True
        elif spec["kind"] == "number":
            kind, answer = AnswerKind.NUMBER, normalize_number(target, f"{where}: field 'target'")
        else:
            kind, answer = AnswerKind.TEXT, target
            answer_set = list(spec["answer_set"]) if spec.get("answer_set") else None
            if answer_set and answer not in answer_set:
                raise DataError(f"{where}: target {target!r} is not one of {', '.join(answer_set)}")
            if not answer:
                raise DataError(f"{where}: field 'target' is empty")
        return Example(
            id=f"{task_name}/{index}" if split else f"{task_name}/row/{index}",
            task=task_name,
            question=question,
            answer=answer,
            answer_kind=kind,
            choices=choices or None,
            answer_set=answer_set,
            meta=meta,
            raw=row,
        )

    @staticmethod
    def _subtask_of(row: dict[str, Any], where: str) -> str | None:
        """A group row's subtask from its optional `task` field (`bbh:<task>` or `<task>`)."""
        name = row.get("task")
        if name is None:
            return None
        name = str(name).removeprefix("bbh:")
        if name not in _TABLE:
            raise DataError(f"{where}: field 'task' {row.get('task')!r} is not a BBH task")
        return name

    # -- prompts -----------------------------------------------------------------------------

    def question_text(self, example: Example, hint: bool | str = False) -> str:
        """The input as published (it lists its own options); a hint marks the option or gives the answer."""
        if hint_format(hint) and example.answer_kind is AnswerKind.CHOICE:
            return mark_option_line(example.question, example.answer)
        return self.with_hint(example.question, example, hint)

    def fewshot_query(self, question: str) -> str:
        """`Q: <input>` then `A: Let's think step by step.` as in the official prompts."""
        return f"Q: {question}{QUERY_SUFFIX}"

    def _cot_prompt(self, example: Example) -> tuple[BBH, CotPrompt]:
        subtask = example.meta.get("subtask") or self.subset
        if not subtask:
            raise DataError(f"example {example.id}: few-shot BBH prompts need the task; address it as bbh:<task>")
        member = self.member(subtask)
        return member, load_cot_prompt(subtask, self.data_dir)

    def fewshot_header(self, example: Example) -> str:
        """The task description line of the official prompt."""
        return self._cot_prompt(example)[1].description

    def exemplars(self, example: Example) -> list[Exemplar]:
        """The official 3 exemplars, as Examples so a hint can mark their answers too."""
        member, prompt = self._cot_prompt(example)
        out = []
        for i, (question, sep, rationale) in enumerate(prompt.exemplars):
            cut = rationale.rfind(FINAL_CUE)
            if cut < 0:
                raise DataError(f"{prompt.source}: exemplar {i + 1} does not end with '{FINAL_CUE}...'")
            target = rationale[cut + len(FINAL_CUE) :].strip().removesuffix(".")
            ex = member.make_example({"input": question, "target": target}, i, "fewshot", f"{prompt.source} exemplar {i + 1}")
            out.append(Exemplar(ex, rationale, sep))
        return out
