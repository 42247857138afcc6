"""Sampling throughput of the hf backend against a naive one-prompt-at-a-time `generate` loop.

Everything is measured side by side in one process on the same loaded model, so the ratios hold
on a noisy shared machine even when the absolute numbers move:

1. greedy (temperature 0): the backend's batched decoding of P prompts against transformers'
   `model.generate` called on one prompt at a time; both produce P completions, which are compared
   for equality (left padding and batch shape can change fp32 rounding, so a rare mismatch is
   possible and reported as it is);
2. sampling (temperature 0.7, n samples per prompt): the backend against a loop that calls
   `model.generate(do_sample=True)` once per sample; the naive loop runs on the first
   `--naive-prompts` prompts only (its rate, tokens per second, is what is compared);
3. decode at batch 1 against this machine's memory bandwidth: every generated token reads all the
   weights once, so tokens/s can not exceed bandwidth / weight bytes.

    .venv/bin/python benchmarks/sampling_throughput.py                  # SmolLM2-135M, 32 prompts x n=4
    .venv/bin/python benchmarks/sampling_throughput.py --model PATH --prompts 8 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gsm8k_prompts(count: int) -> list[str]:
    """Zero-shot GSM8K prompts from the local data directory (real questions, varied lengths)."""
    data = Path(os.environ.get("COTKIT_DATA_DIR") or REPO.parent / "shared" / "data") / "gsm8k" / "test.jsonl"
    if not data.is_file():
        sys.exit(f"no GSM8K data at {data}: set COTKIT_DATA_DIR to the folder holding gsm8k/test.jsonl")
    questions = [json.loads(line)["question"] for line in data.read_text().splitlines()[:count]]
    return [f"Question: {q}\nAnswer: Let's think step by step." for q in questions]


def naive_loop(backend, prompts: list[str], n: int, max_new_tokens: int, temperature: float) -> tuple[list[list[str]], int, float]:
    """transformers' generate() once per sample, batch 1: (texts, generated tokens, seconds)."""
    import torch

    model, tok = backend.model, backend.tokenizer
    eos = sorted(backend.eos_ids)
    texts, tokens = [], 0
    start = time.perf_counter()
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt").to(model.device)
        row = []
        for _ in range(n):
            kwargs = {"do_sample": True, "temperature": temperature, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=eos, **kwargs)
            new = out[0, enc.input_ids.shape[1] :].tolist()
            tokens += len(new)
            row.append(tok.decode([t for t in new if t not in eos], skip_special_tokens=True))
        texts.append(row)
    return texts, tokens, time.perf_counter() - start


def batched(backend, prompts: list[str], n: int, max_new_tokens: int, temperature: float):
    """The backend's generate(): (generations, generated tokens, seconds)."""
    from cotkit.contracts import SamplingParams

    start = time.perf_counter()
    grid = backend.generate(prompts, SamplingParams(n=n, temperature=temperature, max_new_tokens=max_new_tokens, seed=1), progress=False)
    seconds = time.perf_counter() - start
    return grid, sum(g.n_tokens for row in grid for g in row), seconds


def memory_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """Best observed read+write bandwidth of a large tensor copy, GB/s."""
    import torch

    src = torch.ones(megabytes * (1 << 20) // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = max(best, 2 * src.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return best


def decode_rate_batch1(backend, steps: int = 48) -> float:
    """Tokens per second of KV-cached decoding at batch 1 (prefill excluded)."""
    import torch
    from transformers import DynamicCache

    model, tok = backend.model, backend.tokenizer
    ids = torch.tensor([tok("Question: Natalia sold clips to 48 of her friends.").input_ids], device=model.device)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1]
        start = time.perf_counter()
        for _ in range(steps):
            nxt = logits.argmax(-1, keepdim=True)
            logits = model(input_ids=nxt, past_key_values=cache, use_cache=True).logits[:, -1]
        return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--naive-prompts", type=int, default=4, help="prompts the naive sampling loop runs on (rate only)")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's); 1 is steadier on a busy machine")
    parser.add_argument("--only", choices=("greedy", "sampling", "decode"), help="run one part")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()

    import torch

    from cotkit.models import load_backend

    if args.threads:
        torch.set_num_threads(args.threads)

    backend = load_backend("hf", model=args.model, batch_size=args.batch_size)
    prompts = gsm8k_prompts(args.prompts)
    print(f"model {args.model} on {backend.device} ({backend.dtype}), torch threads {torch.get_num_threads()}, "
          f"batch size {backend.batch_size}, {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}")  # fmt: skip
    figures: dict[str, float] = {}

    # Warm up both paths (first calls allocate memory and pick kernels) before timing anything.
    batched(backend, prompts[:4], 1, 4, 0.0)
    naive_loop(backend, prompts[:1], 1, 4, 0.0)

    if args.only in (None, "greedy"):
        greedy_part(backend, prompts, args, figures)
    if args.only in (None, "sampling"):
        sampling_part(backend, prompts, args, figures)
    if args.only in (None, "decode"):
        decode_part(backend, figures)
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    backend.close()


