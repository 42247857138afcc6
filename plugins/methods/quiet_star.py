"""Quiet-STaR (Zelikman et al. 2024, arXiv 2403.09629): a thought after every token, learned from plain text.

Continued pre-training with no labels: at every position of a text the model samples a short
thought between learned start/end markers, a mixing head blends the prediction after the thought
with the prediction without it, and the thought tokens are trained by REINFORCE on how much they
raised the likelihood of the next true tokens. The wrapper and its parallel rollout are
`quiet_star_model.py`, the loss `quiet_star_loss.py`, the corpus `quiet_star_data.py`, decoding
with thoughts `quiet_star_decode.py`; this module is the method around them, on the shared
training engine (`Objective.wrap_model` + its own `loss`), so a run resumes after a kill like any
other and scales with accelerate.

Phases: iter_000/perplexity (held-out text, the untrained wrapper: its thought path equals the base
model exactly), iter_000/eval_heldout (+ eval_<task> for each --eval-tasks; zero-shot CoT, greedy),
iter_001/train (train_log.jsonl: one row per step), iter_001/perplexity (base path and thought
path, overall and on the hardest tokens, the same tokens as before), iter_001/eval_heldout (with
thoughts) and eval_heldout_no_thoughts (the base path of the trained model), iter_001/summary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotkit import (
    ConfigError,
    Method,
    ModelSlot,
    Objective,
    SamplingParams,
    SFTConfig,
    SplitLimits,
    atomic_write_jsonl,
    fine_tune,
    load_backend,
    load_task,
    method_splits,
    option,
    phase_seconds,
    read_jsonl,
)

from .quiet_star_data import (
    read_documents,
    split_heldout,
    task_documents,
    token_sequences,
)

if TYPE_CHECKING:
    from cotkit import RunContext

#: The prompt style of the zero-shot chain-of-thought evaluations.
EVAL_STYLE = "zeroshot"


@dataclass
class QuietStarSFTConfig(SFTConfig):
    """The shared fine-tuning step with the reference's settings: AdamW lr 1e-6, weight decay 0.001, 20 warm-up steps, 8 sequences a step."""

    learning_rate: float = option(1e-6, help="Peak learning rate (the reference: 1e-6).")
    warmup_steps: int = option(20, help="Optimizer steps of linear warm-up (the reference: 20).")
    weight_decay: float = option(0.001, help="AdamW weight decay (the reference: 0.001).")
    batch_size: int = option(1, help="Sequences per micro-batch (each runs n_passes thoughts per position).")
    grad_accum: int = option(8, help="Micro-batches per optimizer step (the reference: 8 sequences a step).")


