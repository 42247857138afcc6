"""Wall time of a run's sampling phases on the vllm backend: one engine kept alive against a restart per model.

A self-training method samples from the base model, fine-tunes, samples from the checkpoint,
fine-tunes again, and so on. This benchmark replays that sequence without the training: the
"checkpoints" are copies of the model with its weights perturbed by a little seeded noise (so
each one really samples differently), written once before anything is timed. Both ways run the
same prompts with the same seeds, each in a fresh process as a run would (the first engine start
in a process pays one-time costs the later ones do not):

- keep alive: one engine; between models the backend sleeps and loads the next checkpoint's
  weights (`sleep()` + `load_weights()`, what a run's context does through `ModelSlot`);
- restart: the engine is shut down and started again for every model (`keep_alive=false`).

It prints, side by side, engine start-up, model switching, sampling and the total, the ratio of
the totals, and how many samples of each model both ways drew the same. Needs vLLM (`.venv-vllm`
on a CPU):

    .venv-vllm/bin/python benchmarks/vllm_keep_alive.py                       # SmolLM2-135M, 2 fine-tunings
    .venv-vllm/bin/python benchmarks/vllm_keep_alive.py --checkpoints 3 --prompts 16 -B enforce_eager=false
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gsm8k_prompts(count: int) -> list[str]:
    """Zero-shot GSM8K prompts from the local data directory."""
    data = Path(os.environ.get("COTKIT_DATA_DIR") or REPO.parent / "shared" / "data") / "gsm8k" / "test.jsonl"
    if not data.is_file():
        sys.exit(f"no GSM8K data at {data}: set COTKIT_DATA_DIR to the folder holding gsm8k/test.jsonl")
    questions = [json.loads(line)["question"] for line in data.read_text().splitlines()[:count]]
    return [f"Question: {q}\nAnswer: Let's think step by step." for q in questions]


def perturbed_copies(model: str, count: int, folder: Path) -> list[str]:
    """`count` copies of `model` with seeded noise (0.1% of each weight's spread) added: stand-ins for fine-tuned checkpoints."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotkit.models import resolve_model

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    copies = []
    for i in range(1, count + 1):
        weights = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in weights.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * p.std() * 1e-3)
        out = folder / f"checkpoint-{i}"
        weights.save_pretrained(out)
        tokenizer.save_pretrained(out)
        copies.append(str(out))
    return copies


def run(models: list[str], prompts: list[str], params, options: dict, keep_alive: bool) -> tuple[dict[str, float], list]:
    """Sample from each model in turn: (seconds per part, the samples)."""
    from cotkit.models import load_backend

    seconds = {"start": 0.0, "switch": 0.0, "sample": 0.0}
    samples = []
    backend = None
    for model in models:
        t0 = time.perf_counter()
        if backend is not None and keep_alive:
            if not (backend.sleep() and backend.load_weights(model)):
                sys.exit(f"the vllm backend could not load {model} into its engine")
            seconds["switch"] += time.perf_counter() - t0
        else:
            if backend is not None:
                backend.close()
            backend = load_backend("vllm", model=model, keep_alive=keep_alive, **options)
            seconds["start"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        grid = backend.generate(prompts, params, progress=False, seeds=list(range(len(prompts))))
        seconds["sample"] += time.perf_counter() - t0
        samples.append([[g.text for g in row] for row in grid])
    backend.close()
    seconds["total"] = sum(seconds.values())
    return seconds, samples


def in_fresh_process(mode: str, models: list[str], args: argparse.Namespace, folder: Path) -> tuple[dict[str, float], list]:
    """Run one way (`keep` or `restart`) in a new Python process: (seconds per part, the samples)."""
    result = folder / f"{mode}.json"
    command = [sys.executable, __file__, "--mode", mode, "--result", str(result), "--models", json.dumps(models)]
    command += ["--prompts", str(args.prompts), "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens)]
    command += [f"-B{o}" for o in args.options]
    subprocess.run(command, check=True)
    found = json.loads(result.read_text())
    return found["seconds"], found["samples"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--checkpoints", type=int, default=2, help="models after the base one (fine-tunings replayed)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("-B", dest="options", action="append", default=["enforce_eager=true"], help="vllm backend option KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--mode", choices=("keep", "restart"), help=argparse.SUPPRESS)  # one way, in the process main() starts
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import yaml

    from cotkit.contracts import SamplingParams

    prompts = gsm8k_prompts(args.prompts)
    if args.mode:
        options = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.options)}
        params = SamplingParams(n=args.n, temperature=0.7, max_new_tokens=args.max_new_tokens)
        seconds, samples = run(json.loads(args.models), prompts, params, options, keep_alive=args.mode == "keep")
        Path(args.result).write_text(json.dumps({"seconds": seconds, "samples": samples}))
        return
    with tempfile.TemporaryDirectory(prefix="cotkit-keep-alive-") as tmp:
        models = [args.model, *perturbed_copies(args.model, args.checkpoints, Path(tmp))]
        print(f"{args.model} and {args.checkpoints} perturbed copies; {len(prompts)} prompts x n={args.n} at temperature 0.7, "
              f"max_new_tokens {args.max_new_tokens}; options {args.options}")  # fmt: skip
        kept, kept_samples = in_fresh_process("keep", models, args, Path(tmp))
        restarted, restarted_samples = in_fresh_process("restart", models, args, Path(tmp))

    starts = len(models)
    rows = [
        ("engine start-up", f"{kept['start']:.1f} s (1 start)", f"{restarted['start']:.1f} s ({starts} starts)"),
        ("switching model", f"{kept['switch']:.1f} s ({starts - 1} weight loads)", "-"),
        ("sampling", f"{kept['sample']:.1f} s", f"{restarted['sample']:.1f} s"),
        ("total", f"{kept['total']:.1f} s", f"{restarted['total']:.1f} s"),
    ]
    print(f"\n{'':18s} {'keep alive':>28s} {'restart per model':>28s}")
    for name, a, b in rows:
        print(f"{name:18s} {a:>28s} {b:>28s}")
    same = [sum(a == b for ra, rb in zip(ka, kb) for a, b in zip(ra, rb)) for ka, kb in zip(kept_samples, restarted_samples)]
    per_model = len(prompts) * args.n
    print(f"\nrestart / keep alive: {restarted['total'] / kept['total']:.2f}x the wall time")
    print("identical samples, base then each checkpoint: " + ", ".join(f"{k}/{per_model}" for k in same))
    if args.json:
        print(json.dumps({"keep_alive": kept, "restart": restarted, "ratio": restarted["total"] / kept["total"], "identical": same, "per_model": per_model}))


if __name__ == "__main__":
    main()
