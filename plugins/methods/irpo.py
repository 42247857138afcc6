"""Iterative Reasoning Preference Optimization (Pang, Yuan, Cho, He, Sukhbaatar, Weston 2024, arXiv 2404.19733).

Each iteration t: sample N chains of thought per training question from M_t (paper: N = 30,
T = 0.8); the task's verifier splits them into winners (correct final answer) and losers (any
other answer); up to K (winner, loser) pairs per question are drawn at random from the pairs a
question offers (only questions with at least one of each yield pairs); M_{t+1} is trained
*initialized from M_t* with M_t as the frozen reference, on DPO + α·NLL(winner)/|winner|
(`cotkit.harness.preference`); dev accuracy after every iteration (iteration 0 = the base model),
maj@k on dev when asked (`--vote-samples`, the paper's maj@32), the task's held-out split at the
end. `--nll-weight 0` is the plain-DPO ablation.

Winners and losers go through one rule (`usable_completion`) so that a pair differs in its
reasoning, not in how its two texts end: each is cut after its statement of its own answer, and
one that ran into --max-new-tokens without stating an answer is not used, on either side. Both
then end with EOS in training.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotkit import (
    PROMPT_STYLES,
    ConfigError,
    DPONLLObjective,
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
    trim_after_answer,
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
    drop_truncated: bool = option(
        True, help="Samples that hit --max-new-tokens before stating an answer are not used, winners and losers alike."
    )
    trim: bool = option(
        True, help="Cut every sample after its first statement of its own answer (the gold one for winners, the wrong one for losers)."
    )
    beta: float = option(0.1, help="DPO temperature β on the log-ratio margin.")
    nll_weight: float = option(1.0, help="α: weight of the winner's NLL term (0: plain DPO).")
    nll_normalization: str = option(
        "winner_tokens",
        help="What divides the winner's NLL: its own tokens (paper), all winner tokens of the micro-batch (TRL), or none (summed).",
        choices=DPONLLObjective.NLL_NORMALIZATIONS,
    )
    vote_samples: int = option(
        0, help="k: also sample k answers per dev question at --temperature after every iteration and report maj@k (paper: 32; 0: off)."
    )
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
        if self.sft.packing:
            raise ConfigError("sft.packing is for SFT objectives: IRPO trains on unpacked preference pairs")
        for name in ("max_new_tokens", "pairs_per_question"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be positive, got {self.beta}")
        if self.nll_weight < 0:
            raise ConfigError(f"nll_weight must be 0 or more, got {self.nll_weight}")
        if self.vote_samples < 0:
            raise ConfigError(f"vote_samples must be 0 (off) or more, got {self.vote_samples}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (or none), got {self.max_steps}")
        super().__post_init__()  # the split limits


# ---------------------------------------------------------------------------------------- pairs


def build_pairs(
    rows: list[dict[str, Any]], k: int, seed: int, *, dedup: bool = True, unparseable_losers: bool = True,
    drop_truncated: bool = True, trim: Callable[[dict[str, Any]], str | None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:  # fmt: skip
    """Up to k (winner, loser) pairs per question from verified sample rows, drawn at random.

    `rows` are sample rows (`id`, `prompt`, `completion`, `verdict`, `meta`) in question order.
    Winners are `correct` rows; losers are `incorrect` rows (and `unparseable` ones if asked).
    Verifier errors and timeouts are neither. Both sides pass `usable_completion` with the same
    `trim` (see `answer_trimmer`) and `drop_truncated`. Returns the pair rows and the counts of the
    funnel: `winners` / `losers` are the distinct texts pairs are drawn from, `trimmed_*` the
    samples cut after their answer, `dropped_truncated_*` the unfinished samples left out.
    """
    by_q: dict[str, dict[str, Any]] = {}
    counts = dict.fromkeys(("trimmed_winners", "trimmed_losers", "dropped_truncated_winners", "dropped_truncated_losers"), 0)
    for row in rows:
        q = by_q.setdefault(row["id"], {"prompt": row["prompt"], "winners": [], "losers": []})
        side = pair_side(row.get("verdict"), unparseable_losers)
        if side is None:
            continue
        text = usable_completion(row, trim, drop_truncated)
        if text is None:
            counts[f"dropped_truncated_{side}"] += 1
            continue
        counts[f"trimmed_{side}"] += text != row["completion"]
        q[side].append(text)
    pairs: list[dict[str, Any]] = []
    counts.update({"questions": len(by_q), "winners": 0, "losers": 0, "questions_with_winner": 0, "questions_with_loser": 0, "questions_with_both": 0})
    for qid, q in by_q.items():
        winners, losers = q["winners"], q["losers"]
        if dedup:
            winners, losers = _unique(winners), _unique(losers)
        counts["winners"] += len(winners)
        counts["losers"] += len(losers)
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


def pair_side(verdict: str | None, unparseable_losers: bool) -> str | None:
    """"winners", "losers", or None for a sample that is neither (a verifier error or timeout)."""
    if verdict == "correct":
        return "winners"
    if verdict == "incorrect" or (unparseable_losers and verdict == "unparseable"):
        return "losers"
    return None


def usable_completion(row: dict[str, Any], trim: Callable[[dict[str, Any]], str | None] | None, drop_truncated: bool) -> str | None:
    """The text a pair uses from a sample row, by one rule for winners and losers alike.

    Cut after the row's statement of its answer when `trim` finds one: the text then ends where
    the answer is given, even if the sampler ran on to --max-new-tokens. Otherwise a row that hit
    --max-new-tokens is unfinished and, with `drop_truncated`, not used (None).
    """
    cut = trim(row) if trim is not None else None
    if cut is not None:
        return cut
    if drop_truncated and (row.get("meta") or {}).get("finish_reason") == "length":
        return None
    return row["completion"]


def answer_trimmer(sentence: Callable[[str, str], str], gold: dict[str, str]) -> Callable[[dict[str, Any]], str | None]:
    """A `trim` for `build_pairs`: cut a sample row after its first statement of its own answer.

    `sentence(question_id, answer)` is how the task states `answer` for that question; `gold`
    maps question ids to gold answers. A winner's answer is the gold one; every row also tries
    the answer its verdict read (normalized, then as written), which is a loser's wrong answer.
    """

    def trim(row: dict[str, Any]) -> str | None:
        answers = [gold[row["id"]]] if row.get("verdict") == "correct" and row["id"] in gold else []
        answers += [a for a in (row.get("normalized"), row.get("extracted")) if a]
        for answer in dict.fromkeys(answers):
            cut = trim_after_answer(row["completion"], sentence(row["id"], answer), answer)
            if cut is not None:
                return cut
        return None

    return trim


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
            if cfg.vote_samples:
                ctx.phase("iter_000/eval_dev_maj", lambda: self.vote(ctx, sampler, current, dev, ctx.iter_dir(0), "iter_000/eval_dev_maj"))
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
                if cfg.vote_samples:
                    ctx.phase(f"{name}/eval_dev_maj", lambda: self.vote(ctx, sampler, current, dev, d, f"{name}/eval_dev_maj"))
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

    def vote(self, ctx: Any, sampler: ModelSlot, model: str, examples: list[Any], d: Path, phase: str) -> dict[str, Any]:
        """maj@k of `model` on `examples`: k samples per question at the sampling temperature, majority answer judged.

        A tie between answers goes to the one sampled first; a question where no sample gives an
        answer counts as not correct. Every sample goes to d/eval_dev_maj.jsonl.
        """
        from cotkit import evaluate, make_verifier

        cfg: IRPOConfig = ctx.options
        params = SamplingParams(
            n=cfg.vote_samples, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
            stop=ctx.task.stop_sequences(cfg.style), seed=ctx.seed_for(phase),
        )  # fmt: skip
        verifier = make_verifier(None, ctx.task)
        try:
            summary = evaluate(
                ctx.task, examples, sampler.get(model), verifier, style=cfg.style, params=params,
                output=d / "eval_dev_maj.jsonl", model_label=model, majority_vote=True,
            )  # fmt: skip
        finally:
            verifier.close()
        return {"split": "dev", "model": model, "decoding": f"maj@{cfg.vote_samples}, T={cfg.temperature}", **summary}

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
        by_id = {e.id: e for e in fit}

        def sentence(qid: str, answer: str) -> str:
            return ctx.task.answer_sentence(replace(by_id[qid], answer=answer))

        trim = answer_trimmer(sentence, {e.id: e.answer for e in fit}) if cfg.trim else None
        pairs, counts = build_pairs(
            rows, cfg.pairs_per_question, ctx.seed_for(phase), dedup=cfg.dedup, unparseable_losers=cfg.unparseable_losers,
            drop_truncated=cfg.drop_truncated, trim=trim,
        )  # fmt: skip
        atomic_write_jsonl(d / "pairs.jsonl", pairs)
        return counts

    def train(self, ctx: Any, init: str, d: Path, iteration: int) -> dict[str, Any]:
        """Train M_{t+1} from M_t with M_t as the reference on d/pairs.jsonl; d/checkpoint and d/train_log.jsonl."""
        from cotkit import PreferencePair

        cfg: IRPOConfig = ctx.options
        phase = f"iter_{iteration:03d}/train"
        pairs = [PreferencePair.from_dict(r) for r in read_jsonl(d / "pairs.jsonl")]
        steps = capped_steps(pairs, cfg.epochs, cfg.sft, cfg.max_steps)  # pairs are never packed
        model = ctx.model_path(init)
        objective = DPONLLObjective(model, beta=cfg.beta, nll_weight=cfg.nll_weight, nll_normalization=cfg.nll_normalization)
        result, row = fine_tune(ctx, phase, f"train iter {iteration}", model, pairs, cfg.sft, steps, d, objective=objective)
        log = read_jsonl(d / "train_log.jsonl") if (d / "train_log.jsonl").exists() else []
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
        maj = ctx.result(f"{name}/eval_dev_maj") if ctx.done(f"{name}/eval_dev_maj") else None
        times = phase_seconds(ctx, name)
        return {
            "questions": s["questions"],
            "samples": s["samples"],
            "correct": s["correct"],
            "unparseable": s["unparseable"],
            "truncated": s["truncated"],
            "trimmed_winners": p["trimmed_winners"],
            "trimmed_losers": p["trimmed_losers"],
            "dropped_truncated_winners": p["dropped_truncated_winners"],
            "dropped_truncated_losers": p["dropped_truncated_losers"],
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
            **(_maj_columns(maj) if maj else {}),
            **times,
        }


def _maj_columns(maj: dict[str, Any]) -> dict[str, Any]:
    """The maj@k result of an iteration as funnel columns."""
    return {
        "dev_maj_k": maj["samples_per_question"],
        "dev_maj_accuracy": maj["accuracy"],
        "dev_maj_ci_low": maj["ci_low"],
        "dev_maj_ci_high": maj["ci_high"],
        "dev_maj_n": maj["n"],
    }
