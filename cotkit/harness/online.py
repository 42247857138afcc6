"""Online objectives: each optimizer step makes its own training sequences by sampling from the model being trained.

Offline methods run rounds (load a checkpoint into a backend, sample, close it, train from a
folder). TRICE proposes a new rationale for every question of a minibatch from the current model
at every step, and other online methods (rejection sampling, REINFORCE-style estimators) do the
same. An `OnlineObjective` plugs into the shared loop (`cotkit.harness.train.train`) through the
`Objective` hooks: the seeded data order picks each step's items as for any objective, and
`sequences(step)` turns them into weighted training sequences, sampling from the in-memory model
through `step.live` (the hf backend's own decode loop and seeding rules, on the model with its
LoRA adapters or soft prompt, in eval mode without gradients; back to train mode afterwards). The
sequences then take the weighted-SFT loss path, so a signed per-sequence weight (TRICE's control
variate) is all a method computes. Statistics across the processes of a data-parallel run go
through `live.all_sum`.

An objective's own state (TRICE's memory of the latest correct rationale per question) is
`state_dict()`/`load_state_dict()`, saved with every resumable training state and restored on
resume, so a killed run ends as an uninterrupted one does. Sampling takes each example's seed from
the step (`OnlineStep.seed`) and the example id, never from the global RNG, so it does not move
the RNG stream the training step draws dropout from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cotkit.harness.train import Objective, TrainExample, WeightedSFT, _TrainingRun


class LiveModel:
    """The model being trained, for sampling and evaluating from inside a training step."""

    def __init__(self, run: _TrainingRun):
        self._run = run

    @property
    def process_index(self) -> int:
        return int(self._run.accelerator.process_index)

    @property
    def num_processes(self) -> int:
        return self._run.world

    @contextlib.contextmanager
    def backend(self) -> Iterator[Any]:
        """The live model as an `hf` backend: eval mode and no gradients inside the block, training mode after it."""
        import torch

        from cotkit.budget import counting_sampled_tokens
        from cotkit.plugins import host

        run = self._run
        net = run.net
        module = run.accelerator.unwrap_model(net)
        # peft LoRA injects its layers into the base model, which samples with them; the base's
        # own forward takes the KV cache under the name the decode loop passes.
        model = module.get_base_model() if hasattr(module, "get_base_model") else module
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), run.accelerator.autocast():
                yield counting_sampled_tokens(host().get("backend", "hf").from_objects(model, run.tokenizer, name="live"))
        finally:
            net.train(was_training)

    def generate(self, prompts: list[Any], params: Any, seeds: Sequence[int] | None = None) -> list[list[Any]]:
        """`Backend.generate` on the live model (no progress bar)."""
        with self.backend() as backend:
            return backend.generate(prompts, params, progress=False, seeds=seeds)

    def sample(self, task: Any, examples: list[Any], params: Any, style: str = "fewshot", hint: bool | str = False) -> list[Any]:
        """`cotkit.sample` on the live model: the task's prompts, stops and per-example seeds from `params.seed`."""
        from cotkit.harness.sample import sample

        with self.backend() as backend:
            return sample(task, examples, backend, params, style=style, hint=hint, progress=False)

    def accuracy(self, task: Any, examples: list[Any], verifier: Any, *, style: str = "fewshot", max_new_tokens: int = 256) -> dict[str, float]:
        """Greedy accuracy on `examples` with `verifier`, each process scoring its share: `dev_accuracy`, `dev_n` and the 95% interval."""
        from cotkit.contracts import SamplingParams
        from cotkit.harness.verify import verify_samples
        from cotkit.stats import wilson_interval

        mine = examples[self.process_index :: self.num_processes]
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=task.stop_sequences(style), seed=0)
        verdicts = verify_samples(self.sample(task, mine, params, style), verifier) if mine else []
        correct, n = (int(v) for v in self.all_sum([sum(v.correct for v in verdicts), len(verdicts)]))
        low, high = wilson_interval(correct, n)
        return {"dev_accuracy": correct / n if n else 0.0, "dev_n": n, "dev_ci_low": round(low, 6), "dev_ci_high": round(high, 6)}

    def all_gather(self, rows: list[Any]) -> list[Any]:
        """Every process's `rows` (picklable) concatenated in process order (its own on one process); every process must call it."""
        if self.num_processes == 1:
            return list(rows)
        from accelerate.utils import gather_object

        return list(gather_object(rows))

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the processes of a data-parallel run (itself on one process); every process must call it."""
        if self.num_processes == 1:
            return [float(v) for v in values]
        import torch

        accelerator = self._run.accelerator
        total = accelerator.reduce(torch.tensor([float(v) for v in values], dtype=torch.float64, device=accelerator.device), reduction="sum")
        return [float(v) for v in total.tolist()]


@dataclass
class OnlineStep:
    """What an online objective gets at each optimizer step."""

    step: int  # 0-based optimizer step
    items: list[Any]  # this process's share of the step's items, in the seeded data order
    seed: int  # the sampling seed of this step: pass it as SamplingParams.seed
    live: LiveModel


class OnlineObjective(Objective):
    """An objective whose training sequences are made at every step, from its items and the live model.

    Subclass it and write `sequences(step)`: sample from `step.live` for `step.items`, weigh the
    samples (cross-example weights over `live.all_sum` where processes share a minibatch, state
    that all processes keep through `live.all_gather`) and
    return the `TrainExample`s to back-propagate with their signed weights, and statistics to log.
    Keep state that must survive a resume in `state_dict`/`load_state_dict` (JSON-able). With
    `eval_every`, `evaluate(live)` runs after every that many optimizer steps (e.g.
    `live.accuracy(task, dev, verifier)`) and its numbers join that step's log.
    """

    packable = False

    def __init__(self, normalization: str = "tokens", *, eval_every: int = 0):
        self.sft = WeightedSFT(normalization)
        self.eval_every = eval_every
        self.live: LiveModel | None = None
        self._run: _TrainingRun | None = None

    # -- what a method writes ------------------------------------------------------------------

    def sequences(self, step: OnlineStep) -> tuple[list[TrainExample], dict[str, float]]:
        """The weighted sequences to train on this step, and statistics to log."""
        raise NotImplementedError

    def evaluate(self, live: LiveModel) -> dict[str, float]:
        """Numbers logged every `eval_every` steps (default: none)."""
        return {}

    # -- the Objective hooks -------------------------------------------------------------------

    def features(self, tokenizer: Any, items: Sequence[Any], max_length: int) -> list[dict[str, Any]]:
        return [{"item": item} for item in items]  # tokenized per step, once the sequences exist

    def attach(self, run: _TrainingRun) -> None:
        from cotkit.harness.sample import example_seed

        self._run, self.live = run, LiveModel(run)
        self._step_seed = lambda step: example_seed(run.seed, f"online step {step}")

    def step_features(self, step: int, features: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        run, live = self._run, self.live
        assert run is not None and live is not None, "attach() runs before the first step"
        chosen, stats = self.sequences(OnlineStep(step, [f["item"] for f in features], self._step_seed(step), live))
        made = self.sft.features(run.tokenizer, chosen, run.config.max_length)
        if live.num_processes > 1:
            made = self._join_collective_backward(made, live)
        return made, {**stats, "online_sequences": float(len(chosen))}

    def _join_collective_backward(self, made: list[dict[str, Any]], live: LiveModel) -> list[dict[str, Any]]:
        """A process with nothing to train on still runs one backward (weight 0) while others do: DDP all-reduces in it."""
        total = live.all_sum([float(len(made))])[0]
        if made or total == 0:
            return made
        eos = self._run.tokenizer.eos_token_id  # type: ignore[union-attr]
        return [{"input_ids": [eos, eos], "labels": [-100, eos], "weight": 0.0, "n_label": 0, "placeholder": True}]

    def size(self, feature: dict[str, Any]) -> float:
        return 0.0 if feature.get("placeholder") else self.sft.size(feature)

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        return self.sft.collate(features, pad_id)

    def loss(self, model: Any, batch: dict[str, Any], normalizer: float) -> tuple[Any, dict[str, float]]:
        return self.sft.loss(model, batch, normalizer)

    def after_step(self, step: int) -> dict[str, float]:
        if self.eval_every and step % self.eval_every == 0 and self.live is not None:
            return self.evaluate(self.live)
        return {}
