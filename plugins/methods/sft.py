"""SFT baselines: fine-tune on the dataset's own targets, the comparison row of every paper.

STaR compares with a *direct* fine-tune (answers only: 60.0 on CommonsenseQA for GPT-J), Iterative
RPO with *SFT on gold CoT* (63.5 on GSM8K for Llama-2-70B-Chat), Fine-tune-CoT with a *vanilla*
fine-tune on answers, PaD with fine-tuning on gold programs. This method trains on what the dataset
itself holds, through the same splits, fine-tuning step, evaluation and report as the methods it is
compared with, so such a row comes from one command:

- `--target rationale`: the task's own rationale (GSM8K's solution, calculator annotations removed
  by the task; MATH's solution with its `\\boxed{}`) followed by the task's answer sentence
  (`The answer is 72.`), so the verifier that scores the evaluation reads the answer the same way.
- `--target answer`: the answer sentence alone (the direct fine-tune baseline).
- `--target program`: a gold program where the task offers one (`Task.gold_program(example)`;
  SVAMP's `Equation` as `def solution(): ... return result`), in PaD's student format.

Every target is read back by the verifier that will score the model (the task's verifier; the
program verifier, which runs the program in the sandbox, for programs) before it is trained on:
a target the verifier does not accept is counted and left out (`rejected.jsonl`), never trained on.

Training and evaluation use one context, the base model's evaluation included, so the base row and
the fine-tuned row differ only by the fine-tuning. The default (`--style auto`) is `qa`:
`Q: {question}\\nA:` (options listed for multiple choice), the context STaR's reference code trains
and evaluates in, with no exemplars and no trigger: it fits an answer-only target as well as a
rationale (after the zero-shot trigger `Let's think step by step.` the direct baseline would write
a bare answer) and keeps training sequences short. `--target program` uses PaD's student prompt.

Phases: iter_001/build first (a task with nothing to train on fails in seconds, before any model
is loaded), iter_000/eval_dev and eval_heldout (the base model), iter_001/train, eval_dev,
eval_heldout, summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotkit import (
    PROMPT_STYLES,
    ConfigError,
    DataError,
    Example,
    Method,
    ModelSlot,
    Prompt,
    SamplingParams,
    SFTConfig,
    SplitLimits,
    capped_steps,
    eval_phases,
    fine_tune,
    method_splits,
    option,
    phase_seconds,
    read_jsonl,
)

if TYPE_CHECKING:
    from cotkit import RunContext

from .pad_programs import ProgramPrompts, clean_program

TARGETS = ("rationale", "answer", "program")
#: `qa`: `Q: {question}\nA:`, no exemplars, no trigger; the rest are the task's prompt styles.
CONTEXTS = ("qa", *PROMPT_STYLES)
#: The harness style a prompt view is sampled under (the view ignores it: it has one prompt).
VIEW_STYLE = "zeroshot"


@dataclass
class BaselineSFTConfig(SFTConfig):
    """The shared fine-tuning step with baseline defaults: lr 1e-5 constant, 8 sequences per step, no warm-up."""

    learning_rate: float = option(
        1e-5, help="Peak learning rate (AdamW); match the method compared with (STaR 1e-6, Fine-tune-CoT 3e-4, PaD 2e-5)."
    )
    warmup_steps: int = option(0, help="Optimizer steps of linear warm-up from 0 to the peak rate.")
    batch_size: int = option(4, help="Sequences per micro-batch on each device.")
    grad_accum: int = option(2, help="Micro-batches accumulated per optimizer step (4 x 2: 8 sequences, Fine-tune-CoT's batch).")


@dataclass
class SFTBaselineConfig(SplitLimits):
    """Options of `cotkit train --method sft` (`cotkit show sft` lists them)."""

    target: str = option(
        "rationale",
        help="What the model learns to write: the dataset's rationale and the answer sentence, the answer sentence "
        "only (direct fine-tune), or the task's gold program (PaD's comparison).",
        choices=TARGETS,
    )
    style: str = option(
        "auto",
        help="Prompt of training and evaluation, the same for both and for the base model; auto: qa (`Q: ...\\nA:`, "
        "no exemplars) for rationale/answer, PaD's student prompt for program.",
        choices=("auto", *CONTEXTS),
    )
    max_new_tokens: int = option(256, help="Longest generation in tokens at evaluation.")
    epochs: float = option(3.0, help="Passes over the training set.")
    max_steps: int | None = option(None, help="Cap on optimizer steps (default: what --epochs needs).")
    verifier: str = option("program", help="Verifier of the program target: checks each gold program before training and scores the model's programs.")
    verifier_options: dict[str, Any] = option(
        default_factory=dict, help="Options of the program target's verifier KEY=VALUE, e.g. cpu_seconds=2 workers=2."
    )
    sft: BaselineSFTConfig = field(default_factory=BaselineSFTConfig)

    def __post_init__(self) -> None:
        if self.target == "program" and self.style != "auto":
            raise ConfigError(f"style={self.style} applies to the rationale and answer targets; --target program uses PaD's student prompt (leave --style auto)")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (or none), got {self.max_steps}")
        super().__post_init__()  # the split limits


def context_of(cfg: SFTBaselineConfig) -> str:
    """The prompt context of training and evaluation (`auto` resolved): `program`, `qa` or a task style."""
    if cfg.target == "program":
        return "program"
    return "qa" if cfg.style == "auto" else cfg.style


# ------------------------------------------------------------------------------------ prompts


class BaselinePrompts:
    """The task seen through one prompt context, for the shared `sample` / `evaluate` steps and for training."""

    def __init__(self, task: Any, context: str):
        self._task = task
        self.context = context
        self._programs = ProgramPrompts(task) if context == "program" else None

    def prompt(self, example: Example, style: str = VIEW_STYLE, hint: bool = False) -> Prompt:
        """The model input for `example` in this context (the harness style is ignored)."""
        if self._programs is not None:
            return self._programs.prompt(example, VIEW_STYLE)  # PaD's student format
        if self.context == "qa":
            return f"Q: {self._task.question_text(example)}\nA:"
        return self._task.prompt(example, self.context)

    def stop_sequences(self, style: str = VIEW_STYLE) -> list[str]:
        """Where a completion in this context ends (the zero-shot stops for qa: the same `Q: ... A:` layout)."""
        if self._programs is not None:
            return self._programs.stop_sequences(VIEW_STYLE)
        return self._task.stop_sequences("zeroshot" if self.context == "qa" else self.context)

    def completion(self, example: Example, target: str) -> str | None:
        """The training completion of `example` for `target`, or None when the dataset has none for it."""
        if target == "program":
            program = self._task.gold_program(example)
            return clean_program(program) if program else None
        sentence = self._task.answer_sentence(example)
        if target == "answer":
            text = sentence
        else:
            rationale = (example.rationale or "").strip()
            if not rationale:
                return None
            text = rationale + ("\n" if "\n" in rationale else " ") + sentence
        # A text prompt ends at `A:` or a trigger sentence: the answer starts after a space, as a sampled one does.
        return text if self.context == "chat" else " " + text

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


# ------------------------------------------------------------------------------------ method


class SFTBaseline(Method):
    """Fine-tune on the dataset's own rationales, answers or gold programs: the papers' SFT baselines."""

    name = "sft"
    paper = (
        "Baselines of STaR (direct fine-tune, arXiv 2203.14465), Iterative RPO (SFT on gold CoT, arXiv 2404.19733), "
        "Fine-tune-CoT (vanilla fine-tune, arXiv 2212.10071) and PaD (arXiv 2305.13888)"
    )
    Config = SFTBaselineConfig

    def run(self, ctx: RunContext[SFTBaselineConfig]) -> dict[str, Any]:
        """Build, evaluate the base model, train, evaluate: top to bottom, every step a resumable phase."""
        cfg: SFTBaselineConfig = ctx.options
        fit, dev, heldout = method_splits(ctx, cfg)
        d1 = ctx.iter_dir(1)
        models = ModelSlot(ctx)
        try:
            ctx.phase("iter_001/build", lambda: self.build_train_set(ctx, fit, d1))
            eval_phases(ctx, 0, dev, heldout, lambda examples, out, split: self.evaluate(ctx, models, "base", examples, out, split))
            ctx.write_report()
            models.close()  # free the evaluator's memory before fine-tuning
            trained = ctx.phase("iter_001/train", lambda: self.train(ctx, d1), all_processes=True)
            model = trained["checkpoint"]
            eval_phases(ctx, 1, dev, heldout, lambda examples, out, split: self.evaluate(ctx, models, model, examples, out, split))
            ctx.phase("iter_001/summary", lambda: self.funnel(ctx))
            ctx.show_iterations()
            ctx.write_report()
        finally:
            models.close()
        return {"final_checkpoint": model}

    # -- steps -------------------------------------------------------------------------------

    def make_verifier(self, ctx: Any) -> Any:
        """The verifier that checks the targets and scores the model: the task's, or the program verifier."""
        from cotkit import make_verifier

        cfg: SFTBaselineConfig = ctx.options
        if cfg.target == "program":
            return make_verifier(cfg.verifier, **cfg.verifier_options)
        return make_verifier(None, ctx.task)

    def build_train_set(self, ctx: Any, fit: list[Example], d: Path) -> dict[str, Any]:
        """The dataset's targets that the verifier reads back as the gold answer: d/train.jsonl (rejected ones: d/rejected.jsonl)."""
        cfg: SFTBaselineConfig = ctx.options
        from cotkit import atomic_write_jsonl

        items, rejected, counts = build_examples(ctx.task, fit, cfg.target, context_of(cfg), self.make_verifier(ctx))
        atomic_write_jsonl(d / "rejected.jsonl", rejected)
        if not items:
            raise nothing_to_train(ctx.task, cfg.target, counts)
        atomic_write_jsonl(d / "train.jsonl", [ex.to_dict() for ex in items])
        return {"target": cfg.target, "prompt": context_of(cfg), **counts}

    def evaluate(self, ctx: Any, models: ModelSlot, model: str, examples: list[Example], output: Path, split: str) -> dict[str, Any]:
        """Greedy accuracy of `model` in the training context, with the verifier of the target (n and 95% interval)."""
        from cotkit import evaluate

        cfg: SFTBaselineConfig = ctx.options
        view = BaselinePrompts(ctx.task, context_of(cfg))
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens, stop=view.stop_sequences(), seed=0)
        verifier = self.make_verifier(ctx)
        try:
            summary = evaluate(view, examples, models.get(model), verifier, style=VIEW_STYLE, params=params, output=output, model_label=model)  # type: ignore[arg-type]
        finally:
            verifier.close()
        return {"split": split, "model": model, **summary, "style": context_of(cfg)}

    def train(self, ctx: Any, d: Path) -> dict[str, Any]:
        """Fine-tune the base model on d/train.jsonl for --epochs (at most --max-steps); d/checkpoint."""
        from cotkit import TrainExample

        cfg: SFTBaselineConfig = ctx.options
        items = [TrainExample.from_dict(r) for r in read_jsonl(d / "train.jsonl")]
        steps = capped_steps(items, cfg.epochs, cfg.sft, cfg.max_steps, model=ctx.base_model)
        _, row = fine_tune(ctx, "iter_001/train", f"train on {cfg.target}s", ctx.base_model, items, cfg.sft, steps, d)
        return row

    def funnel(self, ctx: Any) -> dict[str, Any]:
        """The run's funnel (questions, targets kept and left out), the base and final dev accuracy, phase times."""
        b = ctx.result("iter_001/build")
        t = ctx.result("iter_001/train")
        base = ctx.result("iter_000/eval_dev")
        e = ctx.result("iter_001/eval_dev")
        return {
            "questions": b["questions"],
            "train_examples": b["train_examples"],
            "no_target": b["no_target"],
            "rejected": b["rejected"],
            "steps": t["steps"],
            "base_dev_accuracy": base["accuracy"],
            "dev_accuracy": e["accuracy"],
            "dev_ci_low": e["ci_low"],
            "dev_ci_high": e["ci_high"],
            "dev_n": e["n"],
            **phase_seconds(ctx, "iter_001"),
        }


