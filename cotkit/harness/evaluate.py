"""Held-out evaluation inside a training run: sample, verify with the task's verifier, summarise.

The same `sample` and `verify_samples` steps that build training data score the model, so a
training gain and an evaluation gain are measured by one ruler. `cotkit eval` (lm-eval) is the
outside check; this is the in-process one a method calls after every iteration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cotkit.contracts import Backend, SamplingParams, Task, Verifier
from cotkit.harness.verify import sample_row, summarize, verify_samples, vote_summary
from cotkit.jsonl import atomic_write_jsonl
from cotkit.types import Example


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
    majority_vote: bool = False,
) -> dict[str, Any]:
    """Accuracy of `backend`'s model on `examples` (greedy by default), with a 95% CI.

    Writes one row per sample to `output` (the `cotkit score` row format plus the prompt, the
    example's id in `meta.id`) and
    returns the summary (`cotkit.harness.verify.summarize`): n, correct, accuracy over all n with its
    CI, accuracy of parsed answers, unparseable, timeout and error counts, the most common answer.
    `model_label` replaces the backend's model path in each row (run directories stay relocatable).
    With `majority_vote` (and `params.n` samples per question) the summary is maj@n over the
    questions instead (`cotkit.harness.verify.vote_summary`: a tie goes to the answer sampled
    first), and each row's `meta.majority_vote` marks the sample that carried its question's vote.
    """
    from cotkit.harness.sample import sample

    if params is None:
        params = SamplingParams(n=1, temperature=0.0, stop=task.stop_sequences(style))
    samples = sample(task, examples, backend, params, style=style, hint=False, progress=progress)
    verdicts = verify_samples(samples, verifier)
    for s in samples:
        s.meta["id"] = s.example.id  # pairs a question's verdicts across models and runs (`cotkit compare`)
        if model_label is not None:
            s.meta["model"] = model_label
    summary = vote_summary(samples) if majority_vote else summarize(verdicts)
    if output is not None:
        atomic_write_jsonl(output, [sample_row(s, include_prompt=True) for s in samples])
    # every rate over all n rows (`summarize`): errors and timeouts count as rows without a correct answer
    for key in ("accuracy", "ci_low", "ci_high", "unparseable", "accuracy_parsed", "top_answer_share"):
        if summary.get(key) is not None:
            summary[key] = round(summary[key], 6)
    summary.update({"examples": len(examples), "style": style})
    return summary
