"""What Quiet-STaR costs: a training step against one base forward+backward, and decoding with thoughts against without.

- train: seconds and peak memory of one forward+backward of Quiet-STaR's loss on `--batch`
  sequences of `--seq-len` tokens (thoughts at every position, `--n-passes` thoughts each) against
  one ordinary language-modelling forward+backward of the same sequences. The parallel algorithm
  runs `n_ahead + n_ahead_talk - 1` passes over `n_passes` copies of the batch, so expect a ratio
  near `n_passes x (n_ahead + n_ahead_talk - 1)` plus the attention over the growing cache.
- decode: tokens per second of the `quiet-star` backend thinking before every token (n_ahead
  `--decode-n-ahead`) against the same backend on its base path (`thoughts=false`, the same
  decode loop) and against the `hf` backend, greedy, `--prompts` GSM8K questions, `--tokens` new
  tokens each. The reference implementation decodes 7.7x slower with thoughts.

Each measurement runs in its own process (peak memory is the process's maximum resident set on
CPU, the CUDA peak on a GPU), the variants side by side on the same machine: read the ratios.
The model's thoughts are fresh (untrained): their cost does not depend on training.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/quiet_star_cost.py
    .venv/bin/python benchmarks/quiet_star_cost.py --model PATH --seq-len 64 --n-ahead 4 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gsm8k_texts(count: int) -> list[str]:
    data = Path(os.environ.get("COTKIT_DATA_DIR") or REPO.parent / "shared" / "data") / "gsm8k" / "train.jsonl"
    if not data.is_file():
        sys.exit(f"no GSM8K data at {data}: set COTKIT_DATA_DIR to the folder holding gsm8k/train.jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines()[:count]]
    return [f"Q: {row['question']}\nA: {row['answer']}" for row in rows]


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_train(args: argparse.Namespace, variant: str) -> dict:
    """Median seconds of one forward+backward (after a warm-up) and the process's peak memory."""
    import torch
    from cotkit_plugins.methods.quiet_star_loss import LossWeights, sequence_losses
    from cotkit_plugins.methods.quiet_star_model import ThoughtSettings, add_thoughts
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotkit import resolve_model

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(gsm8k_texts(args.batch), return_tensors="pt", truncation=True, max_length=args.seq_len, padding="max_length")
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    if variant == "quiet-star":
        settings = ThoughtSettings(n_ahead=args.n_ahead, n_ahead_talk=args.n_ahead_talk, n_passes=args.n_passes)
        model = add_thoughts(model, tokenizer, settings, log=lambda _: None)
    model.train()

    def step() -> None:
        if variant == "base":
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        else:
            rows = ids.repeat(args.n_passes, 1), mask.repeat(args.n_passes, 1)
            loss = sequence_losses(model.rollout(*rows), args.n_passes, LossWeights())[0].sum()
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return {"seconds": statistics.median(seconds), "peak_mb": peak_memory_mb()}


def measure_decode(args: argparse.Namespace, variant: str) -> dict:
    """Seconds and generated tokens of greedy decoding of the prompts (after a warm-up call)."""
    from cotkit import SamplingParams, load_backend

    prompts = [text.split("\nA:")[0] + "\nA:" for text in gsm8k_texts(args.prompts)]
    if variant == "hf":
        backend = load_backend("hf", model=args.model, batch_size=args.prompts)
    else:
        backend = load_backend("quiet-star", model=args.model, batch_size=args.prompts, n_ahead=args.decode_n_ahead, thoughts=variant == "thoughts")
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=args.tokens)
    backend.generate(prompts[:2], SamplingParams(n=1, temperature=0.0, max_new_tokens=2), progress=False)
    started = time.perf_counter()
    grid = backend.generate(prompts, params, progress=False)
    seconds = time.perf_counter() - started
    tokens = sum(g[0].n_tokens for g in grid)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "peak_mb": peak_memory_mb()}


def in_subprocess(args: argparse.Namespace, kind: str, variant: str) -> dict:
    argv = [sys.executable, __file__, "--only", f"{kind}:{variant}", *sys.argv[1:]]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, env={**os.environ, "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    if out.returncode:
        sys.exit(f"{kind}:{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2, help="sequences per training step")
    parser.add_argument("--n-ahead", type=int, default=8)
    parser.add_argument("--n-ahead-talk", type=int, default=4)
    parser.add_argument("--n-passes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--decode-n-ahead", type=int, default=8)
    parser.add_argument("--only", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        kind, variant = args.only.split(":")
        print(json.dumps((measure_train if kind == "train" else measure_decode)(args, variant)))
        return

    base, thinking = in_subprocess(args, "train", "base"), in_subprocess(args, "train", "quiet-star")
    passes = args.n_passes * (args.n_ahead + args.n_ahead_talk - 1)
    print(f"training step, {args.batch} x {args.seq_len} tokens, n_ahead {args.n_ahead}, n_ahead_talk {args.n_ahead_talk}, n_passes {args.n_passes}:")
    print(f"  base forward+backward   {base['seconds']:.3f} s   peak {base['peak_mb']:.0f} MB")
    print(f"  quiet-star step         {thinking['seconds']:.3f} s   peak {thinking['peak_mb']:.0f} MB")
    print(f"  ratio {thinking['seconds'] / base['seconds']:.1f}x time (model passes over the batch: {passes}), {thinking['peak_mb'] / base['peak_mb']:.2f}x peak memory")
    results = {v: in_subprocess(args, "decode", v) for v in ("hf", "no-thoughts", "thoughts")}
    print(f"decoding, {args.prompts} prompts x {args.tokens} new tokens, greedy, thoughts of n_ahead {args.decode_n_ahead}:")
    for v, r in results.items():
        print(f"  {v:<12} {r['tokens_per_s']:7.1f} tokens/s  ({r['tokens']} tokens in {r['seconds']:.2f} s)")
    slow = results["no-thoughts"]["tokens_per_s"] / results["thoughts"]["tokens_per_s"]
    slow_hf = results["hf"]["tokens_per_s"] / results["thoughts"]["tokens_per_s"]
    print(f"  with thoughts: {slow:.1f}x slower than the same loop without, {slow_hf:.1f}x slower than hf (the reference: 7.7x)")


if __name__ == "__main__":
    main()
