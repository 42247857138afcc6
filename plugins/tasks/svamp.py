"""SVAMP (Patel et al. 2021): 1,000 one-unknown arithmetic word problems with varied structure.

SVAMP is an evaluation set: `test` is all 1,000 problems. For methods that train on it (PaD's
program distillation), `train` / `heldout` are a seeded 700 : 300 carve keyed on the problem ids,
so it is the same whatever the source's row order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cotkit import AnswerKind, Example, load_rows, option, read_jsonl

from .common import CotTask, Exemplar, carve_indices, normalize_number, task_data


def svamp_question(row: dict[str, Any]) -> str:
    """Body and Question joined as one problem statement (a period added to a body that lacks one)."""
    body = str(row["Body"]).strip()
    if body and body[-1] not in ".?!":
        body += "."
    return f"{body} {str(row['Question']).strip()}".strip()


@dataclass
class SVAMPConfig:
    """Options of the `svamp` task (`-O KEY=VALUE`, `task_options:` in a run config)."""

    carve_seed: int = option(0, help="seed of the 700 train : 300 heldout carve")


class SVAMP(CotTask):
    """SVAMP arithmetic word problems (1,000; a seeded 700/300 train/heldout carve for training)."""

    name = "svamp"
    splits = ("test", "train", "heldout")
    train_split = "train"
    heldout_split = "heldout"
    row_fields = ("Body", "Question", "Answer")
    Config = SVAMPConfig
    HUB: ClassVar[str] = "ChilleD/SVAMP"

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """All 1,000 problems (`svamp/test.jsonl`, or the hub's train+test), or the carved part."""
        if split == "test":
            return load_rows(
                f"svamp (hub {self.HUB})",
                self.data_dir,
                ["svamp/test.jsonl", "SVAMP.jsonl"],
                read_jsonl,
                [(self.HUB, None, "train+test")],
            )
        rows = self.rows("test")
        keep = self._carved(rows, split)
        return [r for i, r in enumerate(rows) if i in keep]

    def _carved(self, rows: list[dict[str, Any]], split: str) -> set[int]:
        """Row positions in `split`, chosen by problem id so any row order gives the same carve."""
        order = sorted(range(len(rows)), key=lambda i: str(rows[i].get("ID", i)))
        size = len(rows) * 3 // 10
        heldout = {order[k] for k in carve_indices(len(rows), size, f"svamp:{self.config.carve_seed}")}
        return heldout if split == "heldout" else set(range(len(rows))) - heldout

    def make_example(self, row: dict[str, Any], index: int, split: str | None, where: str) -> Example:
        """Body + Question as the question, `Answer` as a number, `Equation` in meta."""
        return Example(
            id=str(row["ID"]) if row.get("ID") else self.default_id(index, split),
            task=self.name,
            question=svamp_question(row),
            answer=normalize_number(row["Answer"], f"{where}: field 'Answer'"),
            answer_kind=AnswerKind.NUMBER,
            meta={"equation": row.get("Equation"), "type": row.get("Type")},
            raw=row,
        )

    def gold_program(self, example: Example) -> str | None:
        """SVAMP's `Equation` as the program PaD's student writes (`def solution(): ... return result`), or None.

        The `sft` method trains on it (`--target program`) after the program verifier has run it.
        """
        equation = " ".join(str(example.meta.get("equation") or "").split())
        return f"def solution():\n    result = {equation}\n    return result\n" if equation else None

    def exemplars(self, example: Example) -> list[Exemplar]:
        """The GSM8K exemplars of Wei et al. 2022 (they wrote them for these arithmetic word problems)."""
        return [
            Exemplar(Example(f"svamp/fewshot/{i}", self.name, d["question"], str(d["answer"]), AnswerKind.NUMBER), d["rationale"])
            for i, d in enumerate(task_data("gsm8k", "fewshot.yaml"))
        ]
