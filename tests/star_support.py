"""A tiny model that already answers BBH sports_understanding in the task's format.

A random tiny model never produces a parseable answer, so STaR would have nothing to keep and the
fine-tuning step would never run. A few steps of SFT on the gold answer sentence (zero-shot
prompts, questions outside the slice the tests sample) give a model whose greedy answers parse and
are right about half the time: every STaR phase then has real work to do.
"""

from __future__ import annotations

from pathlib import Path

TASK = "bbh:sports_understanding"


def build_formatted_model(tiny_model: Path, data_dir: Path, out: Path) -> Path:
    """SFT the tiny model on ` So the answer is yes|no.` for the last 60 `fit` questions."""
    from cotkit.harness.train import SFTConfig, TrainExample, train
    from cotkit.plugins import host

    task = host().task(TASK, data_dir=data_dir)
    fit = task.examples("fit")
    items = [TrainExample(task.prompt(e, "zeroshot"), " " + task.answer_sentence(e)) for e in fit[-60:]]
    cfg = SFTConfig(learning_rate=3e-3, warmup_steps=0, batch_size=8, grad_accum=1)
    train(str(tiny_model), items, cfg, 30, out, seed=0)
    return out


def star_args(model: Path, out: Path) -> list[str]:
    """`cotkit train` arguments of a small but complete STaR run (2 iterations, every phase)."""
    return [
        "train", "--method", "star", "--task", TASK, "--model", str(model), "--output-dir", str(out),
        "--style", "zeroshot", "--iterations", "2", "--train-limit", "12", "--dev-limit", "6",
        "--heldout-limit", "6", "--max-new-tokens", "12", "--steps", "2", "--step-growth", "1.5",
        "--sft.learning-rate", "1e-3", "--sft.warmup-steps", "1", "--sft.batch-size", "2", "--sft.grad-accum", "2",
        "--sft.save-every", "1", "--backend-option", "batch_size=8",
    ]
