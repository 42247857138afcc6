"""The shared fine-tuning step: one optimizer loop on accelerate, with pluggable objectives.

Why a small loop on accelerate rather than TRL's trainers: the methods need things the HF
`Trainer` family makes awkward. TRICE back-propagates per-sequence *signed* weights; Quiet-STaR
wraps the model and computes its own loss; STaR needs a run that is bit-for-bit the same after a
SIGKILL and a resume (the Trainer writes `checkpoint-N/` folders in place and re-derives data order
from its sampler state), and a method must choose the exact number of optimizer steps. The loop
below (`train`: setup, one function per optimizer step, the final save) takes an `Objective`
(features -> batches -> loss) and gets multi-GPU (DDP / FSDP / DeepSpeed) from accelerate
unchanged: run `accelerate launch -m cotkit train ...`.
Preference objectives can still use TRL's loss functions inside an Objective.

Determinism: data order is a pure function of (seed, step), each optimizer step's loss is
normalised by the token (or sequence) count of the whole accumulated batch, so the result does
not depend on the micro-batch size, and resumable state is saved with accelerate (model,
optimizer, scheduler, RNG) into a temp folder renamed when complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotkit.budget import count_trained
from cotkit.errors import ConfigError, ModelError
from cotkit.options import option
from cotkit.types import Prompt

# ------------------------------------------------------------------------------------- config


@dataclass
class SFTConfig:
    """Hyperparameters of the shared fine-tuning step (nested as `sft` in a method's options)."""

    learning_rate: float = option(1e-6, help="Peak learning rate (AdamW).")
    lr_scheduler: str = option(
        "constant", help="Schedule after warm-up.", choices=("constant", "linear", "cosine")
    )
    warmup_steps: int = option(100, help="Optimizer steps of linear warm-up from 0 to the peak rate.")
    min_lr_ratio: float = option(
        0.0, minimum=0.0, maximum=1.0, help="Where linear and cosine decay end, as a fraction of the peak rate (0: at 0)."
    )
    batch_size: int = option(1, help="Sequences per micro-batch on each device.")
    grad_accum: int = option(8, help="Micro-batches accumulated per optimizer step.")
    weight_decay: float = option(0.0, help="AdamW weight decay.")
    max_grad_norm: float = option(1.0, help="Gradient clipping norm (0 disables).")
    max_length: int = option(
        1024, help="Longest training sequence in tokens (with packing: the length of a packed sequence); longer examples are cut at the end."
    )
    packing: bool = option(
        False,
        help="Pack whole examples into each sequence up to max_length tokens, attention and positions restarting per "
        "example, so a step holds batch_size x grad_accum packed sequences (as the STaR reference counts). SFT objectives only.",
    )
    loss_normalization: str = option(
        "tokens",
        help="Divide the weighted summed NLL by completion tokens (standard SFT) or by sequences (sequence log-likelihood, as TRICE).",
        choices=("tokens", "sequences"),
    )
    lora: bool = option(False, help="Train LoRA adapters (peft) instead of all weights; merged when saved.")
    lora_r: int = option(16, help="LoRA rank.")
    lora_alpha: int = option(32, help="LoRA scaling alpha.")
    lora_dropout: float = option(0.0, help="LoRA dropout.")
    lora_targets: list[str] = option(
        default_factory=lambda: ["all-linear"], help="Module names LoRA adapts (peft target_modules)."
    )
    soft_prompt: bool = option(
        False,
        help="Train only a soft prompt (prompt tuning): virtual-token embeddings put before every prompt; the model is frozen. "
        "Saved as checkpoint/soft_prompt (a peft prompt-tuning adapter) beside the base weights.",
    )
    soft_prompt_tokens: int = option(20, help="Virtual tokens in the soft prompt.")
    soft_prompt_init_text: str = option(
        "", help="Initialise the soft prompt from this text's token embeddings (e.g. a few-shot prompt); empty: random vocabulary tokens."
    )
    precision: str = option(
        "auto", help="auto: bf16 mixed precision on a GPU that has it, fp32 on CPU.", choices=("auto", "fp32", "bf16", "fp16")
    )
    gradient_checkpointing: bool = option(False, help="Trade compute for memory (recompute activations).")
    save_every: int = option(
        0, help="Save resumable training state every N optimizer steps (0: only the final checkpoint)."
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_length", "lora_r", "soft_prompt_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sft.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"sft.{name} must be 0 or more, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"sft.learning_rate must be positive, got {self.learning_rate}")
        if self.soft_prompt and (self.lora or self.packing):
            raise ConfigError(f"sft.soft_prompt trains a prompt on its own: turn off sft.{'lora' if self.lora else 'packing'}")


# --------------------------------------------------------------------------------------- data


@dataclass
class TrainExample:
    """One training sequence: the prompt (masked out of the loss), the completion, a signed weight."""

    prompt: Prompt
    completion: str
    weight: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSONL row of a training set file."""
        return {"prompt": self.prompt, "completion": self.completion, "weight": self.weight, **({"meta": self.meta} if self.meta else {})}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> TrainExample:
        """Inverse of `to_dict`."""
        return cls(row["prompt"], row["completion"], float(row.get("weight", 1.0)), row.get("meta") or {})


def render_prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of a prompt exactly as a sampling backend feeds it to the model.

    Chat prompts go through the tokenizer's chat template with the generation prompt appended;
    text prompts are encoded with the tokenizer's special tokens (a BOS where the model has one).
    """
    if isinstance(prompt, list):
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def completion_ids(tokenizer: Any, completion: str, add_eos: bool = True) -> list[int]:
    """Token ids of a completion, ending with EOS so the model learns where to stop."""
    ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if add_eos and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return ids


# ---------------------------------------------------------------------------------- objectives


class Objective:
    """What a training run minimizes: items -> features -> padded batches -> a loss.

    Subclass it for a new kind of training signal: preference pairs with a reference model
    (override `features`, `collate`, `setup` and `loss`), or a model wrapper with its own loss
    (override `wrap_model` and `loss`). `size` is each feature's share of the normaliser (tokens
    or sequences) so a step's loss is the mean over the whole accumulated batch. `packable` says
    that `loss` also takes the batches `pack_batch` makes (several examples per row), which
    `SFTConfig.packing` needs. `shown_stats` names the step statistics the live progress bar shows
    beside loss and lr (the latest value of each; every statistic goes to train_log.jsonl).
    """

    packable: bool = False
    shown_stats: tuple[str, ...] = ()

    def features(self, tokenizer: Any, items: Sequence[Any], max_length: int) -> list[dict[str, Any]]:
        """Tokenized features, one per item (items that cannot be used are dropped)."""
        raise NotImplementedError

    def size(self, feature: dict[str, Any]) -> float:
        """This feature's share of the loss normaliser."""
        return 1.0

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        """A padded batch of tensors."""
        raise NotImplementedError

    def setup(self, accelerator: Any, model: Any) -> None:
        """Prepare extra state before the first step (a reference model, a mixing head)."""

    def wrap_model(self, model: Any) -> Any:
        """The module that is trained and saved (default: the model itself)."""
        return model

    def loss(self, model: Any, batch: dict[str, Any], normalizer: float) -> tuple[Any, dict[str, float]]:
        """This micro-batch's share of the step loss (a scalar tensor) and statistics to log."""
        raise NotImplementedError

    # Hooks of objectives that make their data while training (`cotkit.harness.online`).

    def attach(self, run: _TrainingRun) -> None:
        """See the whole training run (model, tokenizer, accelerator, seed) once it is set up."""

    def step_features(self, step: int, features: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """The features this process trains on at optimizer step `step` (0-based), given those the data order chose, and statistics to log."""
        return features, {}

    def after_step(self, step: int) -> dict[str, float]:
        """Statistics to log after optimizer step `step` (1-based) was taken, e.g. a dev evaluation."""
        return {}

    def state_dict(self) -> Any:
        """JSON-able state saved with the resumable training state (None: nothing to save)."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Restore what `state_dict` returned when the run is resumed."""


class WeightedSFT(Objective):
    """Completion-only negative log-likelihood, each sequence scaled by its signed weight.

    All weights 1 is plain SFT. A negative weight (TRICE's incorrect proposals) raises the loss
    when that sequence becomes more likely, so the step pushes its likelihood down.
    """

    packable = True

    def __init__(self, normalization: str = "tokens"):
        if normalization not in ("tokens", "sequences"):
            raise ConfigError(f"loss normalization must be tokens or sequences, got {normalization!r}")
        self.normalization = normalization

    def features(self, tokenizer: Any, items: Sequence[Any], max_length: int) -> list[dict[str, Any]]:
        out = []
        for item in items:
            ex = item if isinstance(item, TrainExample) else TrainExample.from_dict(item)
            p_ids = render_prompt_ids(tokenizer, ex.prompt)
            c_ids = completion_ids(tokenizer, ex.completion)
            ids = (p_ids + c_ids)[:max_length]
            labels = ([-100] * len(p_ids) + c_ids)[:max_length]
            n_label = sum(1 for t in labels if t != -100)
            if n_label == 0:  # the prompt alone fills max_length: nothing to learn from
                continue
            out.append({"input_ids": ids, "labels": labels, "weight": float(ex.weight), "n_label": n_label})
        return out

    def size(self, feature: dict[str, Any]) -> float:
        return float(feature["n_label"]) if self.normalization == "tokens" else 1.0

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        return pad_batch(features, pad_id)

    def loss(self, model: Any, batch: dict[str, Any], normalizer: float) -> tuple[Any, dict[str, float]]:
        # Both normalisations weight each sequence's *summed* NLL (its log-likelihood, what TRICE's
        # and REINFORCE's gradients use); they differ only in the divisor (`size` above).
        seq_nll, n_tokens = sequence_nll(model, batch)
        weights = batch["weight"].to(seq_nll.dtype)
        loss = (weights * seq_nll).sum() / normalizer
        stats = {"nll_per_token": float(seq_nll.sum().detach() / n_tokens.sum().clamp(min=1))}
        return loss, stats


class LossFnObjective(WeightedSFT):
    """SFT features and batches with a custom `loss_fn(model, batch) -> summed loss` (or (loss, stats))."""

    packable = False  # a loss_fn may read rows as sequences or call the model without the packed mask

    def __init__(self, loss_fn: Callable[[Any, dict[str, Any]], Any], normalization: str = "tokens"):
        super().__init__(normalization)
        self.loss_fn = loss_fn

    def loss(self, model: Any, batch: dict[str, Any], normalizer: float) -> tuple[Any, dict[str, float]]:
        got = self.loss_fn(model, batch)
        loss, stats = got if isinstance(got, tuple) else (got, {})
        return loss / normalizer, stats


def pad_batch(features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad input_ids/labels into tensors, with an attention mask and the weights."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), -100, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    weight = torch.tensor([float(f.get("weight", 1.0)) for f in features])
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "weight": weight}


def pack_batch(packs: list[list[dict[str, Any]]], pad_id: int) -> dict[str, Any]:
    """Rows of whole examples laid end to end (one row per pack), right-padded.

    Beside input_ids/labels/attention_mask (real tokens) a packed batch holds `position_ids`
    restarting at 0 for every example and `example_ids`: which example (0.. in the batch, the
    index into `weight`) each token belongs to, -1 for padding. Each example's first label is
    masked: unpacked, no token predicts it, and packed it would be predicted from the previous
    example's last token.
    """
    import torch

    width = max(sum(len(f["input_ids"]) for f in pack) for pack in packs)
    ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(packs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(packs), width), dtype=torch.long)
    positions = torch.zeros((len(packs), width), dtype=torch.long)
    example_ids = torch.full((len(packs), width), -1, dtype=torch.long)
    weights: list[float] = []
    for row, pack in enumerate(packs):
        at = 0
        for f in pack:
            n = len(f["input_ids"])
            ids[row, at : at + n] = torch.tensor(f["input_ids"])
            labels[row, at + 1 : at + n] = torch.tensor(f["labels"][1:])
            positions[row, at : at + n] = torch.arange(n)
            example_ids[row, at : at + n] = len(weights)
            weights.append(float(f.get("weight", 1.0)))
            at += n
        mask[row, :at] = 1
        positions[row, at:] = torch.arange(width - at)  # padding is a sequence of its own
    return {
        "input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": positions,
        "example_ids": example_ids, "weight": torch.tensor(weights),
    }  # fmt: skip


def sequence_nll(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Summed next-token NLL of each example's labelled tokens, and how many there are.

    An example is a row of a `pad_batch` batch, or one of the examples packed into the rows of a
    `pack_batch` batch (in `weight` order).
    """
    import torch
    import torch.nn.functional as F

    packed = "example_ids" in batch
    out = model(**(packed_model_inputs(model, batch) if packed else {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}))
    logits = out.logits.reshape(*batch["input_ids"].shape, -1)[:, :-1, :].float()
    target = batch["labels"][:, 1:]
    tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="none")
    tok = tok.view(target.shape)
    valid = (target != -100).to(tok.dtype)
    if not packed:
        return (tok * valid).sum(dim=1), valid.sum(dim=1).to(torch.long)
    owner = batch["example_ids"][:, 1:].clamp(min=0).reshape(-1)  # padding is never valid
    n_examples = batch["weight"].numel()
    nll = torch.zeros(n_examples, dtype=tok.dtype, device=tok.device).index_add(0, owner, (tok * valid).reshape(-1))
    count = torch.zeros(n_examples, dtype=tok.dtype, device=tok.device).index_add(0, owner, valid.reshape(-1))
    return nll, count.to(torch.long)


def packed_model_inputs(model: Any, batch: dict[str, Any], attention: str | None = None) -> dict[str, Any]:
    """Forward arguments that keep each packed example to itself, for the model's attention kernel.

    sdpa and eager attention take a block-diagonal causal 4-D mask (boolean for sdpa, additive
    for eager) and the restarting position ids. Other kernels (FlashAttention, flex) get no mask
    and the batch as one row: transformers finds where each example starts from the position ids
    (FlashAttention reads them only when the batch is a single row). `attention` overrides the
    model's configured implementation.
    """
    import torch

    attention = attention or _attention_implementation(model)
    ids, positions = batch["input_ids"], batch["position_ids"]
    if attention not in ("sdpa", "eager"):
        return {"input_ids": ids.reshape(1, -1), "position_ids": positions.reshape(1, -1), "use_cache": False}
    owner = batch["example_ids"]
    width = ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=ids.device).tril()
    allowed = (owner[:, :, None] == owner[:, None, :]) & causal  # padding (-1) attends to padding: no empty rows
    mask = allowed[:, None, :, :]
    if attention == "eager":
        dtype = _parameter_dtype(model)
        mask = torch.zeros(mask.shape, dtype=dtype, device=ids.device).masked_fill(~mask, torch.finfo(dtype).min)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": False}


def _attention_implementation(model: Any) -> str:
    """The attention kernel a (possibly wrapped: DDP, peft) Hugging Face model is configured with."""
    inner = getattr(model, "module", model)
    return str(getattr(getattr(inner, "config", None), "_attn_implementation", None) or "eager")


def _parameter_dtype(model: Any) -> Any:
    return next(model.parameters()).dtype


# ---------------------------------------------------------------------------------- the loop


@dataclass
class StepLog:
    """What the loop reports after each optimizer step."""

    step: int
    total: int
    loss: float
    lr: float
    tokens: int
    stats: dict[str, float] = field(default_factory=dict)
    examples: int = 0  # examples in this step over all processes (packed sequences hold several)


@dataclass
class TrainResult:
    """Summary of one fine-tuning run (also written as training.json beside the checkpoint)."""

    checkpoint: str
    steps: int
    examples: int
    dropped: int
    tokens: int
    seconds: float
    losses: list[float]
    resumed_from_step: int = 0
    processes: int = 1
    examples_trained: int = 0  # examples over all steps and processes, each time one is seen
    packing: bool = False
    tokens_trained: int = 0  # real (not padding) tokens over all steps and processes, each time one is seen

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return dict(self.__dict__)


def steps_for_epochs(n_examples: int, epochs: float, config: SFTConfig, world_size: int = 1) -> int:
    """Optimizer steps that cover `epochs` passes over n examples."""
    per_step = config.batch_size * config.grad_accum * world_size
    return max(1, math.ceil(n_examples * epochs / per_step))


def packs_per_epoch(model: str, items: Sequence[Any], config: SFTConfig) -> int:
    """Packed sequences one pass over `items` makes (SFT features, the first epoch's order)."""
    from transformers import AutoTokenizer

    from cotkit.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model))
    lengths = [len(f["input_ids"]) for f in WeightedSFT(config.loss_normalization).features(tokenizer, items, config.max_length)]
    return max(1, len(pack_in_order(epoch_order(len(lengths), 0, 0), lengths, config.max_length)))


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    """The seeded permutation of n items that epoch `epoch` visits them in."""
    perm = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(perm)
    return perm


def step_indices(n: int, step: int, per_step: int, seed: int) -> list[int]:
    """Item indices of an optimizer step: a seeded permutation per epoch, concatenated.

    A pure function of (n, step, seed), so a resumed run sees the same order.
    """
    start, stop = step * per_step, (step + 1) * per_step
    out: list[int] = []
    epoch = start // n
    while len(out) < per_step:
        perm = epoch_order(n, epoch, seed)
        lo = max(start - epoch * n, 0)
        hi = min(stop - epoch * n, n)
        out.extend(perm[lo:hi])
        epoch += 1
    return out


def pack_in_order(order: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive items of `order` joined into packs of at most `budget` tokens (next fit)."""
    packs: list[list[int]] = []
    used = budget  # no open pack yet
    for i in order:
        if used + lengths[i] > budget:
            packs.append([])
            used = 0
        packs[-1].append(i)
        used += lengths[i]
    return packs


class PackedOrder:
    """The packs of every optimizer step: each epoch's seeded permutation packed in order.

    Pack p of the run is the p-th pack of the epochs laid end to end, so a step's packs are a
    pure function of (lengths, budget, seed, step), as `step_indices` is for unpacked runs; each
    epoch visits every item once, in new company. Epochs are packed once and kept.
    """

    def __init__(self, lengths: Sequence[int], budget: int, seed: int):
        self.lengths, self.budget, self.seed = list(lengths), budget, seed
        self.epochs: list[list[list[int]]] = []
        self.first_pack: list[int] = [0]  # index of each epoch's first pack in the run

    def step_packs(self, step: int, per_step: int) -> list[list[int]]:
        """Item indices of each of the `per_step` packs of optimizer step `step`."""
        start, stop = step * per_step, (step + 1) * per_step
        while self.first_pack[-1] < stop:
            packs = pack_in_order(epoch_order(len(self.lengths), len(self.epochs), self.seed), self.lengths, self.budget)
            self.epochs.append(packs)
            self.first_pack.append(self.first_pack[-1] + len(packs))
        out: list[list[int]] = []
        for epoch, packs in enumerate(self.epochs):
            lo, hi = max(start - self.first_pack[epoch], 0), min(stop - self.first_pack[epoch], len(packs))
            out.extend(packs[lo:hi])
        return out


def lr_factor(step: int, schedule: str, warmup: int, total: int, floor: float = 0.0) -> float:
    """Multiplier of the peak learning rate at `step`: linear warm-up, then constant, or linear or cosine decay to `floor`."""
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (1.0 - floor) * decay


def load_causal_lm(path: str, precision: str = "fp32") -> tuple[Any, Any]:
    """Model (fp32 master weights) and tokenizer from a folder or hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except OSError as e:
        raise ModelError(f"cannot load model {path!r} for training: {e}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _mixed_precision(precision: str) -> str:
    import torch

    if precision == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16"
        return "no"
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def _forget_earlier_accelerator_settings() -> None:
    """Drop mixed-precision settings an earlier Accelerator in this process left behind."""
    from accelerate.state import AcceleratorState

    # AcceleratorState is a process-wide singleton: a TRL trainer or an earlier train() with other
    # precision would make this Accelerator raise. The process group (PartialState) is kept.
    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)


def train(
    model: str,
    items: Sequence[Any],
    config: SFTConfig,
    steps: int,
    output_dir: str | Path,
    *,
    seed: int = 0,
    objective: Objective | None = None,
    state_dir: str | Path | None = None,
    on_step: Callable[[StepLog], None] | None = None,
    fault_at_step: int | None = None,
) -> TrainResult:
    """Fine-tune `model` for `steps` optimizer steps on `items`; save the result to `output_dir`.

    `items` are TrainExamples (or their dicts) for the default weighted-SFT objective, or whatever
    `objective.features` takes. The checkpoint is written into a temp folder and renamed, so
    `output_dir` exists only when complete. With `config.save_every` and a `state_dir`, a killed
    run started again with the same arguments continues from the last saved step.
    """
    started = time.time()
    objective = objective or WeightedSFT(config.loss_normalization)
    output_dir = Path(output_dir)
    state_root = Path(state_dir) if state_dir else None
    if steps < 1:
        raise ConfigError(f"training needs at least 1 step, got {steps}")

    run = _setup(model, items, config, steps, objective, seed)
    if state_root is not None and config.save_every:
        _resume(run, state_root)

    for step in range(run.start_step, steps):
        log = _optimizer_step(run, step)
        run.losses.append(round(log.loss, 6))
        if on_step is not None and run.accelerator.is_main_process:
            on_step(log)
        if state_root is not None and config.save_every and log.step % config.save_every == 0 and log.step < steps:
            _save_state(run.accelerator, state_root, log.step, run.losses, run.objective.state_dict(), run.tokens_seen)
        if fault_at_step is not None and log.step == fault_at_step:
            os.kill(os.getpid(), 9)  # the resume tests' SIGKILL, right after this step's state is saved

    result = _save_final(run, output_dir, state_root, started)
    accelerator = run.accelerator
    del run  # the model and optimizer, before accelerate frees what it still holds
    accelerator.free_memory()
    return result


@dataclass
class _TrainingRun:
    """What one training run holds from setup to the final save."""

    accelerator: Any
    net: Any  # the prepared module that is trained (objective.wrap_model of the model)
    optimizer: Any
    scheduler: Any  # stepped by hand once per optimizer step, see _setup
    tokenizer: Any
    objective: Objective
    config: SFTConfig
    features: list[dict[str, Any]]
    dropped: int
    steps: int
    seed: int
    start_step: int = 0
    losses: list[float] = field(default_factory=list)
    tokens_seen: int = 0  # real (not padding) tokens this process has trained on, steps before a resume included
    packs: PackedOrder | None = None  # the data order with sft.packing

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    @property
    def per_process(self) -> int:
        """Sequences (packed or not) each process trains on per optimizer step."""
        return self.config.batch_size * self.config.grad_accum

    def step_sequences(self, step: int) -> list[list[int]]:
        """Feature indices of every sequence of optimizer step `step` (all processes; one each unless packed)."""
        per_step = self.per_process * self.world
        if self.packs is not None:
            return self.packs.step_packs(step, per_step)
        return [[i] for i in step_indices(len(self.features), step, per_step, self.seed)]

    def examples_in_steps(self, steps: int) -> int:
        """Examples the first `steps` optimizer steps train on, over all processes."""
        if self.packs is None:
            return steps * self.per_process * self.world
        return sum(len(seq) for step in range(steps) for seq in self.step_sequences(step))


def _setup(model: str, items: Sequence[Any], config: SFTConfig, steps: int, objective: Objective, seed: int) -> _TrainingRun:
    """Seeded accelerator, model and features, optimizer and schedule, in the order the RNGs see them."""
    from cotkit.console import quiet_transformers
    from cotkit.harness.seq2seq import is_encoder_decoder, load_seq2seq_lm, seq2seq_objective
    from cotkit.models import resolve_model_path

    accelerator = _seeded_accelerator(config.precision, seed)
    quiet_transformers()
    path = resolve_model_path(model)
    if is_encoder_decoder(path):
        base, tokenizer = load_seq2seq_lm(path)
        objective = seq2seq_objective(objective)
    else:
        base, tokenizer = load_causal_lm(path)
    features = objective.features(tokenizer, items, config.max_length)
    if not items:
        raise ConfigError("no training examples: the method's filter kept none")
    if not features:
        raise ConfigError(f"no usable training examples: in all {len(items)} the prompt alone fills max_length={config.max_length} tokens")
    if config.packing and not objective.packable:
        raise ConfigError(f"sft.packing is for SFT objectives (WeightedSFT); {type(objective).__name__} trains on unpacked sequences")
    packs = PackedOrder([len(f["input_ids"]) for f in features], config.max_length, seed) if config.packing else None

    net = objective.wrap_model(_trainable(base, config, path))
    net.train()
    optimizer, scheduler = _optimizer_and_schedule(net, config, steps)
    # The scheduler is stepped by hand once per optimizer step (not prepared): accelerate would
    # step a prepared one once per process, which changes the schedule with the process count.
    _give_deepspeed_the_micro_batch_size(accelerator, config.batch_size)
    net, optimizer = accelerator.prepare(net, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    objective.setup(accelerator, net)
    run = _TrainingRun(
        accelerator, net, optimizer, scheduler, tokenizer, objective, config,
        features=features, dropped=len(items) - len(features), steps=steps, seed=seed, packs=packs,
    )  # fmt: skip
    objective.attach(run)
    return run


def _give_deepspeed_the_micro_batch_size(accelerator: Any, batch_size: int) -> None:
    """Under DeepSpeed, its config's micro-batch size: accelerate reads it from a prepared DataLoader, and this loop prepares none."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size


def _seeded_accelerator(precision: str, seed: int) -> Any:
    """The Accelerator of this run, with every RNG seeded."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # cpu=True on a machine without a GPU is what makes accelerate join a torchrun/MPI process
    # group on CPUs (gloo) instead of training alone in every process.
    _forget_earlier_accelerator_settings()
    accelerator = Accelerator(mixed_precision=_mixed_precision(precision), cpu=not torch.cuda.is_available())
    set_seed(seed)
    if accelerator.device.type == "cpu":
        # CPU kernels are deterministic given the thread count; make any exception loud.
        torch.use_deterministic_algorithms(True, warn_only=True)
    return accelerator


def _trainable(base: Any, config: SFTConfig, path: str) -> Any:
    """The model with gradient checkpointing, LoRA adapters or a soft prompt where the config asks for them."""
    if config.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.config.use_cache = False
    if config.soft_prompt:
        from cotkit.harness.softprompt import add_soft_prompt

        return add_soft_prompt(base, config.soft_prompt_tokens, config.soft_prompt_init_text, path)
    if not config.lora:
        return base
    from peft import LoraConfig, get_peft_model

    from cotkit.harness.seq2seq import lora_task_type

    targets: Any = config.lora_targets[0] if config.lora_targets == ["all-linear"] else list(config.lora_targets)
    lora_cfg = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=targets, task_type=lora_task_type(base),
    )  # fmt: skip
    if config.gradient_checkpointing:
        base.enable_input_require_grads()
    return get_peft_model(base, lora_cfg)


def _optimizer_and_schedule(net: Any, config: SFTConfig, steps: int) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms) and the warm-up/decay schedule over `steps`."""
    import torch

    params = [p for p in net.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.lr_scheduler, config.warmup_steps, steps, config.min_lr_ratio)
    )
    return optimizer, scheduler


def _resume(run: _TrainingRun, state_root: Path) -> None:
    """Continue from the last complete saved state, if any (model, optimizer, scheduler, RNG, losses, the objective's state)."""
    run.start_step = _load_latest_state(run.accelerator, state_root)
    if run.start_step:
        progress = _read_progress(state_root)
        run.losses = list(progress["losses"])
        run.tokens_seen = int(progress.get("tokens_seen", 0))  # states saved before tokens were counted have none
        saved = _latest_state(state_root) / _objective_file(run.accelerator)  # type: ignore[operator]
        if saved.exists():
            run.objective.load_state_dict(json.loads(saved.read_text(encoding="utf-8")))


def _optimizer_step(run: _TrainingRun, step: int) -> StepLog:
    """Optimizer step `step` (0-based): this process's share of its items, micro-batch by micro-batch."""
    import torch

    accelerator, config = run.accelerator, run.config
    rank = accelerator.process_index
    sequences = run.step_sequences(step)
    group = [[run.features[i] for i in seq] for seq in sequences[rank * run.per_process : (rank + 1) * run.per_process]]
    stats: dict[str, float] = {}
    if run.packs is None:  # an online objective turns the chosen items into sequences here
        chosen, stats = run.objective.step_features(step, [seq[0] for seq in group])
        group = [[f] for f in chosen]
    normalizer = _step_normalizer(run, [f for seq in group for f in seq])
    micro = [group[i : i + config.batch_size] for i in range(0, len(group), config.batch_size)]
    step_loss = 0.0
    for k, micro_batch in enumerate(micro):
        loss, micro_stats = _backward(run, micro_batch, normalizer, sync=k == len(micro) - 1)
        step_loss += loss
        for key, v in micro_stats.items():
            stats[key] = stats.get(key, 0.0) + v / len(micro)
    if run.world > 1:  # log the loss of the whole step, not this process's share
        step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), reduction="mean"))
    if config.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.net.parameters(), config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    stats.update(run.objective.after_step(step + 1))
    examples = sum(len(seq) for seq in sequences)
    return StepLog(step + 1, run.steps, step_loss, run.scheduler.get_last_lr()[0], run.tokens_seen, stats, examples)


