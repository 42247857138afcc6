"""Building blocks every self-training method shares: its splits, the one backend it holds, a fine-tuning phase.

A method's `run(ctx)` reads top to bottom (sample, filter, train, evaluate); these helpers keep
the parts that are the same in every method in one place, so each method file holds only what
makes that method different.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cotkit.errors import ConfigError
from cotkit.options import option


@dataclass
class SplitLimits:
    """Which questions a method uses; a method's Config inherits it (`class MyConfig(SplitLimits)`).

    `method_splits` reads these four options, so every method spells them the same way on the
    command line (`--train-limit 50 --no-final-eval`) and in YAML. A method that wants another
    default redeclares the field in its own Config; one with its own `__post_init__` calls this one.
    """

    train_limit: int | None = option(None, help="Use only the first N questions of the `fit` split (train minus dev).")
    dev_limit: int | None = option(None, help="Evaluate on only the first N questions of the `dev` split.")
    heldout_limit: int | None = option(None, help="Final evaluation on only the first N questions of the held-out split.")
    final_eval: bool = option(True, help="Score the base and the final model on the task's held-out split.")

    def __post_init__(self) -> None:
        for name in ("train_limit", "dev_limit", "heldout_limit"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be at least 1 (or none), got {v}")


class Splits(NamedTuple):
    """The questions a method trains on (`fit`), evaluates on while training (`dev`) and at the end (held-out)."""

    fit: list[Any]
    dev: list[Any]
    heldout: list[Any]


def method_splits(ctx: Any, options: SplitLimits, *, need_dev: bool = True) -> Splits:
    """`fit`, `dev` and held-out examples cut by the options' train/dev/heldout limits; empty ones are errors."""
    task = ctx.task
    fit = task.examples("fit", limit=options.train_limit)
    dev = task.examples("dev", limit=options.dev_limit)
    heldout = task.examples(task.heldout_split, limit=options.heldout_limit) if options.final_eval else []
    if not fit:
        raise ConfigError(f"task {task.full_name} has no training questions in its `fit` split")
    if need_dev and not dev:
        raise ConfigError(f"task {task.full_name} has an empty `dev` split; set dev_size")
    return Splits(fit, dev, heldout)


class ModelSlot:
    """The one sampling backend a run holds at a time: loaded on first use, swapped by reference, released before training.

    Released, not closed: a backend that can sleep (vLLM) stays alive in the run context, and the
    next `get` loads the new checkpoint's weights into it instead of starting the engine again.
    """

    def __init__(self, ctx: Any, load: Callable[[str], Any] | None = None):
        self.ctx = ctx
        self.ref: str | None = None
        self.backend: Any = None
        self._load = load or (lambda ref: ctx.backend(ctx.model_path(ref)))

    def get(self, ref: str) -> Any:
        """The backend for `ref` ("base", "iter_001", or a method's own name), loading it if another is held."""
        if self.backend is not None and self.ref == ref:
            return self.backend
        self.close()
        self.backend = self._load(ref)
        self.ref = ref
        return self.backend

    def close(self) -> None:
        """Free the held backend's memory (the run context keeps a backend that can sleep, closes any other)."""
        if self.backend is not None:
            self.ctx.release_backend(self.backend)
        self.backend, self.ref = None, None


