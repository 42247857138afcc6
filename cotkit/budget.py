"""Tokens this process has sampled and trained on: the budget a run records per phase.

Methods sample through many doors (`cotkit.sample`, a teacher backend called directly, the live
model inside a training step) and train through one loop, so the counting sits where every door
passes: a backend from `load_backend` (or the live model) counts what its `generate` returns, a
teacher cache counts the generations it serves in the teacher's place (the method needed them, and
a resumed run then counts what an uninterrupted one does), and the training loop counts the real
tokens of every batch. `RunContext.phase` reads the totals before and after a phase and records
the difference beside the phase's seconds, which is what `cotkit compare` adds up, whichever
method ran.
"""

from __future__ import annotations

import functools
from typing import Any

_totals = {"sampled_tokens": 0, "trained_tokens": 0}


def totals() -> dict[str, int]:
    """Tokens sampled and trained by this process so far (a copy)."""
    return dict(_totals)


def count_trained(tokens: int) -> None:
    """Add tokens a training run processed (real tokens, padding left out)."""
    _totals["trained_tokens"] += int(tokens)


def count_sampled(grid: Any) -> None:
    """Add the tokens of a `generate` result (a list per prompt of generations with `n_tokens`)."""
    _totals["sampled_tokens"] += sum(int(getattr(g, "n_tokens", 0) or 0) for gens in grid for g in gens)


def counting_sampled_tokens(backend: Any) -> Any:
    """`backend` with its `generate` adding the tokens of every generation it returns to the totals."""
    generate = backend.generate

    # functools.wraps keeps the signature visible (`cotkit.harness.sample` asks whether it takes seeds).
    @functools.wraps(generate)
    def counted(*args: Any, **kwargs: Any) -> Any:
        grid = generate(*args, **kwargs)
        count_sampled(grid)
        return grid

    backend.generate = counted
    return backend
