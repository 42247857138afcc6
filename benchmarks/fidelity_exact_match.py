"""Agreement of the `exact_match` verifier with published labels on model outputs cotkit did not produce.

    python benchmarks/fidelity_exact_match.py DATA_DIR [--max-show N] [--local-examples]

DATA_DIR is searched for these public layouts (fetch them yourself; never commit them):

- suzgunmirac/BIG-Bench-Hard `code-davinci-002-outputs/code-davinci-002-{cot,direct}/`:
  code-davinci-002 outputs for all 27 BBH tasks with each task's published accuracy
  (`*_eval_metrics.jsonl`). Target: every task within 0.5 points.
- openai/grade-school-math `grade_school_math/data/example_model_solutions.jsonl`: GSM8K test
  solutions of four GPT-3 models (6B/175B, fine-tuned/verifier) with `is_correct` labels.
- kojima-takeshi188/zero_shot_cot `log/*_zero_shot_cot.log`: zero-shot-CoT GPT-3 outputs
  (GSM8K, SVAMP, MultiArith, AddSub, SingleEq, AQuA, CommonsenseQA, date, shuffled objects,
  StrategyQA, coin flip) with the extracted prediction and gold answer of each row.
- microsoft/ToRA `src/outputs/**/gsm8k/*.jsonl`: ToRA tool-integrated GSM8K outputs with the
  prediction their grader scored (published mean score in the `.metrics` file beside it).

It prints per-source agreement, per-BBH-task accuracy next to the published one, and every
disagreement, marking those that `ADJUDICATED` (hand-checked, below) explains.

Examples are built by the registered task plugins (`bbh:<task>`, `gsm8k`) from the
publisher-format row when they are installed, so the benchmark checks the same path as
`cotkit score`; `--local-examples` builds them here instead (only for the sources no task covers,
or to compare).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from cotkit.types import AnswerKind, Choice, Example, Sample, Status

# Disagreements checked by hand where the reference label is wrong: source -> [(ids, why)].
# Everything not listed here counts against exact_match.
_CALC = "the model's answer is the result after '=' (the reference took the calculation's first number)"
_FORM = "same value written differently (the reference compares strings: '5,600' vs '5600', '12.30', '3/8' vs 0.375)"
_WORDS = "the answer is written in words (the reference finds no digits)"
_HEDGE = "the model names several options (the reference credits the first letter it finds)"
_OPTION_TEXT = "the model states the option's text, not its letter (the reference finds no letter)"
_ADJUDICATED_LISTS: dict[str, list[tuple[str, str]]] = {
    "kojima-gsm8k": [
        ("33 144 285 297 335 338 363 402 428 488 608 743 754 838 893 979 989 1017 1181 1184 1259 1261", _CALC),
        ("94 265 698 708 1178", _FORM),
        ("195 339 355 397 475 500 568 662 783 881 1139", _WORDS),
    ],
    "kojima-addsub": [
        ("107 109 129 130 150 164 176 247 351", _FORM),
        ("155 177 248", _CALC),
        ("220 222 369 375", _WORDS),
    ],
    "kojima-multiarith": [
        ("195 243 497 557", _CALC),
        ("295", "the model wrote 'The answer is 51.' then the roman numeral 'LI' (the reference finds no digits)"),
        ("406 460 490", _WORDS),
    ],
    "kojima-singleeq": [
        ("159 170 183 269 276 286 416 435 462 470", _FORM),
        ("144 189 322", _CALC),
        ("3 499", _WORDS),
    ],
    "kojima-svamp": [
        ("60 313 352 723 753 858 897", _CALC),
        ("169 194 221 283 398 501 585 741", _WORDS),
    ],
    "kojima-aqua": [("136", _HEDGE)],
    "kojima-commonsensqa": [
        (
            "35 39 55 57 76 83 94 110 142 154 187 207 215 237 239 247 255 274 347 353 376 384 389 417 498 512 "
            "531 536 538 567 581 605 621 658 665 670 714 726 728 777 786 810 859 871 877 886 891 932 933 936 "
            "945 961 971 985 992 1010 1028 1047 1065 1078 1099 1102 1189 1190 1192 1193 1200 1203 1214",
            _HEDGE,
        ),
        ("190 948 993", _OPTION_TEXT),
    ],
}
ADJUDICATED: dict[tuple[str, str], str] = {
    (source, i): why for source, lists in _ADJUDICATED_LISTS.items() for ids, why in lists for i in ids.split()
}


@dataclass
class Item:
    """One model output with the reference's verdict on it."""

    source: str
    id: str
    example: Example
    completion: str
    ref_correct: bool
    group: str = ""
    stop: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- example building