def greedy_part(backend, prompts: list[str], args: argparse.Namespace, figures: dict[str, float]) -> None:
    """Greedy completions of the backend and of the naive loop: speed and equality."""
    grid, b_tokens, b_s = batched(backend, prompts, 1, args.max_new_tokens, 0.0)
    naive_texts, n_tokens, n_s = naive_loop(backend, prompts, 1, args.max_new_tokens, 0.0)
    same = sum(row[0] == g[0].text for row, g in zip(naive_texts, grid))
    figures.update(greedy_batched_tps=b_tokens / b_s, greedy_naive_tps=n_tokens / n_s, greedy_same=same)
    print(f"\n1. greedy, {len(prompts)} prompts x 1")
    print(f"   naive generate() loop : {n_tokens:6d} tokens in {n_s:7.1f} s = {n_tokens / n_s:7.1f} tok/s")
    print(f"   hf backend, batched   : {b_tokens:6d} tokens in {b_s:7.1f} s = {b_tokens / b_s:7.1f} tok/s")
    print(f"   speed-up {b_tokens / b_s / (n_tokens / n_s):.1f}x; identical completions: {same}/{len(prompts)}")
    _, g_tokens, g_s = batched(backend, prompts, args.n, args.max_new_tokens, 0.0)
    print(f"   greedy with n={args.n}: {g_tokens} tokens delivered in {g_s:.1f} s = {g_tokens / g_s:.1f} tok/s "
          "(identical prompts are decoded once at temperature 0)")  # fmt: skip


def sampling_part(backend, prompts: list[str], args: argparse.Namespace, figures: dict[str, float]) -> None:
    """n samples per prompt at temperature 0.7: the backend against one generate() call per sample."""
    grid, s_tokens, s_s = batched(backend, prompts, args.n, args.max_new_tokens, 0.7)
    sub = prompts[: args.naive_prompts]
    _, ns_tokens, ns_s = naive_loop(backend, sub, args.n, args.max_new_tokens, 0.7)
    figures.update(sampled_batched_tps=s_tokens / s_s, sampled_naive_tps=ns_tokens / ns_s)
    print(f"\n2. sampling at temperature 0.7, n={args.n}")
    print(f"   naive generate() loop : {ns_tokens:6d} tokens in {ns_s:7.1f} s = {ns_tokens / ns_s:7.1f} tok/s ({len(sub)} prompts x {args.n})")
    print(f"   hf backend, batched   : {s_tokens:6d} tokens in {s_s:7.1f} s = {s_tokens / s_s:7.1f} tok/s ({len(prompts)} prompts x {args.n})")
    print(f"   speed-up {s_tokens / s_s / (ns_tokens / ns_s):.1f}x")


def decode_part(backend, figures: dict[str, float]) -> None:
    """Batch-1 decode rate against the memory-bandwidth bound (all weights read per token)."""
    weight_bytes = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    rate = decode_rate_batch1(backend)
    bandwidth = memory_bandwidth_gbs()
    bound = bandwidth * 1e9 / weight_bytes
    figures.update(decode_b1_tps=rate, bandwidth_gbs=bandwidth, weight_mb=weight_bytes / 1e6, bandwidth_bound_tps=bound)
    print("\n3. decode at batch 1")
    print(f"   weights read per token: {weight_bytes / 1e6:.0f} MB ({backend.dtype})")
    print(f"   memory bandwidth (copy, read+write): {bandwidth:.1f} GB/s -> at most {bound:.1f} tok/s")
    print(f"   measured: {rate:.1f} tok/s = {rate / bound:.0%} of the bandwidth bound")


if __name__ == "__main__":
    main()
