"""STaR, the Self-Taught Reasoner (Zelikman, Wu, Mu, Goodman 2022, arXiv 2203.14465).

Each iteration: sample a rationale for every training question with few-shot CoT prompts; keep the
ones whose answer the task's verifier marks correct; for the failures, *rationalize* (prompt again
with the gold answer as a hint) and keep the rationales that reach it, stored with the hint-free
prompt; fine-tune the base model on all kept rationales (steps growing 20% per iteration); sample
the next iteration from the new model. Dev accuracy is measured after every iteration with the same
verifier (iteration 0 = the base model), and the task's held-out split is scored at the end.

Prompt context, as the reference code (ezelikman/STaR) runs with `--no_prompt`: the base model
needs the few-shot exemplars to answer in the task's format, so it is sampled and evaluated with
`--style` (exemplars, then `Q: ...\\nA:`); a fine-tuned model has learnt the format, so training
examples store the question alone in the few-shot layout (the `bare` style, `Q: ...\\nA:`) and
every fine-tuned model is sampled, rationalized and evaluated with exactly that prompt. A stored
training prompt is therefore the prompt its model is later asked with. `--context prompt` keeps
the exemplars everywhere instead (the reference's `--few_shot_train`).

The hint follows the reference with few-shot prompts: multiple choice marks the correct option
`(CORRECT)`, other answers are appended to the question as ` (72)`, in the exemplars too, which
shows the model what the parenthesis means. Zero-shot and chat prompts have no exemplar to show
that, so there the answer is given as a sentence (`Hint: the answer is 72.`); `--hint-format`
picks either everywhere.

Variants: `--no-rationalize` (STaR without rationalization), `--samples-per-question K` with
`--temperature` > 0 (rejection-sampling fine-tuning / expert iteration / ReST-EM, duplicates
removed), `--init last` (continue from the previous iteration's model instead of the base).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    eval_phases,
    fine_tune,
    greedy_accuracy,
    method_splits,
    option,
    phase_seconds,
    prune_checkpoints,
    read_jsonl,
    trim_after_answer,
)

from .soft_prompt_start import fewshot_text, token_count

if TYPE_CHECKING:
    from cotkit import RunContext


@dataclass
class StarSFTConfig(SFTConfig):
    """The shared fine-tuning step as the STaR reference steps: 8 packed sequences of 1,536 tokens."""

    max_length: int = option(1536, help="Length of a packed sequence in tokens (the reference's 1,536); longer examples are cut at the end.")
    packing: bool = option(
        True,
        help="Pack whole examples into each sequence, attention and positions restarting per example "
        "(the reference packs; --no-sft.packing: one example per sequence).",
    )


@dataclass
class StarConfig(SplitLimits):
    """Options of `cotkit train --method star` (`cotkit show star` lists them)."""

    iterations: int = option(3, help="Outer-loop iterations (sample, rationalize, fine-tune, evaluate).")
    style: str = option(
        "fewshot",
        help="Prompt style of the base model (iteration 0 is evaluated, iteration 1 sampled and rationalized with it); "
        "fine-tuned models get the --context one.",
        choices=PROMPT_STYLES,
    )
    context: str = option(
        "question",
        help="What training examples store, and so what every fine-tuned model is sampled, rationalized and evaluated "
        "with: question = the --style prompt without its few-shot exemplars (fewshot becomes bare, `Q: ...\\nA:`, as "
        "the reference's --no_prompt; other styles have none to drop); prompt = the whole --style prompt, exemplars "
        "included (the reference's --few_shot_train).",
        choices=("question", "prompt"),
    )
    hint_format: str = option(
        "auto",
        help="How a rationalization prompt gives a non-multiple-choice gold answer (multiple choice always marks the "
        "option (CORRECT)): inline = ` (72)` appended to the question, the reference's; sentence = `Hint: the answer "
        "is 72.` after it; auto = inline with --style fewshot (its hinted exemplars show what the parenthesis means), "
        "else sentence.",
        choices=("auto", "inline", "sentence"),
    )
    rationalize: bool = option(True, help="Retry failed questions with the gold answer as a hint (--no-rationalize: off).")
    samples_per_question: int = option(
        1, help="Rationales sampled per question; more than 1 (with --temperature > 0) is rejection-sampling fine-tuning."
    )
    temperature: float = option(
        0.0, help="Sampling temperature for rationales (0: greedy; the reference samples at 0.01, which is greedy but for near-ties)."
    )
    top_p: float = option(1.0, help="Nucleus sampling for rationales (the reference: 0.9; no effect when greedy).")
    max_new_tokens: int = option(256, help="Longest rationale in tokens (sampling and evaluation).")
    dedup: bool = option(True, help="Keep one copy of identical rationales for the same question.")
    max_per_question: int | None = option(None, help="Keep at most this many correct rationales per question.")
    drop_truncated: bool = option(
        True, help="Discard rationales that hit --max-new-tokens before ending (unless --trim finds their answer)."
    )
    trim: bool = option(
        True, help="Cut a kept rationale after its first statement of the answer (drops rambling after it)."
    )
    init: str = option(
        "base", help="Fine-tune each iteration from the base model (paper) or continue from the last one.", choices=("base", "last")
    )
    steps: int = option(
        40,
        help="Optimizer steps in iteration 1 (the reference code's 40). With sft.packing (the default) a step holds "
        "sft.batch_size x sft.grad_accum packed sequences of sft.max_length tokens, as the reference counts: "
        "8 x 1,536 tokens, about 80 examples; unpacked, 8 examples.",
    )
    step_growth: float = option(1.2, help="Factor by which the steps grow each iteration (paper: 20%).")
    keep_checkpoints: str = option(
        "all", help="Keep every iteration's checkpoint, or only the last (saves disk).", choices=("all", "last")
    )
    soft_prompt_init: str = option(
        "sft",
        help="With sft.soft_prompt: fewshot starts every iteration's soft prompt from the task's few-shot demonstrations, one "
        "virtual token per token (the fine-tuned model then begins as few-shot prompting, as TRICE's notebook; needs "
        "--style fewshot --context question); sft: sft.soft_prompt_tokens and sft.soft_prompt_init_text as given.",
        choices=("sft", "fewshot"),
    )
    sft: StarSFTConfig = field(default_factory=StarSFTConfig)

    def __post_init__(self) -> None:
        if self.soft_prompt_init == "fewshot" and not (self.sft.soft_prompt and self.style == "fewshot" and self.context == "question"):
            raise ConfigError("soft_prompt_init=fewshot needs sft.soft_prompt, --style fewshot and --context question")
        if self.iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {self.iterations}")
        if self.samples_per_question < 1:
            raise ConfigError(f"samples_per_question must be at least 1, got {self.samples_per_question}")
        if self.samples_per_question > 1 and self.temperature <= 0:
            raise ConfigError(
                f"samples_per_question={self.samples_per_question} at temperature 0 gives identical samples; "
                "set --temperature (e.g. 0.7)"
            )
        if self.steps < 1 or self.step_growth <= 0:
            raise ConfigError("steps must be at least 1 and step_growth positive")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be at least 1")
        if self.max_per_question is not None and self.max_per_question < 1:
            raise ConfigError(f"max_per_question must be at least 1 (or none), got {self.max_per_question}")
        super().__post_init__()  # the split limits


def training_sft(cfg: StarConfig, task: Any, model: str) -> SFTConfig:
    """`cfg.sft`, its soft prompt started from the task's few-shot demonstrations where --soft-prompt-init fewshot says so."""
    if cfg.soft_prompt_init != "fewshot":
        return cfg.sft
    text = fewshot_text(task, task.examples(task.train_split)[0])
    return replace(cfg.sft, soft_prompt_init_text=text, soft_prompt_tokens=token_count(model, text))