@dataclass
class QuietStarConfig(SplitLimits):
    """Options of `cotkit train --method quiet-star` (`cotkit show quiet-star` lists them)."""

    text: str = option(
        "",
        help="Training text: a .txt file (one document), a .jsonl file (one document per row), a folder of them, or a hub "
        "dataset id; empty: the task's fit questions with their worked solutions.",
    )
    text_field: str = option("text", help="The field of a .jsonl row (or dataset column) that holds the document.")
    documents: int | None = option(1000, help="Train on at most this many documents (the reference: 1,000); none: all.")
    heldout_documents: int = option(32, help="With --text: the last N documents are held out for perplexity (the task corpus holds out its dev split).")
    seq_len: int = option(256, help="Tokens per training sequence (the reference crops documents to 256).")
    packing: str = option("crop", help="crop: each document's first seq_len tokens (the reference); pack: documents joined by EOS and cut into seq_len chunks.", choices=("crop", "pack"))
    steps: int = option(100, help="Optimizer steps (the reference: 100).")
    n_ahead: int = option(12, help="Passes of a thought: START, n_ahead - 3 sampled tokens, END (the reference trains with 12).")
    n_ahead_talk: int = option(4, help="True tokens after each thought that score it (the reference: 4).")
    n_passes: int = option(2, help="Thoughts per position; the REINFORCE baseline is their mean (the reference: 2).")
    embedding_scale: float = option(100.0, help="The thought markers are stored / scale and used x scale: a larger effective learning rate (the reference: 100).")
    thought_temperature: float = option(1.0, help="Sampling temperature of thought tokens (the reference: 1).")
    mix: str = option("hidden", help="What the mixing head mixes: last hidden states (the reference) or logits; models that transform their logits after the LM head mix logits anyway.", choices=("hidden", "logits"))
    parallel: bool = option(True, help="Thoughts at every position through 4-D attention masks (--no-parallel: the fallback rows at --fallback-positions random positions).")
    fallback_positions: int = option(8, help="Positions per sequence that get a thought when the model cannot take 4-D masks.")
    base_loss_weight: float = option(0.5, help="Weight of the base model's next-token NLL (the reference: 0.5).")
    mix_loss_weight: float = option(0.5, help="Weight of the NLL of the true tokens after each thought, mixed (the reference: 0.5).")
    policy_weight: float = option(1e6, help="Weight of the REINFORCE term on the thought tokens (the reference: 1e6).")
    policy_temperature: float = option(3.0, help="Temperature of the policy's log-probabilities in the REINFORCE term (the reference: 3).")
    clip_advantage: bool = option(True, help="Keep only better-than-average thoughts (advantage clipped at 0, the reference).")
    hard_fraction: float = option(0.1, minimum=0.0, maximum=1.0, help="Perplexity is also reported on this fraction of held-out tokens the base model found hardest.")
    eval_tasks: list[str] = option(default_factory=lambda: ["arc:challenge"], help="Tasks evaluated zero-shot besides the run's task (their held-out split, --heldout-limit questions).")
    eval_thoughts: bool = option(True, help="Also evaluate the trained model decoding with thoughts (a thought before every generated token).")
    max_new_tokens: int = option(256, help="Longest zero-shot answer in tokens.")
    eval_batch_size: int = option(8, help="Held-out sequences per perplexity forward.")
    sft: QuietStarSFTConfig = field(default_factory=QuietStarSFTConfig)

    def __post_init__(self) -> None:
        for name in ("seq_len", "steps", "eval_batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise ConfigError(f"seq_len must be at least 2, got {self.seq_len}")
        if self.documents is not None and self.documents < 1:
            raise ConfigError(f"documents must be at least 1 (or none), got {self.documents}")
        if self.heldout_documents < 1:
            raise ConfigError(f"heldout_documents must be at least 1, got {self.heldout_documents}")
        if self.policy_temperature <= 0:
            raise ConfigError(f"policy_temperature must be positive, got {self.policy_temperature}")
        self.settings()  # the wrapper's own checks (n_ahead, n_passes, ...)
        super().__post_init__()

    def settings(self) -> Any:
        """The wrapper's settings (quiet_star/config.json of the checkpoint)."""
        from .quiet_star_model import ThoughtSettings

        return ThoughtSettings(
            n_ahead=self.n_ahead, n_ahead_talk=self.n_ahead_talk, n_passes=self.n_passes, embedding_scale=self.embedding_scale,
            mix=self.mix, parallel=self.parallel, fallback_positions=self.fallback_positions, thought_temperature=self.thought_temperature,
        )  # fmt: skip

    def loss_weights(self) -> Any:
        from .quiet_star_loss import LossWeights

        return LossWeights(self.base_loss_weight, self.mix_loss_weight, self.policy_weight, self.policy_temperature, self.clip_advantage)

    def engine_sft(self) -> SFTConfig:
        return replace(self.sft, max_length=self.seq_len)


# ------------------------------------------------------------------------------------ objective


class QuietStarObjective(Objective):
    """Documents -> token sequences; the trained module is the thinking wrapper; the loss is Quiet-STaR's."""

    shown_stats = ("nll_mix", "reward_mean", "mixing_weight")

    def __init__(self, cfg: QuietStarConfig, log: Any):
        self.cfg, self.log = cfg, log
        self.tokenizer: Any = None

    def features(self, tokenizer: Any, items: Any, max_length: int) -> list[dict[str, Any]]:
        self.tokenizer = tokenizer  # wrap_model starts the markers from the tokenizer's "---"
        return [{"input_ids": ids} for ids in token_sequences(tokenizer, list(items), max_length, self.cfg.packing)]

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        return right_padded([f["input_ids"] for f in features], pad_id)

    def wrap_model(self, model: Any) -> Any:
        from .quiet_star_model import add_thoughts

        return add_thoughts(model, self.tokenizer, self.cfg.settings(), log=self.log)

    def loss(self, model: Any, batch: dict[str, Any], normalizer: float) -> tuple[Any, dict[str, float]]:
        from .quiet_star_loss import sequence_losses

        net = getattr(model, "module", model)  # DDP keeps the wrapper as .module
        passes = net.settings.n_passes
        ids, mask = batch["input_ids"].repeat(passes, 1), batch["attention_mask"].repeat(passes, 1)
        weights = self.cfg.loss_weights()
        rollout = net.rollout(ids, mask, policy_temperature=weights.policy_temperature)
        per_sequence, stats = sequence_losses(rollout, passes, weights)
        return per_sequence.sum() / normalizer, stats


def right_padded(rows: list[list[int]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


# ------------------------------------------------------------------------------------ perplexity


def token_nll(model: Any, sequences: list[list[int]], pad_id: int, batch_size: int, seed: int) -> tuple[list[list[float]], list[list[float]]]:
    """Per held-out token: NLL on the base path and NLL after a thought (mixed), each sequence's next-token targets in order."""
    import torch

    torch.manual_seed(seed)  # the thoughts sampled here
    model.eval()
    settings = model.settings
    if not settings.parallel:  # the fallback thinks at every position when it measures
        settings = replace(settings, fallback_positions=max(len(s) for s in sequences))
        model.settings = settings
    base_out: list[list[float]] = []
    thought_out: list[list[float]] = []
    with torch.no_grad():
        for i in range(0, len(sequences), batch_size):
            batch = right_padded(sequences[i : i + batch_size], pad_id)
            r = model.rollout(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device))
            for row in range(r.base_logp.shape[0]):
                valid = r.base_valid[row]
                base_out.append((-r.base_logp[row][valid]).tolist())
                thought_out.append((-r.talk_mix_logp[row, :, 0][valid]).tolist())
    return base_out, thought_out


def hard_mask(reference: list[list[float]], fraction: float) -> list[list[bool]]:
    """The `fraction` of tokens with the highest NLL in `reference` (ties at the threshold included)."""
    flat = sorted((v for seq in reference for v in seq), reverse=True)
    if not flat or fraction <= 0:
        return [[False] * len(seq) for seq in reference]
    threshold = flat[max(1, round(len(flat) * fraction)) - 1]
    return [[v >= threshold for v in seq] for seq in reference]


def perplexity_row(nll: list[list[float]], hard: list[list[bool]], prefix: str) -> dict[str, float]:
    every = [v for seq in nll for v in seq]
    hardest = [v for seq, m in zip(nll, hard, strict=True) for v, h in zip(seq, m, strict=True) if h]
    mean = sum(every) / len(every)
    hard_mean = sum(hardest) / len(hardest) if hardest else float("nan")
    return {f"{prefix}_nll": round(mean, 6), f"{prefix}_ppl": round(math.exp(mean), 4), f"{prefix}_hard_nll": round(hard_mean, 6), f"{prefix}_hard_ppl": round(math.exp(hard_mean), 4)}


# ------------------------------------------------------------------------------------ method


class QuietStar(Method):
    """Quiet-STaR: learn to think before every token from plain text, for any causal LM."""

    name = "quiet-star"
    paper = "Zelikman et al. Quiet-STaR: Language Models Can Teach Themselves to Think Before Speaking. 2024 (arXiv 2403.09629)"
    Config = QuietStarConfig

    def run(self, ctx: RunContext[QuietStarConfig]) -> dict[str, Any]:
        """Measure the base, train, measure again: every step a resumable phase."""
        cfg: QuietStarConfig = ctx.options
        fit, dev, heldout = method_splits(ctx, cfg, need_dev=not cfg.text)
        train_docs, heldout_docs = self.corpus(ctx, fit, dev)
        d0, d1 = ctx.iter_dir(0), ctx.iter_dir(1)
        models = ModelSlot(ctx)
        try:
            ctx.phase("iter_000/perplexity", lambda: self.perplexity(ctx, None, heldout_docs, d0))
            if cfg.final_eval:
                self.accuracy_phases(ctx, models, "iter_000", "base", heldout, thoughts=False)
            ctx.write_report()
            models.close()
            trained = ctx.phase("iter_001/train", lambda: self.train(ctx, train_docs, d1), all_processes=True)
            model = trained["checkpoint"]
            ctx.phase("iter_001/perplexity", lambda: self.perplexity(ctx, model, heldout_docs, d1))
            if cfg.final_eval:
                self.accuracy_phases(ctx, models, "iter_001", model, heldout, thoughts=False, suffix="_no_thoughts")
                models.close()
                if cfg.eval_thoughts:
                    thinking = ModelSlot(ctx, load=lambda ref: load_backend("quiet-star", model=ctx.model_path(ref)))
                    try:
                        self.accuracy_phases(ctx, thinking, "iter_001", model, heldout, thoughts=True)
                    finally:
                        thinking.close()
            ctx.phase("iter_001/summary", lambda: self.funnel(ctx))
            ctx.show_iterations()
            ctx.write_report()
        finally:
            models.close()
        return {"final_checkpoint": model}

    # -- data --------------------------------------------------------------------------------

    def corpus(self, ctx: Any, fit: list[Any], dev: list[Any]) -> tuple[list[str], list[str]]:
        """Training documents (at most --documents) and held-out documents."""
        cfg: QuietStarConfig = ctx.options
        if cfg.text:
            train_docs, heldout_docs = split_heldout(read_documents(cfg.text, cfg.text_field), cfg.heldout_documents)
        else:
            train_docs, heldout_docs = task_documents(ctx.task, fit), task_documents(ctx.task, dev)
        return (train_docs[: cfg.documents] if cfg.documents else train_docs), heldout_docs

    # -- steps -------------------------------------------------------------------------------

    def load_wrapper(self, ctx: Any, checkpoint: str | None) -> tuple[Any, Any]:
        """The untrained wrapper around the base model (None) or the trained one from `checkpoint`, and its tokenizer."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .quiet_star_model import add_thoughts, load_thoughts

        cfg: QuietStarConfig = ctx.options
        path = ctx.model_path(checkpoint or "base")
        tokenizer = AutoTokenizer.from_pretrained(path)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model = load_thoughts(base, path) if checkpoint else add_thoughts(base, tokenizer, cfg.settings(), log=ctx.log)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def perplexity(self, ctx: Any, checkpoint: str | None, documents: list[str], d: Path) -> dict[str, Any]:
        """Held-out NLL per token on the base path and after a thought; the hardest tokens are the untrained base model's (iter_000)."""
        cfg: QuietStarConfig = ctx.options
        model, tokenizer = self.load_wrapper(ctx, checkpoint)
        sequences = token_sequences(tokenizer, documents, cfg.seq_len, cfg.packing)
        base, thought = token_nll(model, sequences, tokenizer.pad_token_id, cfg.eval_batch_size, ctx.seed_for(f"perplexity/{checkpoint}"))
        atomic_write_jsonl(d / "heldout_token_nll.jsonl", [{"base": b, "thought": t} for b, t in zip(base, thought, strict=True)])
        reference = base if checkpoint is None else [r["base"] for r in read_jsonl(ctx.iter_dir(0) / "heldout_token_nll.jsonl")]
        hard = hard_mask(reference, cfg.hard_fraction)
        return {
            "model": checkpoint or "base", "sequences": len(sequences), "tokens": sum(len(b) for b in base), "hard_fraction": cfg.hard_fraction,
            **perplexity_row(base, hard, "base"), **perplexity_row(thought, hard, "thought"), "parallel": model.settings.parallel, "mix": model.settings.mix,
        }  # fmt: skip

    def accuracy_phases(self, ctx: Any, models: ModelSlot, iteration: str, model: str, heldout: list[Any], *, thoughts: bool, suffix: str = "") -> None:
        """Zero-shot CoT accuracy (greedy) on the run's task (eval_heldout) and on each --eval-tasks task (eval_<task>)."""
        cfg: QuietStarConfig = ctx.options
        ctx.phase(f"{iteration}/eval_heldout{suffix}", lambda: self.accuracy(ctx, models, model, ctx.task, heldout, Path(iteration) / f"eval_heldout{suffix}.jsonl", thoughts))
        for name in cfg.eval_tasks:
            if name == ctx.task.full_name:
                continue
            label = name.replace(":", "_")
            ctx.phase(f"{iteration}/eval_{label}{suffix}", lambda name=name, label=label: self.accuracy(ctx, models, model, self.eval_task(ctx, name), None, Path(iteration) / f"eval_{label}{suffix}.jsonl", thoughts))

    def eval_task(self, ctx: Any, name: str) -> Any:
        return load_task(name, data_dir=ctx.data_dir)

    def accuracy(self, ctx: Any, models: ModelSlot, model: str, task: Any, examples: list[Any] | None, output: Path, thoughts: bool) -> dict[str, Any]:
        from cotkit import evaluate, make_verifier

        cfg: QuietStarConfig = ctx.options
        if examples is None:
            examples = task.examples(task.heldout_split)[: cfg.heldout_limit] if cfg.heldout_limit else task.examples(task.heldout_split)
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens, stop=task.stop_sequences(EVAL_STYLE), seed=0)
        verifier = make_verifier(None, task)
        try:
            summary = evaluate(task, examples, models.get(model), verifier, style=EVAL_STYLE, params=params, output=ctx.path / output, model_label=model)
        finally:
            verifier.close()
        return {"split": task.heldout_split, "task": task.full_name, "model": model, "thoughts": thoughts, **summary}

    def train(self, ctx: Any, documents: list[str], d: Path) -> dict[str, Any]:
        """The Quiet-STaR objective for --steps steps from the base model: d/checkpoint (with quiet_star/), d/train_log.jsonl."""
        cfg: QuietStarConfig = ctx.options
        objective = QuietStarObjective(cfg, ctx.log)
        _, row = fine_tune(ctx, "iter_001/train", "quiet-star steps", ctx.base_model, documents, cfg.engine_sft(), cfg.steps, d, objective=objective)
        # The engine counts one sequence per document; packed documents share sequences, so its "dropped" are not drops.
        row["sequences"] = row["examples"] - row.pop("dropped_too_long")
        steps = list(read_jsonl(d / "train_log.jsonl"))
        saved = json.loads((d / "checkpoint" / "quiet_star" / "config.json").read_text(encoding="utf-8"))
        first, last = steps[0], steps[-1]
        return {
            **row, "documents": len(documents), "parallel": saved["parallel"], "mix": saved["mix"],
            **{f"{k}_first": first[k] for k in ("nll_base", "nll_mix", "reward_mean", "mixing_weight")},
            **{f"{k}_last": last[k] for k in ("nll_base", "nll_mix", "reward_mean", "mixing_weight")},
        }  # fmt: skip

    def funnel(self, ctx: Any) -> dict[str, Any]:
        """Perplexity before and after (overall and hard tokens, base path and with thoughts) and the accuracies."""
        before, after = ctx.result("iter_000/perplexity"), ctx.result("iter_001/perplexity")
        row: dict[str, Any] = {"steps": ctx.result("iter_001/train")["steps"]}
        for key in ("base_ppl", "base_hard_ppl", "thought_ppl", "thought_hard_ppl"):
            row[f"{key}_before"], row[f"{key}_after"] = before[key], after[key]
        for name in ctx.state.phases:
            if "/eval_" in name and ctx.done(name):
                r = ctx.result(name)
                label = name.replace("/", "_")
                row.update({f"{label}_accuracy": r["accuracy"], f"{label}_n": r["n"], f"{label}_ci_low": r["ci_low"], f"{label}_ci_high": r["ci_high"]})
        return {**row, **phase_seconds(ctx, "iter_001")}
