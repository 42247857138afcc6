"""Per-step cost of sampling from the live model inside training vs an offline round (reload + checkpoint).

Both ways do the same work per optimizer step: sample one completion (`--tokens` tokens, T=1) for
each of a minibatch of `--batch` GSM8K questions from the current model, then take one optimizer
step on those completions (weight 1).

- online: one `train()` call of `--steps` steps whose `OnlineObjective` samples through `step.live`,
  the in-memory model (what TRICE does at every step);
- offline: `--steps` rounds of: load the latest checkpoint into the `hf` backend, sample, close it,
  `train()` one step from that checkpoint, which writes the next one (what a method built from
  offline rounds would have to do to sample from the current model at every step).

Seconds per step of each and their ratio are printed, run side by side in one process (absolute
numbers move on a shared machine; read the ratio). The online figure is also given without its
one-time model load, the part an offline round pays at every step.

    .venv/bin/python benchmarks/online_vs_offline.py                    # SmolLM2-135M, 3 steps, batch 4
    .venv/bin/python benchmarks/online_vs_offline.py --model PATH --steps 2 --batch 2 --tokens 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gsm8k_questions(count: int) -> list[tuple[str, str]]:
    """(id, prompt) of the first `count` GSM8K training questions, as `Q: ...\\nA:` prompts."""
    data = Path(os.environ.get("COTKIT_DATA_DIR") or REPO.parent / "shared" / "data") / "gsm8k" / "train.jsonl"
    if not data.is_file():
        sys.exit(f"no GSM8K data at {data}: set COTKIT_DATA_DIR to the folder holding gsm8k/train.jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines()[:count]]
    return [(f"gsm8k/train/{i}", f"Q: {row['question']}\nA:") for i, row in enumerate(rows)]


def online(model: str, questions: list[tuple[str, str]], args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """(seconds per step including the model load, seconds per step after the first) of one online run."""
    from cotkit import OnlineObjective, SamplingParams, SFTConfig, TrainExample, example_seed
    from cotkit.harness.train import train

    class SampleThenTrain(OnlineObjective):
        def sequences(self, step):
            params = SamplingParams(n=1, temperature=1.0, max_new_tokens=args.tokens, seed=step.seed)
            seeds = [example_seed(step.seed, qid) for qid, _ in step.items]
            grid = step.live.generate([prompt for _, prompt in step.items], params, seeds=seeds)
            return [TrainExample(prompt, gens[0].text, 1.0) for (_, prompt), gens in zip(step.items, grid)], {}

    cfg = SFTConfig(learning_rate=1e-5, warmup_steps=0, batch_size=args.batch, grad_accum=1)
    marks: list[float] = []
    started = time.perf_counter()
    train(model, questions, cfg, args.steps, out / "online", seed=0, objective=SampleThenTrain("tokens"),
          on_step=lambda log: marks.append(time.perf_counter()))  # fmt: skip
    total = time.perf_counter() - started
    after_first = statistics.median(b - a for a, b in zip(marks, marks[1:])) if len(marks) > 1 else total
    return total / args.steps, after_first


def offline(model: str, questions: list[tuple[str, str]], args: argparse.Namespace, out: Path) -> float:
    """Seconds per step of offline rounds: reload, sample, close, train one step, write a checkpoint."""
    from cotkit import SamplingParams, SFTConfig, TrainExample, example_seed, load_backend
    from cotkit.harness.train import train

    cfg = SFTConfig(learning_rate=1e-5, warmup_steps=0, batch_size=args.batch, grad_accum=1)
    current = model
    started = time.perf_counter()
    for step in range(args.steps):
        batch = [questions[(step * args.batch + i) % len(questions)] for i in range(args.batch)]
        backend = load_backend("hf", model=current)
        try:
            params = SamplingParams(n=1, temperature=1.0, max_new_tokens=args.tokens, seed=step)
            grid = backend.generate([p for _, p in batch], params, progress=False, seeds=[example_seed(step, q) for q, _ in batch])
        finally:
            backend.close()
        items = [TrainExample(prompt, gens[0].text, 1.0) for (_, prompt), gens in zip(batch, grid)]
        checkpoint = out / f"offline_{step:03d}"
        train(current, items, cfg, 1, checkpoint, seed=step)
        current = str(checkpoint)
    return (time.perf_counter() - started) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias, folder or hub id (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="questions per step (one proposal each)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per proposal")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from cotkit.models import resolve_model_path

    torch.set_num_threads(args.threads)
    model = resolve_model_path(args.model)
    questions = gsm8k_questions(args.steps * args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        per_step_online, online_after_load = online(model, questions, args, out)
        per_step_offline = offline(model, questions, args, out)
    print(f"model {args.model}, {args.steps} steps, {args.batch} proposals of {args.tokens} tokens per step, {args.threads} threads")
    print(f"online  (live model):            {per_step_online:7.2f} s/step  ({online_after_load:.2f} s/step after the one-time load)")
    print(f"offline (reload + checkpoint):   {per_step_offline:7.2f} s/step")
    print(f"offline / online: {per_step_offline / per_step_online:.2f}x  (vs online after its load: {per_step_offline / online_after_load:.2f}x)")


if __name__ == "__main__":
    main()