BBH_NUMBER = {"object_counting", "multistep_arithmetic_two"}
BBH_OPEN_TEXT = {"dyck_languages", "word_sorting"}
BBH_SETS = {
    "boolean_expressions": ["True", "False"],
    "causal_judgement": ["Yes", "No"],
    "navigate": ["Yes", "No"],
    "web_of_lies": ["Yes", "No"],
    "sports_understanding": ["yes", "no"],
    "formal_fallacies": ["valid", "invalid"],
}
_OPTION_LINE = re.compile(r"^\(([A-Z])\)\s*(.*)$")


def options_in(question: str) -> list[Choice]:
    """`(A) text` lines of a question."""
    return [Choice(m.group(1), m.group(2).strip()) for m in map(_OPTION_LINE.match, question.splitlines()) if m]


class Builder:
    """Examples from publisher-format rows: through the task plugins, or built here."""

    def __init__(self, local: bool):
        self.local = local
        self._tasks: dict[str, object] = {}

    def task(self, name: str):
        if self.local:
            return None
        if name not in self._tasks:
            from cotkit.errors import CotkitError
            from cotkit.plugins import host

            try:
                self._tasks[name] = host().task(name)
            except CotkitError:
                self._tasks[name] = None
        return self._tasks[name]

    def stop(self, name: str) -> list[str]:
        """The stop sequences `cotkit score` would use for this task's few-shot completions."""
        t = self.task(name)
        return t.stop_sequences("fewshot") if t is not None else ["\n\nQ:", "\nQ:"]

    def bbh(self, task: str, question: str, target: str, index: int) -> Example:
        t = self.task(f"bbh:{task}")
        if t is not None:
            return t.example_from_row({"input": question, "target": target}, index)
        if task in BBH_NUMBER:
            return Example(str(index), task, question, target, AnswerKind.NUMBER)
        if task in BBH_OPEN_TEXT:
            return Example(str(index), task, question, target, AnswerKind.TEXT)
        if task in BBH_SETS:
            return Example(str(index), task, question, target, AnswerKind.TEXT, answer_set=BBH_SETS[task])
        return Example(str(index), task, question, target, AnswerKind.CHOICE, choices=options_in(question))

    def gsm8k(self, question: str, answer: str, index: int) -> Example:
        t = self.task("gsm8k")
        if t is not None:
            return t.example_from_row({"question": question, "answer": f"#### {answer}"}, index)
        return Example(str(index), "gsm8k", question, answer, AnswerKind.NUMBER)


# --------------------------------------------------------------------------- sources


def bbh_items(folder: Path, b: Builder) -> Iterator[Item]:
    style = folder.name.rsplit("-", 1)[-1]
    for path in sorted(folder.glob("*_few_shot_template_0-255000.json")):
        task = path.name.split("_few_shot_template")[0]
        for i, row in enumerate(json.loads(path.read_text())["outputs"]):
            question = row["input"].rsplit("\n\nQ: ", 1)[-1]
            question = re.sub(r"\nA:( Let's think step by step\.)?\s*$", "", question)
            ref = _bbh_published_label(row["prediction"], row["target"], style)
            ex = b.bbh(task, question, row["target"], i)
            yield Item(f"bbh-{style}", f"{task}/{i}", ex, row["prediction"], ref, task, b.stop(f"bbh:{task}"))


def _bbh_published_label(prediction: str, target: str, style: str) -> bool:
    """The scoring behind the published accuracies: the text after the last "So the answer is ",
    stripped of spaces and one trailing period, equal to the target string (reproduces every
    task's `*_eval_metrics.jsonl` exactly)."""
    if style == "cot":
        parts = prediction.split("So the answer is ")
        if len(parts) < 2:
            return False
        prediction = parts[-1]
    pred = prediction.strip()
    if pred.endswith("."):
        pred = pred[:-1]
    return pred == target


def bbh_published(folder: Path) -> dict[str, float]:
    out = {}
    for path in folder.glob("*_eval_metrics.jsonl"):
        out[path.name.split("_few_shot_template")[0]] = json.loads(path.read_text().splitlines()[0])["accuracy"]
    return out