def _step_normalizer(run: _TrainingRun, group: list[dict[str, Any]]) -> float:
    """The loss divisor of this step: the token (or sequence) count of the whole step's items."""
    import torch

    normalizer = sum(run.objective.size(f) for f in group) or 1.0
    if run.world > 1:
        # Normalise by the whole step's count across processes (DDP averages gradients, hence
        # the division by `world`), so N processes compute what one process would.
        total = run.accelerator.reduce(torch.tensor(float(normalizer), device=run.accelerator.device), reduction="sum")
        normalizer = float(total) / run.world
    return normalizer


def _backward(run: _TrainingRun, sequences: list[list[dict[str, Any]]], normalizer: float, sync: bool) -> tuple[float, dict[str, float]]:
    """Forward and backward of one micro-batch (each sequence: the features it holds); gradients are all-reduced only when `sync`."""
    accelerator = run.accelerator
    pad_id = run.tokenizer.pad_token_id
    batch = pack_batch(sequences, pad_id) if run.packs is not None else run.objective.collate([seq[0] for seq in sequences], pad_id)
    batch = {key: (v.to(accelerator.device) if hasattr(v, "to") else v) for key, v in batch.items()}
    no_sync = accelerator.no_sync(run.net) if not sync and run.world > 1 else contextlib.nullcontext()
    # Only the micro-batch that closes the optimizer step syncs: DeepSpeed's engine, which steps
    # inside `backward`, reads this flag (its own gradient accumulation stays at 1).
    accelerator.sync_gradients = sync
    with no_sync, accelerator.autocast():
        loss, stats = run.objective.loss(run.net, batch, normalizer)
        accelerator.backward(loss)
    run.tokens_seen += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
    return float(loss.detach()), stats


