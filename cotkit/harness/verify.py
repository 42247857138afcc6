"""Verify samples in batches with one verifier, whatever produced them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from cotkit.contracts import Task, Verifier
from cotkit.errors import CotkitError
from cotkit.stats import wilson_interval
from cotkit.types import Sample, Status, Verdict


def make_verifier(name: str | None, task: Task | None = None, **options: Any) -> Verifier:
    """An instance of the named verifier, or of the task's default one when `name` is None."""
    from cotkit.plugins import host

    if name is None and task is None:
        raise TypeError("make_verifier needs a verifier name or a task")
    cls = host().get("verifier", name or task.default_verifier)
    return cls(**options)


def verify_samples(samples: list[Sample], verifier: Verifier, batch_size: int = 512) -> list[Verdict]:
    """Verdicts for samples (also stored on each sample); each sample is judged on its own.

    A verifier that raises on a batch, or returns the wrong number of verdicts, is asked again one
    sample at a time, so only the samples it fails on get `error` verdicts: no row's content can
    change another row's verdict. A `CotkitError` names a problem of the setup (a sandbox that
    cannot start), which no row causes: it makes the batch's verdicts `error` without retries.
    """
    verdicts: list[Verdict] = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        try:
            got = _checked(verifier.verify(batch), len(batch))
        except CotkitError as e:
            got = [_error_verdict(verifier, e) for _ in batch]
        except Exception:  # one sample's content broke the verifier: find which, keep the others
            got = [_verify_alone(sample, verifier) for sample in batch]
        for sample, verdict in zip(batch, got):
            sample.verdict = verdict
        verdicts.extend(got)
    return verdicts


def _verify_alone(sample: Sample, verifier: Verifier) -> Verdict:
    try:
        return _checked(verifier.verify([sample]), 1)[0]
    except Exception as e:  # a verifier bug must not lose the rest of the run
        return _error_verdict(verifier, e)


def _checked(got: Any, expected: int) -> list[Verdict]:
    """The verifier's answer, if it is one verdict per sample."""
    got = list(got)
    if len(got) != expected:
        raise RuntimeError(f"returned {len(got)} verdicts for {expected} samples")
    for v in got:
        if not isinstance(v, Verdict):
            raise TypeError(f"returned a {type(v).__name__}, not a Verdict")
    return got


def _error_verdict(verifier: Verifier, e: Exception) -> Verdict:
    return Verdict(Status.ERROR, reason=f"verifier {verifier.name} failed: {type(e).__name__}: {str(e)[:500]}")


def summarize(verdicts: list[Verdict]) -> dict[str, Any]:
    """Counts of each verdict and the accuracy over all rows.

    `accuracy` is correct / n with every row counted: an `error`, `timeout` or `unparseable` row
    is a row without a correct answer, never a row left out (leaving them out would let 1 correct
    row and 9 errors read as 100%). Its 95% interval (`ci_low`, `ci_high`) and the share of the
    most common answer (`top_answer_share`, the collapse check) use the same n.
    `accuracy_parsed` is correct / (correct + incorrect): accuracy among the answers the verifier
    read and judged, which separates a format problem from a reasoning one (None without any).
    """
    n = len(verdicts)
    counts = Counter(v.status for v in verdicts)
    correct, incorrect = counts[Status.CORRECT], counts[Status.INCORRECT]
    low, high = wilson_interval(correct, n)
    # the most common answer: a model that says "yes" to everything scores the base rate of "yes"
    answers = Counter(v.normalized or v.extracted for v in verdicts if v.extracted is not None)
    top, top_count = answers.most_common(1)[0] if answers else (None, 0)
    return {
        "n": n,
        "correct": correct,
        "incorrect": incorrect,
        "accuracy": correct / n if n else 0.0,
        "ci_low": low,
        "ci_high": high,
        "accuracy_parsed": correct / (correct + incorrect) if correct + incorrect else None,
        "unparseable": counts[Status.UNPARSEABLE] / n if n else 0.0,
        "unparseable_count": counts[Status.UNPARSEABLE],
        "timeouts": counts[Status.TIMEOUT],
        "errors": counts[Status.ERROR],
        "top_answer": top,
        "top_answer_count": top_count,
        "top_answer_share": top_count / n if answers else None,
    }


def answer_key(verdict: Verdict) -> str | None:
    """The answer a verdict votes for: its normalized answer, else the extracted one (None: no vote)."""
    return verdict.normalized if verdict.normalized is not None else verdict.extracted


def majority(verdicts: list[Verdict]) -> int | None:
    """Index of the first sample giving the most frequent answer; None if no sample gave one.

    Answers are compared by `answer_key`; a tie between answers goes to the one sampled first.
    """
    keys = [answer_key(v) for v in verdicts]
    counted = Counter(k for k in keys if k is not None)
    if not counted:
        return None
    best = max(counted.values())
    for i, k in enumerate(keys):
        if k is not None and counted[k] == best:
            return i
    return None


def vote_summary(samples: list[Sample]) -> dict[str, Any]:
    """maj@k: each question's majority answer (`majority`) judged, over verified samples in question order.

    `n` counts questions; `correct` those whose voted answer is correct, `incorrect` those whose
    voted answer is not, `no_vote` those where no sample gave an answer (they count as not correct).
    The 95% interval is Wilson's over the n questions; `sample_accuracy` is the mean accuracy of
    the single samples. The sample that carried each question's vote gets `meta["majority_vote"]`.
    """
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.example.id, []).append(s)
    correct = incorrect = 0
    for group in groups.values():
        verdicts = [s.verdict or Verdict(Status.ERROR) for s in group]
        voted = majority(verdicts)
        for i, s in enumerate(group):
            s.meta["majority_vote"] = i == voted
        if voted is not None:
            correct += verdicts[voted].correct
            incorrect += not verdicts[voted].correct
    n = len(groups)
    low, high = wilson_interval(correct, n)
    return {
        "n": n,
        "correct": correct,
        "incorrect": incorrect,
        "no_vote": n - correct - incorrect,
        "accuracy": correct / n if n else 0.0,
        "ci_low": low,
        "ci_high": high,
        "samples_per_question": len(samples) // n if n else 0,
        "sample_accuracy": sum(bool(s.verdict and s.verdict.correct) for s in samples) / len(samples) if samples else 0.0,
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