def openai_gsm8k_items(path: Path, b: Builder) -> Iterator[Item]:
    for i, line in enumerate(path.read_text().splitlines()):
        row = json.loads(line)
        gold = row["ground_truth"].rsplit("A:", 1)[-1].strip()
        ex = b.gsm8k(row["question"], gold, i)
        for model in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            sol = row[model]
            yield Item("gsm8k-openai", f"{i}/{model}", ex, sol["solution"], bool(sol["is_correct"]), model, b.stop("gsm8k"))


_KOJIMA_KIND = {
    "gsm8k": "number", "svamp": "number", "multiarith": "number", "addsub": "number", "singleeq": "number",
    "aqua": "choice", "commonsensqa": "choice", "date_understanding": "choice", "shuffled_objects": "choice",
    "strategyqa": "yesno", "coin_flip": "yesno", "last_letters": "text",
}


def kojima_items(path: Path, b: Builder) -> Iterator[Item]:
    dataset = path.name.split("_zero_shot")[0]
    kind = _KOJIMA_KIND.get(dataset)
    if kind is None:
        return
    text = path.read_text()
    blocks = text.split("*************************\n")
    n = 0
    for block in blocks:
        if "\nGT : " not in block or "pred_before : " not in block:
            continue
        qa, _, tail = block.partition("\npred_before : ")
        q_start = qa.find("Q: ")
        if q_start < 0:
            continue
        q, _, completion = qa[q_start + 3 :].partition("\nA: Let's think step by step.")
        fields = dict(re.findall(r"^(pred_mode|pred_after|GT) : ?(.*)$", tail, re.M))
        gold, pred = fields.get("GT", "").strip(), fields.get("pred_mode", fields.get("pred_after", "")).strip()
        if not gold:
            continue
        ref = pred == gold  # their scoring: string equality of the cleansed prediction
        if kind == "number":
            ex = b.gsm8k(q, gold, n) if dataset == "gsm8k" else Example(str(n), dataset, q, gold, AnswerKind.NUMBER)
        elif kind == "choice":
            parts = re.split(r"\(([A-F])\)", q.split("Answer Choices:")[-1])[1:]
            choices = [Choice(lab, txt.strip()) for lab, txt in zip(parts[::2], parts[1::2])]
            ex = Example(str(n), dataset, q, gold, AnswerKind.CHOICE, choices=choices or None)
        elif kind == "yesno":
            ex = Example(str(n), dataset, q, gold, AnswerKind.TEXT, answer_set=["yes", "no"])
        else:
            ex = Example(str(n), dataset, q, gold, AnswerKind.TEXT)
        yield Item(f"kojima-{dataset}", str(n), ex, completion, ref, dataset)
        n += 1


def tora_items(path: Path, b: Builder) -> Iterator[Item]:
    model = path.parts[-3]
    for line in path.read_text().splitlines():
        row = json.loads(line)
        ref = _numbers_equal(row["pred"][0], row["gt"])
        yield Item("gsm8k-tora", f"{model}/{row['idx']}", b.gsm8k(row["question"], row["gt"], row["idx"]), row["code"][0], ref, model)


def _numbers_equal(pred: str, gold: str) -> bool:
    """ToRA's grader on GSM8K golds: numeric equality within 1e-4 relative (math_equal)."""
    try:
        p, g = Decimal(str(pred).replace(",", "")), Decimal(str(gold).replace(",", ""))
    except InvalidOperation:
        return str(pred).strip() == str(gold).strip()
    return abs(p - g) <= Decimal("1e-4") * max(abs(g), 1)


def discover(root: Path, b: Builder) -> tuple[list[Item], dict[str, dict[str, float]]]:
    items: list[Item] = []
    published: dict[str, dict[str, float]] = {}
    for folder in sorted(root.rglob("code-davinci-002-*")):
        if folder.is_dir() and any(folder.glob("*_few_shot_template_0-255000.json")):
            style = folder.name.rsplit("-", 1)[-1]
            published[f"bbh-{style}"] = bbh_published(folder)
            items += bbh_items(folder, b)
    for path in sorted(root.rglob("example_model_solutions.jsonl")):
        items += openai_gsm8k_items(path, b)
    for path in sorted(root.rglob("*_zero_shot_cot.log")):
        items += kojima_items(path, b)
    for path in sorted(root.rglob("test_tora_*.jsonl")):
        if path.parent.name == "gsm8k":
            items += tora_items(path, b)
    return items, published