def _save_final(run: _TrainingRun, output_dir: Path, state_root: Path | None, started: float) -> TrainResult:
    """Write the checkpoint (and training.json) on the main process; the resumable state is then obsolete."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(run.net)
    state_dict = accelerator.get_state_dict(run.net)
    tokens_trained = run.tokens_seen
    if run.world > 1:
        import torch

        # After a resume each process restarts from the main process's saved count: about its own share.
        tokens_trained = int(accelerator.reduce(torch.tensor(run.tokens_seen, device=accelerator.device), reduction="sum"))
    result = TrainResult(
        checkpoint=str(output_dir), steps=run.steps, examples=len(run.features), dropped=run.dropped,
        tokens=sum(len(f.get("input_ids", ())) for f in run.features), seconds=round(time.time() - started, 3),
        losses=run.losses, resumed_from_step=run.start_step, processes=run.world,
        examples_trained=run.examples_in_steps(run.steps), packing=run.packs is not None, tokens_trained=tokens_trained,
    )  # fmt: skip
    if accelerator.is_main_process:
        count_trained(tokens_trained)
        _save_checkpoint(unwrapped, state_dict, run.tokenizer, output_dir, run.config.lora, result)
        if state_root is not None and state_root.exists():
            shutil.rmtree(state_root, ignore_errors=True)
    accelerator.wait_for_everyone()
    return result


def _save_checkpoint(model: Any, state_dict: Any, tokenizer: Any, output_dir: Path, lora: bool, result: TrainResult) -> None:
    """Save a plain Hugging Face folder (LoRA merged; a soft prompt beside the base) into a temp dir, then rename it into place."""
    from cotkit.harness.softprompt import SOFT_PROMPT_DIR, is_soft_prompted

    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if lora:
        merged = model.merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
    elif is_soft_prompted(model):
        model.base.save_pretrained(tmp, safe_serialization=True)
        model.save_soft_prompt(tmp / SOFT_PROMPT_DIR)
    else:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    summary = {k: v for k, v in result.to_dict().items() if k != "checkpoint"}  # the folder moves; no path
    (tmp / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _fsync_tree(tmp)
    if output_dir.exists():  # a complete checkpoint from a run killed before it was recorded
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _save_state(accelerator: Any, root: Path, step: int, losses: list[float], objective_state: Any = None, tokens_seen: int = 0) -> None:
    """Resumable state at `step` (with each process's objective state): written to a temp folder, renamed, older states removed."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".step_{step:06d}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    with _quiet_logger("accelerate"):  # "Removed shared tensor" about tied embeddings, harmless
        accelerator.save_state(str(tmp))
    if objective_state is not None:
        (tmp / _objective_file(accelerator)).write_text(json.dumps(objective_state) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps({"step": step, "losses": losses, "tokens_seen": tokens_seen}) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        final = root / f"step_{step:06d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in root.glob("step_*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _objective_file(accelerator: Any) -> str:
    """Each process keeps its own objective state (the items it trained on are its own)."""
    return f"objective_{accelerator.process_index}.json"


def _latest_state(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step_*") if (p / "progress.json").exists())
    return done[-1] if done else None


def _load_latest_state(accelerator: Any, root: Path) -> int:
    latest = _latest_state(root) if root.exists() else None
    if latest is None:
        return 0
    accelerator.load_state(str(latest))
    return int(json.loads((latest / "progress.json").read_text())["step"])


def _read_progress(root: Path | None) -> dict[str, Any]:
    """progress.json of the last complete saved state ({} when none): step, losses, tokens seen."""
    latest = _latest_state(root) if root is not None and root.exists() else None
    if latest is None:
        return {}
    return dict(json.loads((latest / "progress.json").read_text()))


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    import logging

    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)

