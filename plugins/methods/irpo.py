"""Iterative Reasoning Preference Optimization (Pang, Yuan, Cho, He, Sukhbaatar, Weston 2024, arXiv 2404.19733).

Each iteration t: sample N chains of thought per training question from M_t (paper: N = 30,
T = 0.8); the task's verifier splits them into winners (correct final answer) and losers (any
other answer); up to K (winner, loser) pairs per question are drawn at random from the pairs a
question offers (only questions with at least one of each yield pairs); M_{t+1} is trained
*initialized from M_t* with M_t as the frozen reference, on DPO + α·NLL(winner)/|winner|
(`cotkit.harness.preference`); dev accuracy after every iteration (iteration 0 = the base model),
the task's held-out split at the end. `--nll-weight 0` is the plain-DPO ablation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotkit import (
    PROMPT_STYLES,
    ConfigError,
    Method,
    ModelSlot,
    SamplingParams,
    SFTConfig,
    SplitLimits,
    capped_steps,
    fine_tune,
    greedy_accuracy,
    method_splits,
    option,
    phase_seconds,
    prune_checkpoints,
    read_jsonl,
)

if TYPE_CHECKING:
    from cotkit import RunContext


@dataclass
class IRPOTrainConfig(SFTConfig):
    """The shared fine-tuning step with preference-training defaults (lr 1e-6 constant, no warm-up)."""

    learning_rate: float = option(1e-6, help="Peak learning rate (AdamW).")
    warmup_steps: int = option(0, help="Optimizer steps of linear warm-up from 0 to the peak rate.")
    batch_size: int = option(1, help="Preference pairs per micro-batch on each device.")
    grad_accum: int = option(16, help="Micro-batches accumulated per optimizer step (16 pairs per step).")


@dataclass
class IRPOConfig(SplitLimits):
    """Options of `cotkit train --method irpo` (`cotkit show irpo` lists them)."""

    iterations: int = option(4, help="Outer-loop iterations (sample, pair, train, evaluate); the paper ran 4.")
    style: str = option("fewshot", help="Prompt style for sampling, training and evaluation.", choices=PROMPT_STYLES)
    samples_per_question: int = option(30, help="N: chains of thought sampled per training question (paper: 30).")
    temperature: float = option(0.8, help="Sampling temperature (paper: 0.8).")
    top_p: float = option(1.0, help="Nucleus sampling.")
    max_new_tokens: int = option(256, help="Longest chain of thought in tokens (sampling and evaluation).")
    pairs_per_question: int = option(10, help="K: most (winner, loser) pairs drawn per question (paper: 10).")
    dedup: bool = option(True, help="Count identical completions of a question once before pairing.")
    unparseable_losers: bool = option(True, help="Samples with no readable answer count as losers (--no-...: only wrong answers).")
    drop_truncated: bool = option(True, help="Winners that hit --max-new-tokens are not used (losers are).")
    trim: bool = option(True, help="Cut a winner after the task's answer sentence.")
    beta: float = option(0.1, help="DPO temperature β on the log-ratio margin.")
    nll_weight: float = option(1.0, help="α: weight of the winner's length-normalized NLL (0: plain DPO).")
    epochs: float = option(1.0, help="Passes over the iteration's pairs.")
    max_steps: int | None = option(None, help="Cap on optimizer steps per iteration (default: what --epochs needs).")
    keep_checkpoints: str = option("all", help="Keep every iteration's checkpoint, or only the last.", choices=("all", "last"))
    sft: IRPOTrainConfig = field(default_factory=IRPOTrainConfig)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {self.iterations}")
        if self.samples_per_question < 2:
            raise ConfigError(f"samples_per_question must be at least 2 to make pairs, got {self.samples_per_question}")
        if self.temperature <= 0:
            raise ConfigError("pairs need different samples: set --temperature above 0 (paper: 0.8)")
        for name in ("max_new_tokens", "pairs_per_question"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be positive, got {self.beta}")
        if self.nll_weight < 0:
            raise ConfigError(f"nll_weight must be 0 or more, got {self.nll_weight}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (or none), got {self.max_steps}")
        super().__post_init__()  # the split limits


# ---------------------------------------------------------------------------------------- pairs


def build_pairs(
    rows: list[dict[str, Any]], k: int, seed: int, *, dedup: bool = True, unparseable_losers: bool = True,
    drop_truncated: bool = True, trim_sentence: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:  # fmt: skip
    """Up to k (winner, loser) pairs per question from verified sample rows, drawn at random.

    `rows` are sample rows (`id`, `prompt`, `completion`, `verdict`, `meta`) in question order.
    Winners are `correct` rows; losers are `incorrect` rows (and `unparseable` ones if asked).
    Verifier errors and timeouts are neither. Returns the pair rows and the counts of the funnel.
    """
    by_q: dict[str, dict[str, Any]] = {}
    for row in rows:
        q = by_q.setdefault(row["id"], {"prompt": row["prompt"], "winners": [], "losers": []})
        verdict = row.get("verdict")
        text = row["completion"]
        if verdict == "correct":
            if drop_truncated and (row.get("meta") or {}).get("finish_reason") == "length":
                continue
            sentence = (trim_sentence or {}).get(row["id"])
            if sentence:
                i = text.find(sentence)
                text = text[: i + len(sentence)] if i >= 0 else text
            q["winners"].append(text)
        elif verdict == "incorrect" or (unparseable_losers and verdict == "unparseable"):
            q["losers"].append(text)
    pairs: list[dict[str, Any]] = []
    counts = {"questions": len(by_q), "questions_with_winner": 0, "questions_with_loser": 0, "questions_with_both": 0, "pairs": 0}
    for qid, q in by_q.items():
        winners, losers = q["winners"], q["losers"]
        if dedup:
            winners, losers = _unique(winners), _unique(losers)
        counts["questions_with_winner"] += bool(winners)
        counts["questions_with_loser"] += bool(losers)
        if not winners or not losers:
            continue
        counts["questions_with_both"] += 1
        n = len(winners) * len(losers)
        rng = random.Random(f"{seed}:{qid}")
        for idx in rng.sample(range(n), min(k, n)):
            w, lo = divmod(idx, len(losers))
            pairs.append({"prompt": q["prompt"], "chosen": winners[w], "rejected": losers[lo], "meta": {"id": qid}})
    counts["pairs"] = len(pairs)
    return pairs, counts


def _unique(texts: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in texts:
        key = " ".join(t.split())
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


# --------------------------------------------------------------------------------------- method


class IterativeRPO(Method):
    """Iterative RPO: DPO + NLL on the model's own correct vs incorrect chains of thought, iterated."""

    name = "irpo"
    paper = "Pang, Yuan, Cho, He, Sukhbaatar, Weston. Iterative Reasoning Preference Optimization. NeurIPS 2024 (arXiv 2404.19733)"
    Config = IRPOConfig

    def run(self, ctx: RunContext[IRPOConfig]) -> dict[str, Any]:
        """The Iterative RPO loop, top to bottom; every step is a resumable phase."""
        cfg: IRPOConfig = ctx.options
        task = ctx.task
        fit, dev, heldout = method_splits(ctx, cfg)
        sampler = ModelSlot(ctx)
        current = "base"
        try:
            ctx.phase("iter_000/eval_dev", lambda: self.evaluate(ctx, sampler, current, dev, ctx.iter_dir(0) / "eval_dev.jsonl", "dev"))
            if heldout:
                ctx.phase(
                    "iter_000/eval_heldout",
                    lambda: self.evaluate(ctx, sampler, current, heldout, ctx.iter_dir(0) / "eval_heldout.jsonl", task.heldout_split),
                )
            ctx.write_report()
            for it in range(1, cfg.iterations + 1):
                d, name = ctx.iter_dir(it), f"iter_{it:03d}"
                ctx.phase(f"{name}/sample", lambda: self.sample(ctx, sampler, current, fit, d / "samples.jsonl", f"{name}/sample"))
                sampler.close()  # free the sampler's memory before training
                built = ctx.phase(f"{name}/pairs", lambda: self.make_pairs(ctx, d, fit, f"{name}/pairs"))
                if built["pairs"] == 0:
                    ctx.log(f"[yellow]{name}: no question has both a correct and an incorrect sample; the model is unchanged[/yellow]")
                    trained = ctx.phase(f"{name}/train", lambda: {"checkpoint": current, "steps": 0, "skipped": True, "pairs": 0})
                else:
                    trained = ctx.phase(f"{name}/train", lambda: self.train(ctx, current, d, it), all_processes=True)
                current = trained["checkpoint"]
                ctx.phase(f"{name}/eval_dev", lambda: self.evaluate(ctx, sampler, current, dev, d / "eval_dev.jsonl", "dev"))
                if heldout and it == cfg.iterations:
                    ctx.phase(
                        f"{name}/eval_heldout",
                        lambda: self.evaluate(ctx, sampler, current, heldout, d / "eval_heldout.jsonl", task.heldout_split),
                    )
                ctx.phase(f"{name}/summary", lambda: self.funnel(ctx, it))
                if cfg.keep_checkpoints == "last":
                    prune_checkpoints(ctx, it, keep=current)
                ctx.show_iterations()
                ctx.write_report()
        finally:
            sampler.close()
        return {"final_checkpoint": current}

    # -- steps -------------------------------------------------------------------------------

    def evaluate(self, ctx: Any, sampler: ModelSlot, model: str, examples: list[Any], output: Path, split: str) -> dict[str, Any]:
        """Greedy accuracy of `model` on `examples` with the task's verifier."""
        cfg: IRPOConfig = ctx.options
        return greedy_accuracy(ctx, sampler.get(model), model, examples, output, split, style=cfg.style, max_new_tokens=cfg.max_new_tokens)

    def sample(self, ctx: Any, sampler: ModelSlot, model: str, examples: list[Any], output: Path, phase: str) -> dict[str, Any]:
        """N chains of thought per question from `model`, verified; every sample saved."""
        from cotkit import atomic_write_jsonl, make_verifier, sample, sample_row, verify_samples

        cfg: IRPOConfig = ctx.options
        params = SamplingParams(
            n=cfg.samples_per_question, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
            stop=ctx.task.stop_sequences(cfg.style), seed=ctx.seed_for(phase),
        )  # fmt: skip
        samples = sample(ctx.task, examples, sampler.get(model), params, style=cfg.style, progress=True)
        verifier = make_verifier(None, ctx.task)
        try:
            verify_samples(samples, verifier)
        finally:
            verifier.close()
        rows = []
        for s in samples:
            row = sample_row(s, include_prompt=True)
            row["id"] = s.example.id
            rows.append(row)
        atomic_write_jsonl(output, rows)
        status = [s.verdict.status.value if s.verdict is not None else "error" for s in samples]
        return {
            "questions": len(examples),
            "samples": len(samples),
            "correct": status.count("correct"),
            "incorrect": status.count("incorrect"),
            "unparseable": status.count("unparseable"),
            "truncated": sum(1 for s in samples if s.meta.get("finish_reason") == "length"),
        }

    def make_pairs(self, ctx: Any, d: Path, fit: list[Any], phase: str) -> dict[str, Any]:
        """Preference pairs from the iteration's samples: d/pairs.jsonl."""
        from cotkit import atomic_write_jsonl

        cfg: IRPOConfig = ctx.options
        rows = read_jsonl(d / "samples.jsonl")
        sentences = {e.id: ctx.task.answer_sentence(e) for e in fit} if cfg.trim else None
        pairs, counts = build_pairs(
            rows, cfg.pairs_per_question, ctx.seed_for(phase), dedup=cfg.dedup, unparseable_losers=cfg.unparseable_losers,
            drop_truncated=cfg.drop_truncated, trim_sentence=sentences,
        )  # fmt: skip
        atomic_write_jsonl(d / "pairs.jsonl", pairs)
        return counts

    def train(self, ctx: Any, init: str, d: Path, iteration: int) -> dict[str, Any]:
        """Train M_{t+1} from M_t with M_t as the reference on d/pairs.jsonl; d/checkpoint and d/train_log.jsonl."""
        from cotkit import DPONLLObjective, PreferencePair, atomic_write_jsonl

        cfg: IRPOConfig = ctx.options
        phase = f"iter_{iteration:03d}/train"
        pairs = [PreferencePair.from_dict(r) for r in read_jsonl(d / "pairs.jsonl")]
        steps = capped_steps(len(pairs), cfg.epochs, cfg.sft, cfg.max_steps)
        model = ctx.model_path(init)
        objective = DPONLLObjective(model, beta=cfg.beta, nll_weight=cfg.nll_weight)
        log: list[dict[str, Any]] = []

        def on_step(s: Any) -> None:
            log.append({"step": s.step, "loss": round(s.loss, 6), "lr": s.lr, **{k: round(v, 6) for k, v in s.stats.items()}})

        result, row = fine_tune(
            ctx, phase, f"train iter {iteration}", model, pairs, cfg.sft, steps, d, objective=objective, on_step=on_step
        )
        if log:
            atomic_write_jsonl(d / "train_log.jsonl", log)
        tail = log[-max(1, len(log) // 4) :]  # the last quarter of the steps: where the margins ended up

        def mean(key: str, rows: list[dict[str, Any]]) -> float | None:
            vals = [r[key] for r in rows if key in r]
            return round(sum(vals) / len(vals), 6) if vals else None

        row["pairs"] = row.pop("examples")
        return {
            **row,
            "chosen_reward": mean("chosen_reward", tail),
            "rejected_reward": mean("rejected_reward", tail),
            "reward_margin": mean("reward_margin", tail),
            "reward_accuracy": mean("reward_accuracy", tail),
            "dpo_loss": mean("dpo_loss", tail),
            "nll": mean("nll", tail),
        }

    def funnel(self, ctx: Any, it: int) -> dict[str, Any]:
        """The iteration's funnel, reward margins and phase times, as one metrics row."""
        name = f"iter_{it:03d}"
        s = ctx.result(f"{name}/sample")
        p = ctx.result(f"{name}/pairs")
        t = ctx.result(f"{name}/train")
        e = ctx.result(f"{name}/eval_dev")
        times = phase_seconds(ctx, name)
        return {
            "questions": s["questions"],
            "samples": s["samples"],
            "correct": s["correct"],
            "unparseable": s["unparseable"],
            "questions_with_both": p["questions_with_both"],
            "pairs": p["pairs"],
            "train_examples": p["pairs"],
            "steps": t.get("steps", 0),
            "chosen_reward": t.get("chosen_reward"),
            "rejected_reward": t.get("rejected_reward"),
            "reward_margin": t.get("reward_margin"),
            "reward_accuracy": t.get("reward_accuracy"),
            "dev_accuracy": e["accuracy"],
            "dev_ci_low": e["ci_low"],
            "dev_ci_high": e["ci_high"],
            "dev_n": e["n"],
            **times,
        }