def steps_at(cfg: StarConfig, iteration: int) -> int:
    """Optimizer steps of an iteration (1-based): `int(steps * step_growth ** (iteration - 1))` as in the reference."""
    return max(1, int(cfg.steps * cfg.step_growth ** (iteration - 1) + 1e-9))


def trained_style(cfg: StarConfig) -> str:
    """The prompt style of stored training examples, and so of every fine-tuned model."""
    if cfg.context == "question" and cfg.style == "fewshot":
        return "bare"
    return cfg.style


def style_for(cfg: StarConfig, model: str) -> str:
    """The prompt style to sample, rationalize or evaluate `model` with: --style for the base model, else the trained one."""
    return cfg.style if model == "base" else trained_style(cfg)


def hint_for(cfg: StarConfig) -> str:
    """The task's hint format for rationalization (`auto` resolved)."""
    if cfg.hint_format != "auto":
        return cfg.hint_format
    return "inline" if cfg.style == "fewshot" else "sentence"


class Star(Method):
    """STaR: bootstrap rationales by sampling, filtering and rationalizing, then fine-tune; repeat."""

    name = "star"
    paper = "Zelikman, Wu, Mu, Goodman. STaR: Bootstrapping Reasoning With Reasoning. NeurIPS 2022 (arXiv 2203.14465)"
    Config = StarConfig

    def run(self, ctx: RunContext[StarConfig]) -> dict[str, Any]:
        """The STaR loop, top to bottom; every step is a resumable phase."""
        cfg: StarConfig = ctx.options
        fit, dev, heldout = method_splits(ctx, cfg)
        by_id = {e.id: e for e in fit}
        models = ModelSlot(ctx)
        base = "base"  # model references are "base" or a folder relative to the run directory
        try:
            eval_phases(ctx, 0, dev, heldout, lambda examples, out, split: self.evaluate(ctx, models, base, examples, out, split))
            ctx.write_report()
            current = base
            for it in range(1, cfg.iterations + 1):
                d = ctx.iter_dir(it)
                name = f"iter_{it:03d}"
                sampled = ctx.phase(f"{name}/sample", lambda: self.sample(ctx, models, current, fit, d / "samples.jsonl", f"{name}/sample", hint=False))
                if cfg.rationalize:
                    failed_ids = set(sampled["failed_ids"])
                    failed = [e for e in fit if e.id in failed_ids]
                    ctx.phase(
                        f"{name}/rationalize",
                        lambda: self.sample(ctx, models, current, failed, d / "rationalized.jsonl", f"{name}/rationalize", hint=True),
                    )
                models.close()  # free the sampler's memory before fine-tuning
                built = ctx.phase(f"{name}/build", lambda: self.build_train_set(ctx, d, by_id))
                if built["train_examples"] == 0:
                    ctx.log(f"[yellow]{name}: no correct rationale to train on; the model is unchanged this iteration[/yellow]")
                    trained = ctx.phase(f"{name}/train", lambda: {"checkpoint": current, "steps": 0, "skipped": True, "examples": 0})
                else:
                    init = base if cfg.init == "base" else current
                    trained = ctx.phase(f"{name}/train", lambda: self.train(ctx, init, d, it), all_processes=True)
                current = trained["checkpoint"]
                final = heldout if it == cfg.iterations else []  # the held-out split scores only the final model
                eval_phases(ctx, it, dev, final, lambda examples, out, split: self.evaluate(ctx, models, current, examples, out, split))
                ctx.phase(f"{name}/summary", lambda: self.funnel(ctx, it))
                if cfg.keep_checkpoints == "last":
                    prune_checkpoints(ctx, it, keep=current)
                ctx.show_iterations()
                ctx.write_report()
        finally:
            models.close()
        return {"final_checkpoint": current}

    # -- steps -------------------------------------------------------------------------------

    def evaluate(self, ctx: Any, models: ModelSlot, model: str, examples: list[Any], output: Path, split: str) -> dict[str, Any]:
        """Greedy accuracy of `model` on `examples` with the task's verifier."""
        cfg: StarConfig = ctx.options
        style = style_for(cfg, model)
        return greedy_accuracy(ctx, models.get(model), model, examples, output, split, style=style, max_new_tokens=cfg.max_new_tokens)

    def sample(self, ctx: Any, models: ModelSlot, model: str, examples: list[Any], output: Path, phase: str, hint: bool) -> dict[str, Any]:
        """Sample rationales (with the gold answer as a hint when rationalizing), verify, save every sample."""
        from cotkit import atomic_write_jsonl, make_verifier, sample, sample_row, verify_samples

        cfg: StarConfig = ctx.options
        task = ctx.task
        params = SamplingParams(
            n=cfg.samples_per_question, temperature=cfg.temperature, top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens, stop=task.stop_sequences(style_for(cfg, model)), seed=ctx.seed_for(phase),
        )
        style = style_for(cfg, model)
        given = hint_for(cfg) if hint else False
        samples = sample(task, examples, models.get(model), params, style=style, hint=given, progress=True) if examples else []
        verifier = make_verifier(None, task)
        try:
            verify_samples(samples, verifier)
        finally:
            verifier.close()
        rows = []
        for s in samples:
            s.meta["model"] = model  # "base" or a folder inside the run: the run directory stays relocatable
            row = sample_row(s, include_prompt=True)
            row["id"] = s.example.id
            row["hint"] = hint
            rows.append(row)
        atomic_write_jsonl(output, rows)
        correct_ids = {s.example.id for s in samples if s.verdict is not None and s.verdict.correct}
        return {
            "questions": len(examples),
            "samples": len(samples),
            "correct": sum(1 for s in samples if s.verdict is not None and s.verdict.correct),
            "questions_correct": len(correct_ids),
            "unparseable": sum(1 for s in samples if s.verdict is not None and s.verdict.status.value == "unparseable"),
            "truncated": sum(1 for s in samples if _truncated(s.meta)),
            "failed_ids": [e.id for e in examples if e.id not in correct_ids],
        }

    def build_train_set(self, ctx: Any, d: Path, by_id: dict[str, Any]) -> dict[str, Any]:
        """Correct rationales (and rationalizations, hint removed) as training examples: d/train.jsonl."""
        from cotkit import TrainExample, atomic_write_jsonl

        cfg: StarConfig = ctx.options
        task = ctx.task
        kept: list[TrainExample] = []
        seen: dict[str, set[str]] = {}
        counts = {"kept_correct": 0, "kept_rationalized": 0, "duplicates": 0, "dropped_truncated": 0, "over_cap": 0}
        for fname, source in (("samples.jsonl", "correct"), ("rationalized.jsonl", "rationalized")):
            path = d / fname
            if not path.exists():
                continue
            for row in read_jsonl(path):
                if not row.get("correct"):
                    continue
                example = by_id[row["id"]]
                completion = row["completion"]
                trimmed = trim_after_answer(completion, task.answer_sentence(example), example.answer) if cfg.trim else None
                # A rationale cut at its answer is complete even if the sampler ran on past it.
                if cfg.drop_truncated and trimmed is None and _truncated(row.get("meta") or {}):
                    counts["dropped_truncated"] += 1
                    continue
                if trimmed is not None:
                    completion = trimmed
                key = " ".join(completion.split())
                got = seen.setdefault(example.id, set())
                if cfg.dedup and key in got:
                    counts["duplicates"] += 1
                    continue
                if cfg.max_per_question is not None and len(got) >= cfg.max_per_question:
                    counts["over_cap"] += 1
                    continue
                got.add(key)
                # The training prompt is the hint-free one: a rationalization is stored as if the
                # model had produced it without being told the answer.
                prompt = task.prompt(example, trained_style(cfg), hint=False)
                kept.append(TrainExample(prompt, completion, 1.0, {"id": example.id, "source": source}))
                counts[f"kept_{source}"] += 1
        atomic_write_jsonl(d / "train.jsonl", [ex.to_dict() for ex in kept])
        tokens = self._count_tokens(ctx, kept)
        return {
            "train_examples": len(kept),
            "train_questions": sum(1 for v in seen.values() if v),
            **counts,
            "train_tokens": tokens["tokens"],
            "train_completion_tokens": tokens["completion_tokens"],
        }

    def _count_tokens(self, ctx: Any, kept: list[Any]) -> dict[str, int]:
        if not kept:
            return {"tokens": 0, "completion_tokens": 0}
        from transformers import AutoTokenizer

        from cotkit import completion_ids, render_prompt_ids

        tok = AutoTokenizer.from_pretrained(ctx.base_model)
        prompt_tokens = sum(len(render_prompt_ids(tok, ex.prompt)) for ex in kept)
        completion_tokens = sum(len(completion_ids(tok, ex.completion)) for ex in kept)
        return {"tokens": prompt_tokens + completion_tokens, "completion_tokens": completion_tokens}

    def train(self, ctx: Any, init: str, d: Path, iteration: int) -> dict[str, Any]:
        """Fine-tune `init` on d/train.jsonl for this iteration's number of steps; d/checkpoint."""
        from cotkit import TrainExample

        cfg: StarConfig = ctx.options
        items = [TrainExample.from_dict(r) for r in read_jsonl(d / "train.jsonl")]
        phase = f"iter_{iteration:03d}/train"
        sft = training_sft(cfg, ctx.task, ctx.base_model)
        _, row = fine_tune(ctx, phase, f"train iter {iteration}", ctx.model_path(init), items, sft, steps_at(cfg, iteration), d)
        return row

    def funnel(self, ctx: Any, it: int) -> dict[str, Any]:
        """The iteration's funnel and phase times, as one metrics row."""
        name = f"iter_{it:03d}"
        s = ctx.result(f"{name}/sample")
        r = ctx.result(f"{name}/rationalize") if ctx.done(f"{name}/rationalize") else {}
        b = ctx.result(f"{name}/build")
        t = ctx.result(f"{name}/train")
        e = ctx.result(f"{name}/eval_dev")
        times = phase_seconds(ctx, name)
        return {
            "questions": s["questions"],
            "samples": s["samples"],
            "correct": s["correct"],
            "questions_correct": s["questions_correct"],
            "unparseable": s["unparseable"],
            "rationalization_attempts": r.get("samples", 0),
            "rationalized": r.get("questions_correct", 0),
            "train_examples": b["train_examples"],
            "train_tokens": b["train_tokens"],
            "steps": t.get("steps", 0),
            "examples_trained": t.get("examples_trained", 0),  # with packing, about 10x the steps x 8
            "dev_accuracy": e["accuracy"],
            "dev_ci_low": e["ci_low"],
            "dev_ci_high": e["ci_high"],
            "dev_n": e["n"],
            **times,
        }


def _truncated(meta: dict[str, Any]) -> bool:
    return meta.get("finish_reason") == "length"
