"""Agreement of the `math_equiv` verifier with human labels on MATH answers cotkit did not produce.

    python benchmarks/fidelity_math_equiv.py DATA_DIR [--math-test FILE] [--math500 FILE] [--show-all]

DATA_DIR holds PRM800K (openai/prm800k, MIT) phase-1 data in the "stepwise-critic" parquet layout
(as published in xhghhh/Enhancing-PRM800K; fetch it yourself, never commit it):

- `phase1_test.stepwise-critic.parquet`: GPT-4 solutions to MATH test problems, each step rated by
  a human; the final step carries the model's answer and the rater's verdict on it (+1 correct,
  -1 wrong, 0 neither). Gold is the MATH answer (the last `\\boxed{}` of the problem's solution
  in `--math-test`, the MATH test split, default ../shared/data/math/test.jsonl).
- `phase1_train_plus.stepwise-critic.parquet`: the same for MATH train problems, whose official
  answers are not in the data; gold is the answer of the trajectory the raters marked as the
  complete correct solution (`is_solution`), compared with every other rated answer.

Each rated answer becomes a completion (its steps and a PRM800K `# Answer` line); rows rated 0 are
left out. The script prints agreement per source (target: at least 98%), the confusion counts, the
number of timeouts, the time taken, and every disagreement (ADJUDICATED ones carry the reason
found by hand). With `--math500 FILE` it also times MATH-500 gold-vs-gold and gold-vs-solution.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from cotkit import last_boxed
from cotkit.types import AnswerKind, Example, Sample, Status

REPO = Path(__file__).resolve().parents[1]

# Hand-checked reference-label errors: (source, gold, answer) -> why the human rating is wrong.
# Each was checked against the problem; the verifier's verdict is the right one.
LABEL_ERRORS: dict[tuple[str, str, str], str] = {
    ("prm800k-phase1-test", "58,500", "585000"): "rated correct, but 585000 is ten times the gold 58,500",
    ("prm800k-phase1-train", "-\\frac{15}{4}", "-\\frac{3}{4}"): (
        "rated correct, but the step itself says 1/4 - 4, which is -15/4 (a^2+b^2+c^2 for 2x^3-x^2+4x+10)"
    ),
    ("prm800k-phase1-train", "\\pm 8, \\pm 1", "\\pm 8"): "rated correct, but the problem asks for all solutions and misses \\pm 1",
    ("prm800k-phase1-train", "\\frac{\\pi}{4}", "\\frac{\\pi}{4}, \\frac{7\\pi}{4}"): (
        "rated correct, but sin x + cos x = -sqrt(2) at 7pi/4, so only pi/4 solves sin x + cos x = sqrt(2)"
    ),
    ("prm800k-phase1-train", "10", "1"): "rated correct, but 7/9 > x/13 holds up to x = 10 (91/9 = 10.1)",
}

# Rated wrong although equal in value to the gold: the rating judged the step's reasoning or an
# unsimplified form, not the value. An equivalence checker calls these correct by design.
EQUIVALENT_FORMS = "equal in value; the rating judged the step's reasoning or the unsimplified form"


@dataclass
class Item:
    """One rated model answer with its gold answer."""

    source: str
    id: str
    example: Example
    completion: str
    ref_correct: bool
    answer: str


def _squash(s: str) -> str:
    return " ".join(s.split())


def load_items(data_dir: Path, math_test: Path) -> list[Item]:
    """Every rated final answer in DATA_DIR, with its gold answer."""
    import pyarrow.parquet as pq

    items: list[Item] = []
    test_file = data_dir / "phase1_test.stepwise-critic.parquet"
    if test_file.is_file():
        gold = {}
        with open(math_test, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                gold[_squash(row["problem"])] = last_boxed(row["solution"])
        rows = pq.read_table(test_file).to_pylist()
        items += _items("prm800k-phase1-test", rows, lambda r: gold.get(_squash(r["instruction"])))
    train_file = data_dir / "phase1_train_plus.stepwise-critic.parquet"
    if train_file.is_file():
        rows = pq.read_table(train_file).to_pylist()
        approved = {}
        for r in rows:
            if r.get("is_solution") and r.get("answer") is not None:
                approved.setdefault(_squash(r["instruction"]), r["answer"])
        rows = [r for r in rows if not r.get("is_solution")]
        items += _items("prm800k-phase1-train", rows, lambda r: approved.get(_squash(r["instruction"])))
    return items


def _items(source: str, rows: list[dict], gold_of) -> list[Item]:
    out = []
    for n, r in enumerate(rows):
        answer, rating = r.get("answer"), r.get("rating")
        if answer is None or rating is None or rating == 0:
            continue
        gold = gold_of(r)
        if not gold:
            continue
        steps = [*(r.get("responses") or []), r.get("next_response") or ""]
        completion = "\n".join(steps) + "\n\n# Answer\n\n" + answer
        ex = Example(f"{source}/{n}", "math", r["instruction"], gold, AnswerKind.MATH)
        out.append(Item(source, ex.id, ex, completion, rating > 0, answer))
    return out


def run_fidelity(items: list[Item], show_all: bool, timeout: float) -> int:
    """Verify every item, print agreement and disagreements; return the number of sources under 98%."""
    from cotkit_plugins.verifiers.math_equiv import MathEquiv

    verifier = MathEquiv(timeout=timeout)
    start = time.perf_counter()
    verdicts = verifier.verify([Sample(it.example, it.completion) for it in items])
    seconds = time.perf_counter() - start
    verifier.close()
    by_source: dict[str, Counter] = defaultdict(Counter)
    disagreements = []
    for it, v in zip(items, verdicts):
        c = by_source[it.source]
        identical = _squash(it.answer) == _squash(it.example.answer)
        label_error = (it.source, it.example.answer, it.answer) in LABEL_ERRORS
        c["n"] += 1
        c[f"human {'correct' if it.ref_correct else 'wrong'} / ours {v.status.value}"] += 1
        c["agree"] += v.correct == it.ref_correct
        if identical and not it.ref_correct:
            c["process"] += 1  # the answer *is* the gold string: the rating judged the reasoning
        else:
            c["n_answer"] += 1
            c["agree_answer"] += v.correct == (it.ref_correct != label_error)
        if it.ref_correct:
            c["n_accepted"] += 1
            c["agree_accepted"] += v.correct
        if v.correct != it.ref_correct:
            disagreements.append((it, v, identical, label_error))
    print(f"verified {len(items)} answers in {seconds:.1f}s (timeout {timeout:g}s per comparison)")
    under = 0
    for source, c in sorted(by_source.items()):
        rate = c["agree_answer"] / c["n_answer"]
        under += rate < 0.98
        print(f"\n{source}")
        print(f"  raw agreement with the step ratings: {c['agree']}/{c['n']} = {100 * c['agree'] / c['n']:.2f}%")
        print(f"  on answers the raters accepted: {c['agree_accepted']}/{c['n_accepted']} = {100 * c['agree_accepted'] / c['n_accepted']:.2f}%")
        print(
            f"  answer-level agreement (left out: {c['process']} answers identical to the gold but rated wrong; "
            f"{sum(1 for it, _, _, e in disagreements if e and it.source == source)} hand-checked label errors corrected): "
            f"{c['agree_answer']}/{c['n_answer']} = {100 * rate:.3f}%"
        )
        for k in sorted(k for k in c if "/" in k):
            print(f"    {k}: {c[k]}")
    print(f"\n{len(disagreements)} disagreements with the raw ratings:")
    seen: Counter = Counter()
    for it, v, identical, label_error in disagreements:
        key = (it.source, it.example.answer, it.answer)
        seen[key] += 1
        if seen[key] > 1 and not show_all:
            continue
        if label_error:
            note = f"LABEL ERROR: {LABEL_ERRORS[key]}"
        elif identical:
            note = "answer identical to the gold: the rating judged the reasoning"
        elif v.correct:
            note = EQUIVALENT_FORMS
        else:
            note = "UNEXPLAINED"
        print(
            f"- [{it.source}] gold {it.example.answer!r} | answer {it.answer!r} -> {v.normalized!r} | "
            f"human {'correct' if it.ref_correct else 'wrong'}, ours {v.status.value} ({v.reason}) | {note}"
        )
    return under


def run_math500(path: Path) -> None:
    """Time MATH-500 gold-vs-gold and gold-vs-own-solution, cold (worker start-up included) and warm."""
    from cotkit import answer_structure, normalize_answer
    from cotkit_plugins.verifiers.math_equiv import MathEquiv, compare_answers

    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    examples = [Example(r["unique_id"], "math500", r["problem"], r["answer"], AnswerKind.MATH) for r in rows]
    print(f"\nMATH-500 ({len(rows)} problems)")
    for name, completion in (
        ("gold vs gold", lambda r: f"\\boxed{{{r['answer']}}}"),
        ("gold vs its solution's \\boxed{}", lambda r: r["solution"]),
    ):
        verifier = MathEquiv()
        samples = [Sample(e, completion(r)) for e, r in zip(examples, rows)]
        start = time.perf_counter()
        verdicts = verifier.verify(samples)
        cold = time.perf_counter() - start
        agree = sum(v.correct for v in verdicts)
        print(f"  {name}: {agree}/{len(rows)} equivalent, {cold:.2f}s")
        for r, v in zip(rows, verdicts):
            if not v.correct:
                print(f"    MISMATCH {r['answer']!r} vs {v.extracted!r}: {v.status.value} ({v.reason})")
        verifier.close()
    # Every pair through sympy (no string shortcut), to show what the worker pool costs.
    verifier = MathEquiv()
    pool = verifier._get_pool()
    trees = [(answer_structure(normalize_answer(r["answer"])),) * 2 for r in rows]
    pool.map(compare_answers, trees[:2])  # start the workers outside the timing
    start = time.perf_counter()
    outs = pool.map(compare_answers, trees, timeout=verifier.timeout)
    warm = time.perf_counter() - start
    ok = sum(o.ok and o.value[0] for o in outs)
    print(f"  all 500 pairs through the sympy workers ({verifier.workers} workers, warm): {ok}/{len(rows)} equal, {warm:.2f}s")
    start = time.perf_counter()
    trees2 = [(t[0], answer_structure(normalize_answer(r["answer"]) + "+0")) for t, r in zip(trees, rows) if t[0][0] == "scalar"]
    outs = pool.map(compare_answers, trees2, timeout=verifier.timeout)
    print(
        f"  {len(trees2)} scalar golds vs 'gold+0' parsed and compared by sympy: "
        f"{sum(o.ok and o.value[0] for o in outs)} equal, {time.perf_counter() - start:.2f}s"
    )
    verifier.close()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="folder with the PRM800K stepwise-critic parquet files")
    ap.add_argument("--math-test", type=Path, default=REPO.parent / "shared/data/math/test.jsonl")
    ap.add_argument("--math500", type=Path, default=None, help="also time MATH-500 (math500.jsonl)")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--show-all", action="store_true", help="print repeated disagreements too")
    args = ap.parse_args(argv)
    items = load_items(args.data_dir, args.math_test)
    if not items:
        print(f"no PRM800K stepwise-critic parquet files in {args.data_dir}", file=sys.stderr)
        return 2
    under = run_fidelity(items, args.show_all, args.timeout)
    if args.math500:
        run_math500(args.math500)
    return 1 if under else 0


if __name__ == "__main__":
    sys.exit(main())