def fine_tune(
    ctx: Any,
    phase: str,
    label: str,
    model: str,
    items: list[Any],
    sft: Any,
    steps: int,
    out_dir: Path,
    *,
    objective: Any = None,
    on_step: Callable[[Any], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run the shared fine-tuning step as `phase` with a progress bar; the TrainResult and its metrics row.

    Every optimizer step's loss, lr and objective statistics go to `out_dir/train_log.jsonl` (and
    to the trackers); the bar shows the objective's `shown_stats` beside loss and lr.
    """
    from cotkit.harness.train import train
    from cotkit.run import is_main_process

    log = TrainLog(out_dir / "train_log.jsonl") if is_main_process() else None
    shown = getattr(objective, "shown_stats", ())
    latest: dict[str, float] = {}
    with ctx.progress(label, steps) as update:

        def step(s: Any) -> None:
            latest.update({k: v for k, v in s.stats.items() if k in shown})
            update(1, loss=s.loss, lr=s.lr, **latest)
            if log is not None:
                log(s)
            ctx.tracking.train_step(phase, s)
            if on_step is not None:
                on_step(s)

        result = train(
            model, items, sft, steps, out_dir / "checkpoint", seed=ctx.seed_for(phase), objective=objective,
            state_dir=out_dir / "train_state", on_step=step, fault_at_step=ctx.fault_step(phase),
        )  # fmt: skip
    row = {
        "checkpoint": f"{out_dir.name}/checkpoint",
        "steps": result.steps,
        "examples": result.examples,
        "examples_trained": result.examples_trained,
        "examples_per_step": round(result.examples_trained / result.steps, 1),
        "dropped_too_long": result.dropped,
        "processes": result.processes,
        "first_loss": result.losses[0],
        "final_loss": result.losses[-1],
    }
    return result, row


class TrainLog:
    """train_log.jsonl: one row per optimizer step (step, loss, lr, the objective's statistics).

    The first step a run (or a resumed run) logs drops the rows from that step on, left by the
    killed run after its last saved state; later steps append.
    """

    def __init__(self, path: Path):
        self.path = path
        self._started = False

    def __call__(self, s: Any) -> None:
        from cotkit.jsonl import append_jsonl_rows, atomic_write_jsonl, read_jsonl_tolerant

        row = {"step": s.step, "loss": s.loss, "lr": s.lr, **s.stats}
        if self._started:
            append_jsonl_rows(self.path, [row])
            return
        kept = [r for r in read_jsonl_tolerant(self.path) if r["step"] < s.step]
        atomic_write_jsonl(self.path, [*kept, row])
        self._started = True


def capped_steps(items: Sequence[Any], epochs: float, sft: Any, max_steps: int | None = None, *, model: str | None = None) -> int:
    """Optimizer steps for `epochs` passes over `items` on this many processes, at most `max_steps`.

    With `sft.packing` a step holds packed sequences, not items: the items are tokenized with
    `model`'s tokenizer and packed as training packs them, so a pass is as many steps as it makes
    packs (counted for the first epoch's order; later orders pack into a pack or two more or fewer).
    """
    from cotkit.harness.train import packs_per_epoch, steps_for_epochs
    from cotkit.run import world_size

    if sft.packing and model is None:
        raise ConfigError("sft.packing: steps counted in epochs need the model whose tokenizer packs the items")
    n = packs_per_epoch(model, items, sft) if sft.packing else len(items)
    steps = steps_for_epochs(n, epochs, sft, world_size())
    return min(steps, max_steps) if max_steps is not None else steps


def greedy_accuracy(
    ctx: Any, backend: Any, model: str, examples: list[Any], output: Path, split: str, *, style: str, max_new_tokens: int
) -> dict[str, Any]:
    """Greedy accuracy of `model` (held by `backend`) on `examples` with the task's verifier; rows to `output`."""
    from cotkit.contracts import SamplingParams
    from cotkit.harness.evaluate import evaluate
    from cotkit.harness.verify import make_verifier

    task = ctx.task
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=task.stop_sequences(style), seed=0)
    verifier = make_verifier(None, task)
    try:
        summary = evaluate(task, examples, backend, verifier, style=style, params=params, output=output, model_label=model)
    finally:
        verifier.close()
    return {"split": split, "model": model, **summary}


def eval_phases(ctx: Any, iteration: int, dev: list[Any], heldout: list[Any], evaluate: Callable[[list[Any], Path, str], Any]) -> None:
    """One iteration's evaluations as resumable phases: iter_NNN/eval_dev, then iter_NNN/eval_heldout unless `heldout` is empty.

    `evaluate(examples, output, split)` scores the method's model of that iteration (the method
    chooses the model, prompt and decoding) and returns the phase's result; the run's report,
    `cotkit compare` and the plots read these two phase names.
    """
    d, name = ctx.iter_dir(iteration), f"iter_{iteration:03d}"
    ctx.phase(f"{name}/eval_dev", lambda: evaluate(dev, d / "eval_dev.jsonl", "dev"))
    if heldout:
        ctx.phase(f"{name}/eval_heldout", lambda: evaluate(heldout, d / "eval_heldout.jsonl", ctx.task.heldout_split))


def prune_checkpoints(ctx: Any, iteration: int, keep: str) -> list[str]:
    """Delete the checkpoint folders of earlier iterations (`iter_NNN/checkpoint`, `iter_NNN/*/checkpoint`), never `keep`.

    `keep` is the model reference the method goes on with ("base" or "iter_NNN/checkpoint"): when
    an iteration trained nothing, the method keeps using an older checkpoint, and deleting it would
    leave the next sampling phase and the reported final model pointing at a missing folder. Runs
    only once the iteration's summary phase is recorded, so a resumed run never needs a pruned one,
    and only on the main process. Returns the references removed.
    """
    import shutil

    from cotkit.run import is_main_process

    if not is_main_process() or not ctx.done(f"iter_{iteration:03d}/summary"):
        return []
    removed = []
    for prev in range(1, iteration):
        folder = ctx.path / f"iter_{prev:03d}"
        for found in sorted([folder / "checkpoint", *folder.glob("*/checkpoint")]):
            ref = found.relative_to(ctx.path).as_posix()
            if ref != keep and found.is_dir():
                shutil.rmtree(found, ignore_errors=True)
                removed.append(ref)
    return removed


def phase_seconds(ctx: Any, iteration: str) -> dict[str, float]:
    """`seconds_<phase>` of every completed phase of one iteration (`iter_001`), for its funnel row."""
    prefix = iteration + "/"
    return {f"seconds_{p.split('/')[-1]}": ctx.state.phases[p]["seconds"] for p in ctx.state.phases if p.startswith(prefix)}