# --------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder holding the fetched public outputs")
    ap.add_argument("--local-examples", action="store_true", help="build Examples here, not with the task plugins")
    ap.add_argument("--max-show", type=int, default=1000, help="disagreements to print per source")
    args = ap.parse_args(argv)

    from cotkit.plugins import host

    b = Builder(args.local_examples)
    items, published = discover(args.data, b)
    if not items:
        print(f"no known output files under {args.data}", file=sys.stderr)
        return 2
    verifier = host().get("verifier", "exact_match")()
    verdicts = verifier.verify([Sample(it.example, it.completion, stop=it.stop) for it in items])

    by_source: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_source[it.source].append(i)

    print(f"{'source':28s} {'n':>6s} {'agree':>8s} {'adjudicated':>12s} {'ref acc':>8s} {'ours':>8s} {'unparseable':>11s}")
    disagreements = []
    for source, idx in by_source.items():
        agree = sum(items[i].ref_correct == verdicts[i].correct for i in idx)
        explained = sum(
            items[i].ref_correct != verdicts[i].correct and (source, items[i].id) in ADJUDICATED for i in idx
        )
        ref_acc = sum(items[i].ref_correct for i in idx) / len(idx)
        our_acc = sum(verdicts[i].correct for i in idx) / len(idx)
        unp = sum(verdicts[i].status is Status.UNPARSEABLE for i in idx)
        print(
            f"{source:28s} {len(idx):6d} {agree / len(idx):8.4%} {(agree + explained) / len(idx):12.4%}"
            f" {ref_acc:8.2%} {our_acc:8.2%} {unp:11d}"
        )
        disagreements += [i for i in idx if items[i].ref_correct != verdicts[i].correct]

    gsm = [i for i, it in enumerate(items) if it.source.startswith("gsm8k") or it.source == "kojima-gsm8k"]
    if gsm:
        agree = sum(items[i].ref_correct == verdicts[i].correct for i in gsm)
        adjudicated = agree + sum(
            items[i].ref_correct != verdicts[i].correct and (items[i].source, items[i].id) in ADJUDICATED for i in gsm
        )
        print(f"{'GSM8K, all sources':28s} {len(gsm):6d} {agree / len(gsm):8.4%} {adjudicated / len(gsm):12.4%}"
              "   (target: 99.9% after hand-checking)")

    for source, pub in published.items():
        print(f"\n{source}: accuracy per task, published vs exact_match (target: within 0.5 points)")
        per_task: dict[str, list[int]] = defaultdict(list)
        for i in by_source.get(source, []):
            per_task[items[i].group].append(i)
        worst = 0.0
        for task in sorted(per_task):
            idx = per_task[task]
            ours = 100 * sum(verdicts[i].correct for i in idx) / len(idx)
            ref = 100 * sum(items[i].ref_correct for i in idx) / len(idx)
            diff = ours - pub.get(task, float("nan"))
            worst = max(worst, abs(diff))
            flag = "" if abs(diff) <= 0.5 else "  <-- over 0.5"
            print(f"  {task:42s} n={len(idx):3d} published {pub.get(task, float('nan')):6.2f}"
                  f" (re-derived {ref:6.2f})  exact_match {ours:6.2f}  diff {diff:+.2f}{flag}")
        print(f"  largest difference: {worst:.2f} points")

    print(f"\n{len(disagreements)} disagreements")
    shown: Counter[str] = Counter()
    for i in disagreements:
        it, v = items[i], verdicts[i]
        shown[it.source] += 1
        if shown[it.source] > args.max_show:
            continue
        note = ADJUDICATED.get((it.source, it.id))
        print("-" * 100)
        print(f"{it.source} {it.id}: reference {'correct' if it.ref_correct else 'incorrect'}, "
              f"exact_match {v.status.value} (extracted {v.extracted!r}, normalized {v.normalized!r}), gold {it.example.answer!r}")
        if note:
            print(f"  ADJUDICATED: {note}")
        tail = it.completion[-400:]
        print("  ..." + tail.replace("\n", "\n  ") if len(it.completion) > 400 else "  " + tail.replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
