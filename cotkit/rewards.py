"""cotkit's verifiers and step scorers as reward functions for online RL trainers (TRL's GRPOTrainer).

TRL calls each of `reward_funcs` once per generation batch as
`f(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_metric=..., log_extra=...,
**columns)`, where every dataset column other than `prompt` comes as a list with one value per
completion, and expects one float (or None) per completion back. Completions are strings, or lists
of chat messages when the prompts are (`[{"role": "assistant", "content": ...}]`).

`VerifierReward` and `StepScorerReward` are such callables around one verifier or step scorer
instance, so whatever it holds (the `program` verifier's and `exec` scorer's sandbox workers, the
`math_equiv` comparison workers, a process reward model) starts once and serves every call until
`close()`. A completion is judged as `cotkit eval` judges it: against the `Example` named by the
row's `example_id` column, cut at the row's `stop` sequences. `reward_rows` builds those rows from
a task and its examples. The typed verdicts are kept: in `last` (the latest call's), in TRL's
metrics (`<name>/<status>`: each status's share of the batch), and, with `log_path`, one JSONL row
per completion (`rewards.jsonl`: step, example id, completion, reward, verdict or step scores);
`resume_step=N` drops the rows of steps N and later already in that file (a trainer resumed
from its step-N checkpoint computes them again; 0 for a training started over); without it, rows
are appended to what the file holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cotkit.contracts import StepScorer, Verifier
from cotkit.errors import ConfigError, DataError
from cotkit.types import Example, Prompt, Sample, Status, Verdict

#: The dataset columns a reward reads besides the prompt.
EXAMPLE_COLUMN = "example_id"
STOP_COLUMN = "stop"

#: Reward of each verdict status unless told otherwise: 1 for a correct answer, 0 for anything else.
STATUS_REWARDS: dict[str, float] = {s.value: (1.0 if s is Status.CORRECT else 0.0) for s in Status}


def reward_rows(task: Any, examples: Sequence[Example], style: str) -> list[dict[str, Any]]:
    """Dataset rows for an RL trainer: `prompt` in `style`, `example_id`, and the style's `stop` sequences.

    `task` is a Task or any view with `prompt(example, style)` and `stop_sequences(style)`.
    """
    stop = list(task.stop_sequences(style))
    return [{"prompt": task.prompt(ex, style), EXAMPLE_COLUMN: ex.id, STOP_COLUMN: stop} for ex in examples]


def completion_text(completion: Prompt) -> str:
    """A completion as text: a string as it is, chat messages as their assistant turns' text joined."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content: Any = message.get("content") or ""
        if isinstance(content, list):  # content blocks: keep the text ones
            content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
        parts.append(str(content))
    return "".join(parts)


