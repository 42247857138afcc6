"""Where does a model sit on reasoning-gym's generators? Greedy 3-shot accuracy on a few difficulty settings.

    OMP_NUM_THREADS=2 python packages/cotkit-reasoning-gym/probe.py OUT_DIR [-m smollm2-135m] [--n 64]

Each setting runs `cotkit sample` (greedy, one sample per question, the held-out split) with the
`rg_score` verifier; the table gives accuracy with its 95% Wilson interval, the unparseable count,
the share of the model's most common answer and of the most common gold answer (a slice a single
repeated answer scores well on shows no signal), and the seconds the run took. A slice for
self-training wants an accuracy between about 5% and 60% and a small most-common-answer share.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from cotkit import wilson_interval

#: (generator, options): arithmetic in the small-digit range where a 135M model is neither 0% nor 100%.
SETTINGS: list[tuple[str, dict[str, object]]] = [
    ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2}),
    ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    ("products", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
    ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}),
    *[  # STaR's n-digit addition: sums only, no negative numbers
        ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": digits, "operators": "+",
                              "allow_negation": False, "allow_parentheses": False})
        for digits in (2, 3)
    ],
]


def run_setting(out: Path, dataset: str, options: dict[str, object], args: argparse.Namespace) -> dict[str, object]:
    """One `cotkit sample` run; its rows' verdicts summarized."""
    label = dataset + "".join(f"_{k}{v}" for k, v in options.items())
    rows_file = out / f"{label}.jsonl"
    command = [
        sys.executable, "-m", "cotkit", "sample", "-t", f"rg:{dataset}", "-m", args.model,
        "--split", "heldout", "--limit", str(args.n), "-n", "1", "--temperature", "0",
        "--max-new-tokens", str(args.max_new_tokens), "-o", str(rows_file), "--json",
        "-O", f"heldout_size={args.n}", *[f"-O{k}={v}" for k, v in options.items()],
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=args.timeout)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{label}: cotkit sample failed: {done.stderr.strip()[-500:]}")
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    return summarize(f"rg:{dataset}", options, rows, seconds)


def summarize(task: str, options: dict[str, object], rows: list[dict], seconds: float) -> dict[str, object]:
    """Accuracy with its interval, unparseable count and most-common-answer shares of one run's rows."""
    n = len(rows)
    correct = sum(1 for r in rows if r["verdict"] == "correct")
    low, high = wilson_interval(correct, n)
    answers = Counter(r.get("normalized") or r.get("extracted") for r in rows if r["verdict"] != "unparseable")
    golds = Counter(str(r["answer"]) for r in rows)
    return {
        "task": task,
        "options": options,
        "n": n,
        "accuracy": correct / n,
        "ci_low": low,
        "ci_high": high,
        "unparseable": sum(1 for r in rows if r["verdict"] == "unparseable"),
        "top_answer_share": answers.most_common(1)[0][1] / n if answers else 0.0,
        "top_gold_share": golds.most_common(1)[0][1] / n,
        "seconds": round(seconds),
    }


def markdown(results: list[dict[str, object]]) -> str:
    """The probe table as Markdown."""
    lines = [
        "| task | options | n | accuracy [95% CI] | unparseable | most common answer | most common gold | seconds |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        opts = " ".join(f"{k}={v}" for k, v in r["options"].items())
        lines.append(
            f"| `{r['task']}` | `{opts}` | {r['n']} | {r['accuracy']:.1%} [{r['ci_low']:.1%}, {r['ci_high']:.1%}] "
            f"| {r['unparseable']} | {r['top_answer_share']:.1%} | {r['top_gold_share']:.1%} | {r['seconds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for each setting's sample rows and probe.json / probe.md")
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=64, help="held-out questions per setting")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--timeout", type=int, default=900, help="seconds one setting may take")
    parser.add_argument("--only", type=int, nargs="+", help="run only these settings (0-based positions in SETTINGS)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    chosen = [SETTINGS[i] for i in args.only] if args.only else SETTINGS
    for dataset, options in chosen:
        results.append(run_setting(args.out, dataset, options, args))
        print(markdown(results[-1:]).splitlines()[-1], flush=True)
    (args.out / "probe.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "probe.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
