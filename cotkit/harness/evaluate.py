"""Held-out evaluation inside a training run: sample, verify with the task's verifier, summarise.

The same `sample` and `verify_samples` steps that build training data score the model, so a
training gain and an evaluation gain are measured by one ruler. `cotkit eval` (lm-eval) is the
outside check; this is the in-process one a method calls after every iteration.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from cotkit.contracts import Backend, SamplingParams, Task, Verifier
from cotkit.harness.verify import sample_row, summarize, verify_samples
from cotkit.jsonl import atomic_write_jsonl
from cotkit.types import Example


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at 0, n and small n, unlike the normal one)."""
    if n <= 0:
        return 0.0, 0.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(
    task: Task,
    examples: list[Example],
    backend: Backend,
    verifier: Verifier,
    *,
    style: str = "fewshot",
    params: SamplingParams | None = None,
    output: str | Path | None = None,
    progress: bool = True,
    model_label: str | None = None,
) -> dict[str, Any]:
    """Accuracy of `backend`'s model on `examples` (greedy by default), with a 95% CI.

    Writes one row per sample to `output` (the `cotkit score` row format plus the prompt) and
    returns the summary: n, correct, accuracy, ci_low, ci_high, unparseable rate and count, errors.
    `model_label` replaces the backend's model path in each row (run directories stay relocatable).
    """
    from cotkit.harness.sample import sample

    if params is None:
        params = SamplingParams(n=1, temperature=0.0, stop=task.stop_sequences(style))
    samples = sample(task, examples, backend, params, style=style, hint=False, progress=progress)
    verdicts = verify_samples(samples, verifier)
    if model_label is not None:
        for s in samples:
            s.meta["model"] = model_label
    if output is not None:
        atomic_write_jsonl(output, [sample_row(s, include_prompt=True) for s in samples])
    summary = summarize(verdicts)
    # The most common answer and its share of the parsed answers: a model that says "yes" to
    # everything scores the base rate of "yes", and this makes that visible.
    answers = Counter(v.normalized or v.extracted for v in verdicts if v.extracted is not None)
    top, top_count = answers.most_common(1)[0] if answers else (None, 0)
    scored = summary["n"] - summary["errors"]
    low, high = wilson_interval(summary["correct"], scored)
    parsed = scored - summary["unparseable_count"] - summary["timeouts"]
    summary.update(
        {
            "examples": len(examples),
            "ci_low": round(low, 6),
            "ci_high": round(high, 6),
            "accuracy": round(summary["accuracy"], 6),
            "unparseable": round(summary["unparseable"], 6),
            # accuracy among answers the verifier could read: separates format from correctness
            "accuracy_parsed": round(summary["correct"] / parsed, 6) if parsed else None,
            "top_answer": top,
            "top_answer_share": round(top_count / sum(answers.values()), 6) if answers else None,
            "style": style,
        }
    )
    return summary