class _Reward:
    """What both rewards share: example look-up, the JSONL log, close-on-exit."""

    __name__: str

    def __init__(self, name: str, examples: Sequence[Example] | None, log_path: str | Path | None, resume_step: int | None):
        self.__name__ = name  # TRL names the reward's metrics (`rewards/<name>/mean`) after it
        self.examples = {ex.id: ex for ex in examples or ()}
        self.log_path = _rank_path(Path(log_path)) if log_path is not None else None
        if resume_step is not None and self.log_path is not None and self.log_path.exists():
            self._keep_rows_before(resume_step)

    def _keep_rows_before(self, step: int) -> None:
        """Drop this reward's logged rows of steps at or after `step`: a run resumed from that checkpoint computes them again."""
        from cotkit.jsonl import atomic_write_jsonl, read_jsonl_tolerant

        assert self.log_path is not None
        rows = read_jsonl_tolerant(self.log_path)  # a kill can tear the last line
        atomic_write_jsonl(self.log_path, [r for r in rows if r.get("reward_fn") != self.__name__ or (r.get("step") or 0) < step])

    def _examples(self, ids: Sequence[Any] | None, n: int, required: bool) -> list[Example | None]:
        if ids is None:
            if required:
                raise ConfigError(f"reward {self.__name__}: the dataset has no `{EXAMPLE_COLUMN}` column (build its rows with cotkit.reward_rows)")
            return [None] * n
        out: list[Example | None] = []
        for i in ids:
            ex = self.examples.get(str(i))
            if ex is None and (required or self.examples):
                raise DataError(f"reward {self.__name__}: {EXAMPLE_COLUMN} {i!r} is not one of the {len(self.examples)} examples it was given")
            out.append(ex)
        return out

    def _write(self, rows: list[dict[str, Any]], trainer_state: Any) -> None:
        if self.log_path is None:
            return
        from cotkit.jsonl import append_jsonl_rows

        step = getattr(trainer_state, "global_step", None)
        append_jsonl_rows(self.log_path, [{"step": step, "reward_fn": self.__name__, **r} for r in rows])

    def close(self) -> None:
        """Release the verifier's or scorer's workers (sandbox, comparison workers, models)."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VerifierReward(_Reward):
    """A verifier as a reward function: one verdict per completion, mapped to a reward by its status.

    `values` overrides `STATUS_REWARDS` by status name (e.g. `{"unparseable": -0.5}` to penalise a
    completion with no answer more than a wrong one). Every `__call__` goes to the same verifier
    instance; `close()` (or leaving a `with` block) releases its workers.
    """

    def __init__(
        self,
        verifier: Verifier,
        examples: Sequence[Example],
        *,
        values: dict[str, float] | None = None,
        log_path: str | Path | None = None,
        resume_step: int | None = None,
        name: str | None = None,
    ):
        super().__init__(name or verifier.name, examples, log_path, resume_step)
        unknown = sorted(set(values or {}) - set(STATUS_REWARDS))
        if unknown:
            raise ConfigError(f"reward {self.__name__}: no verdict status {unknown[0]!r} (statuses: {', '.join(STATUS_REWARDS)})")
        self.verifier = verifier
        self.values = {**STATUS_REWARDS, **{k: float(v) for k, v in (values or {}).items()}}
        #: The verdicts of the latest call, one per completion.
        self.last: list[Verdict] = []

    def __call__(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[Prompt],
        example_id: Sequence[Any] | None = None,
        stop: Sequence[Sequence[str] | None] | None = None,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **columns: Any,
    ) -> list[float]:
        """One reward per completion (TRL's `reward_funcs` signature)."""
        from cotkit.harness.verify import verify_samples

        examples = self._examples(example_id, len(completions), required=True)
        stops = stop if stop is not None else [None] * len(completions)
        samples = [
            Sample(example=ex, completion=completion_text(c), prompt=p, stop=[s for s in (st or []) if isinstance(s, str)])  # type: ignore[arg-type]
            for ex, c, p, st in zip(examples, completions, prompts, stops)
        ]
        self.last = verify_samples(samples, self.verifier)
        rewards = [self.values[v.status.value] for v in self.last]
        if log_metric is not None and self.last:
            counts = Counter(v.status.value for v in self.last)
            for status in STATUS_REWARDS:
                log_metric(f"{self.__name__}/{status}", counts[status] / len(self.last))
        self._write(
            [{"example_id": s.example.id, "completion": s.completion, "reward": r, **v.to_dict()} for s, v, r in zip(samples, self.last, rewards)],
            trainer_state,
        )
        return rewards

    def close(self) -> None:
        self.verifier.close()


class StepScorerReward(_Reward):
    """A step scorer as a reward function: the completion's steps scored, aggregated (min, prod, last, logsum).

    `examples` may be omitted for scorers that read only the completion (`arith`, `exec`); the
    `faithfulness` and `prm` scorers read the question, so give them and the `example_id` column.
    """

    def __init__(
        self,
        scorer: StepScorer,
        examples: Sequence[Example] | None = None,
        *,
        aggregate: str = "min",
        log_path: str | Path | None = None,
        resume_step: int | None = None,
        name: str | None = None,
    ):
        from cotkit.harness.stepsearch import BEAM_AGGREGATES

        super().__init__(name or scorer.name, examples, log_path, resume_step)
        if aggregate not in BEAM_AGGREGATES:
            raise ConfigError(f"reward {self.__name__}: aggregate must be one of {', '.join(BEAM_AGGREGATES)}, not {aggregate!r}")
        self.scorer = scorer
        self.aggregate = aggregate
        #: The step scores of the latest call, one list per completion.
        self.last: list[list[float]] = []

    def __call__(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[Prompt],
        example_id: Sequence[Any] | None = None,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **columns: Any,
    ) -> list[float]:
        """One reward per completion (TRL's `reward_funcs` signature)."""
        from cotkit.harness.stepsearch import aggregate, score_many

        examples = self._examples(example_id, len(completions), required=False)
        texts = [completion_text(c) for c in completions]
        steps = [self.scorer.split(t, ex) for t, ex in zip(texts, examples)]
        self.last = score_many(self.scorer, list(zip(examples, steps)))
        rewards = [aggregate(scores, self.aggregate) for scores in self.last]
        if log_metric is not None and steps:
            log_metric(f"{self.__name__}/steps", sum(map(len, steps)) / len(steps))
        self._write(
            [
                {"example_id": ex.id if ex else None, "completion": t, "reward": r, "steps": st, "step_scores": sc}
                for ex, t, r, st, sc in zip(examples, texts, rewards, steps, self.last)
            ],
            trainer_state,
        )
        return rewards

    def close(self) -> None:
        self.scorer.close()


def _rank_path(path: Path) -> Path:
    """Each process of a data-parallel launch logs its own completions: `rewards.jsonl`, `rewards.rank1.jsonl`, ..."""
    from cotkit.run.rank import process_index

    rank = process_index()
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
