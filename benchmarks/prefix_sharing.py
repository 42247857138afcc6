"""Few-shot sampling with the prompts' shared prefix prefilled once vs prefilled with every row.

The hf backend finds the longest token prefix common to a batch's prompts (a few-shot prompt's
exemplars), prefills it once and copies its KV cache to every row (`shared_prefix_length` in
plugins/backends/hf.py). This prints the seconds of the same `cotkit.sample` call (GSM8K, the
task's few-shot prompt, T=1, seeded) with sharing and with it switched off, run alternately in one
process, their ratio (median of `--repeats`), and whether the completions agree. Absolute seconds
move on a shared machine; read the ratio.

    .venv/bin/python benchmarks/prefix_sharing.py                      # SmolLM2-135M, 16 questions, 64 tokens
    .venv/bin/python benchmarks/prefix_sharing.py --model PATH --questions 8 --tokens 16 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from cotkit import SamplingParams, load_backend, load_task, sample
    from plugins.backends import hf

    data_dir = os.environ.get("COTKIT_DATA_DIR") or str(REPO.parent / "shared" / "data")
    task = load_task(args.task, data_dir=data_dir)
    examples = task.examples(task.heldout_split)[: args.questions]
    backend = load_backend("hf", model=args.model, batch_size=args.questions)
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=args.tokens, stop=task.stop_sequences("fewshot"), seed=1)
    prompt_tokens = len(backend.encode(task.prompt(examples[0], "fewshot")))
    on_switch = hf.MIN_SHARED_PREFIX

    def timed(share: bool) -> tuple[float, list[str]]:
        hf.MIN_SHARED_PREFIX = on_switch if share else 10**9
        start = time.perf_counter()
        samples = sample(task, examples, backend, params, style="fewshot", progress=False)
        return time.perf_counter() - start, [s.completion for s in samples]

    timed(True)  # warm-up: allocator, kernels
    shared, each, agree = [], [], 0
    for _ in range(args.repeats):
        (t_shared, a), (t_each, b) = timed(True), timed(False)
        shared.append(t_shared)
        each.append(t_each)
        agree += sum(x == y for x, y in zip(a, b))
    backend.close()
    ratio = statistics.median(e / s for e, s in zip(each, shared))
    print(f"{args.model}, {args.task} few-shot prompt of {prompt_tokens} tokens, {args.questions} questions x {args.tokens} new tokens, T=1")
    print(f"  prefix prefilled with every row: {statistics.median(each):.1f} s")
    print(f"  shared prefix prefilled once:    {statistics.median(shared):.1f} s")
    print(f"  speed-up {ratio:.2f}x (median of {args.repeats}); identical completions {agree}/{args.questions * args.repeats}")


if __name__ == "__main__":
    main()
