"""Training throughput of the shared fine-tuning step with and without sequence packing.

Both runs fine-tune the same model (SmolLM2-135M-Instruct, the embedded default) with the same
options on the same real short rationales, side by side in one process: GSM8K training solutions
(calculator annotations removed, `#### N` written as `The answer is N.`) after a `Q: ...\nA:`
prompt, as STaR trains. Unpacked, each micro-batch row is one example padded to the longest in the
batch; packed (`sft.packing`), each row is whole examples laid end to end up to `--max-length`
tokens, attention kept within each example by a block-diagonal mask.

Throughput is real (non-padding) tokens trained per second, counted by the training loop, from
the end of the first optimizer step to the end of the last (model loading and the first step's
warm-up are left out). Runs alternate (unpacked, packed, unpacked, ...) and each repeat's ratio is
printed: absolute numbers move on a shared machine, the ratio is what to read.

    .venv/bin/python benchmarks/packing_throughput.py                       # SmolLM2-135M, 2 repeats
    .venv/bin/python benchmarks/packing_throughput.py --model PATH --steps 3 --packed-steps 2 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gsm8k_rationales(count: int) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: the first `count` GSM8K training questions and their written solutions."""
    data = Path(os.environ.get("COTKIT_DATA_DIR") or REPO.parent / "shared" / "data") / "gsm8k" / "train.jsonl"
    if not data.is_file():
        sys.exit(f"no GSM8K data at {data}: set COTKIT_DATA_DIR to the folder holding gsm8k/train.jsonl")
    pairs = []
    for line in data.read_text().splitlines()[:count]:
        row = json.loads(line)
        solution, _, answer = row["answer"].partition("####")
        solution = re.sub(r"<<[^>]*>>", "", solution).strip()
        pairs.append((f"Q: {row['question']}\nA:", f" {solution}\nThe answer is {answer.strip()}."))
    return pairs


def throughput(model: str, items: list, packing: bool, steps: int, args: argparse.Namespace) -> dict[str, float]:
    """Train `steps` optimizer steps; real tokens and examples per second after the first step."""
    from cotkit.harness.train import SFTConfig, train

    cfg = SFTConfig(
        learning_rate=1e-5, warmup_steps=0, batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_length=args.max_length, packing=packing,
    )  # fmt: skip
    marks: list[tuple[float, int, int]] = []  # (time, tokens so far, examples so far) after each step

    def on_step(log) -> None:
        done = marks[-1][2] if marks else 0
        marks.append((time.perf_counter(), log.tokens, done + log.examples))

    with tempfile.TemporaryDirectory(prefix="cotkit-packing-bench-") as tmp:
        train(model, items, cfg, steps, Path(tmp) / "checkpoint", seed=0, on_step=on_step)
    (t0, tok0, ex0), (t1, tok1, ex1) = marks[0], marks[-1]
    seconds = t1 - t0
    return {
        "tokens_per_s": (tok1 - tok0) / seconds,
        "examples_per_s": (ex1 - ex0) / seconds,
        "examples_per_step": ex1 / len(marks),
        "tokens_per_step": tok1 / len(marks),
        "seconds_per_step": seconds / (len(marks) - 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="Model to fine-tune (alias, folder or hub id).")
    ap.add_argument("--examples", type=int, default=400, help="GSM8K training solutions to draw from.")
    ap.add_argument("--batch-size", type=int, default=4, help="Rows per micro-batch (sft.batch_size).")
    ap.add_argument("--grad-accum", type=int, default=1, help="Micro-batches per optimizer step (sft.grad_accum).")
    ap.add_argument("--max-length", type=int, default=1024, help="Tokens per row; with packing, the packed length.")
    ap.add_argument("--steps", type=int, default=6, help="Optimizer steps of each unpacked run (the first is warm-up).")
    ap.add_argument("--packed-steps", type=int, default=3, help="Optimizer steps of each packed run (the first is warm-up).")
    ap.add_argument("--repeats", type=int, default=2, help="Unpacked/packed pairs to run.")
    ap.add_argument("--threads", type=int, default=None, help="Torch threads (default: torch's); 1 is steadier on a busy machine.")
    args = ap.parse_args()
    if min(args.steps, args.packed_steps) < 2:
        sys.exit("--steps and --packed-steps must be at least 2: the first step is warm-up")

    import torch

    from cotkit.models import resolve_model_path

    if args.threads:
        torch.set_num_threads(args.threads)

    model = resolve_model_path(args.model)
    items = [{"prompt": p, "completion": c} for p, c in gsm8k_rationales(args.examples)]
    print(f"model {args.model}, {len(items)} GSM8K solutions, batch {args.batch_size} x accum {args.grad_accum}, "
          f"max_length {args.max_length}, torch threads {torch.get_num_threads()}")  # fmt: skip
    ratios = []
    for repeat in range(1, args.repeats + 1):
        plain = throughput(model, items, False, args.steps, args)
        packed = throughput(model, items, True, args.packed_steps, args)
        ratios.append(packed["tokens_per_s"] / plain["tokens_per_s"])
        for name, r in (("unpacked", plain), ("packed", packed)):
            print(
                f"repeat {repeat} {name:>8}: {r['tokens_per_s']:7.1f} tokens/s  {r['examples_per_s']:6.2f} examples/s  "
                f"{r['examples_per_step']:5.1f} examples and {r['tokens_per_step']:6.0f} tokens per step, {r['seconds_per_step']:.1f} s per step"
            )
        print(f"repeat {repeat} packed/unpacked tokens/s: {ratios[-1]:.2f}x", flush=True)
    print(f"ratio over {len(ratios)} repeats: median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
