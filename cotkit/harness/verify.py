"""Verify samples in batches with one verifier, whatever produced them."""

from __future__ import annotations

from typing import Any

from cotkit.contracts import Task, Verifier
from cotkit.types import Sample, Status, Verdict


def make_verifier(name: str | None, task: Task, **options: Any) -> Verifier:
    """An instance of the named verifier, or of the task's default one."""
    from cotkit.plugins import host

    cls = host().get("verifier", name or task.default_verifier)
    return cls(**options)


def verify_samples(samples: list[Sample], verifier: Verifier, batch_size: int = 512) -> list[Verdict]:
    """Verdicts for samples (also stored on each sample); a verifier crash becomes `error` verdicts."""
    verdicts: list[Verdict] = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        try:
            got = verifier.verify(batch)
            if len(got) != len(batch):
                raise RuntimeError(f"returned {len(got)} verdicts for {len(batch)} samples")
        except Exception as e:  # a verifier bug must not lose the rest of the run
            reason = f"verifier {verifier.name} failed: {type(e).__name__}: {e}"
            got = [Verdict(Status.ERROR, reason=reason) for _ in batch]
        for sample, verdict in zip(batch, got):
            sample.verdict = verdict
        verdicts.extend(got)
    return verdicts


def summarize(verdicts: list[Verdict]) -> dict[str, Any]:
    """n, correct, accuracy (over rows without errors), unparseable rate and error count."""
    n = len(verdicts)
    counts = {s: 0 for s in Status}
    for v in verdicts:
        counts[v.status] += 1
    scored = n - counts[Status.ERROR]
    correct = counts[Status.CORRECT]
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / scored if scored else 0.0,
        "unparseable": counts[Status.UNPARSEABLE] / scored if scored else 0.0,
        "unparseable_count": counts[Status.UNPARSEABLE],
        "timeouts": counts[Status.TIMEOUT],
        "errors": counts[Status.ERROR],
    }


def sample_row(sample: Sample, include_prompt: bool = False) -> dict[str, Any]:
    """A sample as a JSONL row in `cotkit score` format: the task's raw fields, `completion`, verdict fields.

    `cotkit score` reads these rows back, so any run's samples can be re-scored later.
    """
    # `task` lets `cotkit score --task bbh` (a group) score each row with its own subtask.
    row: dict[str, Any] = {"task": sample.example.task, **sample.example.raw, "completion": sample.completion}
    if sample.verdict is not None:
        row.update(sample.verdict.to_dict())
    if include_prompt and sample.prompt is not None:
        row["prompt"] = sample.prompt
    if sample.meta:
        row["meta"] = sample.meta
    return row
