"""Sample completions for task examples with any backend: the step every method and evaluation shares.

Seeds: example `e` gets the seed `example_seed(params.seed, e.id)` and its sample j is drawn with
`that + j` (the backend's per-request seed), recorded in `Sample.meta["seed"]`. A sample therefore
depends on the run seed, the example and the sample index only: not on the other examples, their
order, the batch size or `--limit`. Re-drawing one sample alone:
`backend.generate([prompt], replace(params, n=1), seeds=[sample.meta["seed"]])`.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from dataclasses import replace

from cotkit.contracts import Backend, SamplingParams, Task, check_styles, sample_seed
from cotkit.errors import ModelError
from cotkit.types import Example, Sample


def example_seed(base: int, example_id: str) -> int:
    """The seed of an example's first sample, derived from the run seed and the example id."""
    digest = hashlib.sha256(f"{base}\x00{example_id}".encode()).digest()
    # Leave headroom so `seed + sample_index` stays below 2**63.
    return int.from_bytes(digest[:8], "big") & ((1 << 62) - 1)


def merge_stops(*lists: Sequence[str] | None) -> list[str]:
    """Stop sequences from several sources, without empties or repeats, first occurrence first."""
    out: list[str] = []
    for stops in lists:
        for s in stops or []:
            if s and s not in out:
                out.append(s)
    return out


def accepts_seeds(backend: Backend) -> bool:
    """Whether the backend's `generate` takes per-prompt seeds (reproducible sampling per example)."""
    try:
        return "seeds" in inspect.signature(backend.generate).parameters
    except (TypeError, ValueError):
        return False


def sample(
    task: Task,
    examples: list[Example],
    backend: Backend,
    params: SamplingParams,
    style: str = "fewshot",
    hint: bool | str = False,
    progress: bool = True,
) -> list[Sample]:
    """`params.n` samples per example, flattened in example order (all of example 0's samples first).

    Prompts come from `task.prompt(example, style, hint)`; generation stops at the task's stop
    sequences for the style plus `params.stop`, recorded on each sample so verifiers cut there too.
    """
    check_styles(style)
    if not examples:
        return []
    stop = merge_stops(task.stop_sequences(style), params.stop)
    run_params = replace(params, stop=stop or None)
    prompts = [task.prompt(ex, style=style, hint=hint) for ex in examples]
    seeds = [example_seed(params.seed, ex.id) for ex in examples]
    if accepts_seeds(backend):
        grid = backend.generate(prompts, run_params, progress=progress, seeds=seeds)
    else:  # a third-party backend without per-request seeds: reproducible per call only
        grid = backend.generate(prompts, run_params, progress=progress)
        seeds = [params.seed] * len(examples)
    if len(grid) != len(examples) or any(len(g) != params.n for g in grid):
        raise ModelError(
            f"backend {backend.name} returned {[len(g) for g in grid][:5]}... generations for "
            f"{len(examples)} prompts x n={params.n}"
        )
    samples = []
    for example, prompt, seed, generations in zip(examples, prompts, seeds, grid):
        for j, gen in enumerate(generations):
            samples.append(
                Sample(
                    example=example,
                    completion=gen.text,
                    prompt=prompt,
                    stop=list(stop),
                    meta={
                        "sample_index": j,
                        "seed": sample_seed(seed, j),
                        "backend": backend.name,
                        "model": backend.model_name,
                        "n_tokens": gen.n_tokens,
                        "finish_reason": gen.finish_reason,
                        "temperature": params.temperature,
                        "style": style,
                        "hint": hint,
                        **gen.meta,
                    },
                )
            )
    return samples