def build_examples(task: Any, examples: list[Example], target: str, context: str, verifier: Any) -> tuple[list[Any], list[dict[str, Any]], dict[str, int]]:
    """(training examples, rejected rows, counts) for `target` in `context`; each target checked by `verifier` (closed here)."""
    from cotkit import Sample, TrainExample, sample_row, verify_samples

    view = BaselinePrompts(task, context)
    stops = view.stop_sequences()
    candidates = []
    for ex in examples:
        completion = view.completion(ex, target)
        if completion is not None:
            candidates.append(Sample(example=ex, completion=completion, prompt=view.prompt(ex), stop=list(stops)))
    try:
        verify_samples(candidates, verifier)
    finally:
        verifier.close()
    items, rejected = [], []
    for s in candidates:
        if s.verdict is not None and s.verdict.correct:
            items.append(TrainExample(s.prompt, s.completion, 1.0, {"id": s.example.id}))
        else:
            rejected.append({"id": s.example.id, **sample_row(s)})
    counts = {"questions": len(examples), "train_examples": len(items), "no_target": len(examples) - len(candidates), "rejected": len(rejected)}
    return items, rejected, counts


def nothing_to_train(task: Any, target: str, counts: dict[str, int]) -> Exception:
    """The one-line error for a training set with no example: the task has no such target, or none passed its check."""
    if counts["rejected"] == 0:
        what = {"rationale": "rationales", "answer": "answers", "program": "gold programs"}[target]
        return ConfigError(
            f"task {task.full_name} has no {what} in its training split: --target {target} has nothing to train on"
            + ("; try --target answer" if target != "answer" else "")
        )
    return DataError(
        f"task {task.full_name}: none of the {counts['rejected']} {target} targets is read back as its gold answer by the verifier; "
        "see iter_001/rejected.jsonl"
    )
