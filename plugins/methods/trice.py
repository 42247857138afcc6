"""TRICE (Phan, Hoffman et al. 2023, arXiv 2312.02179): chain-of-thought tuning by MCMC-EM, online.

The arithmetic (memory, leave-one-out control variate, subsampling, the rejection-sampling
baseline) is `trice_estimator.py`; this module is the method around it: the notebook's prompt
templates over any task, the memory's initialization from the guide (hinted) template, and an
`OnlineObjective` that, at every optimizer step, proposes one rationale per minibatch question from
the model being trained (un-hinted template, T=1), verifies it with the task's verifier, updates the
memory and returns the weighted terms for the engine's weighted-SFT loss (normalised by sequences).

Prompts (the reference notebook, google-research/cascades `trice.ipynb`): rationale template
`Question: {q}\\nAnswer: Let's think step by step.\\n`, guide template
`Question: {q}\\nAnswer: The answer is {a}. Let's think step by step.\\n`; `{q}` is the task's
question text (options listed) and `{a}` its answer text (`(B)`). By default only a soft prompt is
trained (`sft.soft_prompt`), initialized from the embeddings of the task's 3-shot CoT
demonstrations rewritten into the template's layout (`Q:`/`A:` lines become `Question:`/`Answer:`),
one virtual token per token of that text, as the notebook initializes its prompt from a 3-shot
prompt. The untrained model with that soft prompt *is* the base model with the same text as a
hard prefix (up to tokenization at the seam), so the base model is evaluated and the memory is
initialized with that prefix; every trained model carries its soft prompt in its checkpoint and is
prompted with the template alone.

Phases: iter_000/eval_dev and eval_heldout (the base model, prefixed as above),
iter_001/memory_init (`--estimator trice`: one guide-template sample per question, verified;
memory_init.jsonl and memory_init_samples.jsonl), iter_001/train (the online objective;
train_log.jsonl holds one row per step, memory.jsonl the final memory), iter_001/eval_dev,
iter_001/eval_heldout, iter_001/summary.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotkit import (
    ConfigError,
    Example,
    Method,
    ModelSlot,
    OnlineObjective,
    Prompt,
    SamplingParams,
    SFTConfig,
    SplitLimits,
    TrainExample,
    eval_phases,
    fine_tune,
    method_splits,
    option,
    phase_seconds,
    read_jsonl,
    trim_after_answer,
)

from .soft_prompt_start import fewshot_text, token_count
from .trice_estimator import (
    MemoryEntry,
    Proposal,
    TriceMemory,
    exact_weights_across_processes,
    rejection_sampling_terms,
    step_terms,
    strict_format_correct,
)

if TYPE_CHECKING:
    from cotkit import RunContext

RATIONALE_TEMPLATE = "Question: {q}\nAnswer: Let's think step by step.\n"
GUIDE_TEMPLATE = "Question: {q}\nAnswer: The answer is {a}. Let's think step by step.\n"
#: The harness style the prompt view is sampled under (the view has one layout and ignores it).
VIEW_STYLE = "zeroshot"
ESTIMATORS = ("trice", "rejection")


@dataclass
class TriceSFTConfig(SFTConfig):
    """The shared fine-tuning step with the notebook's settings: a soft prompt, Adam at lr 1.0, cosine decay, sequence-normalised loss."""

    learning_rate: float = option(1.0, help="Peak learning rate (the notebook's Adam lr 1.0 for the soft prompt).")
    lr_scheduler: str = option(
        "cosine",
        help="Schedule after warm-up (cosine to --sft.min-lr-ratio of the peak: the notebook's decay).",
        choices=("constant", "linear", "cosine"),
    )
    min_lr_ratio: float = option(0.1, minimum=0.0, maximum=1.0, help="Where the decay ends, as a fraction of the peak rate (the notebook: 0.1).")
    warmup_steps: int = option(0, help="Optimizer steps of linear warm-up from 0 to the peak rate (the notebook: none).")
    batch_size: int = option(
        8, help="Sequences per micro-batch (a step's 2 x --batch-size terms, or --subsample, are split into micro-batches of this size)."
    )
    grad_accum: int = option(
        1, help="Not read by TRICE: a step takes --batch-size questions and back-propagates all its terms (the count of micro-batches follows)."
    )
    loss_normalization: str = option(
        "sequences",
        help="Divide the weighted summed NLL by sequences (TRICE's estimator is a mean over terms of sequence log-likelihoods).",
        choices=("tokens", "sequences"),
    )
    soft_prompt: bool = option(
        True, help="Train only a soft prompt (the notebook's prompt tuning); --no-sft.soft-prompt fine-tunes the model (add sft.lora for adapters)."
    )


@dataclass
class TriceConfig(SplitLimits):
    """Options of `cotkit train --method trice` (`cotkit show trice` lists them)."""

    estimator: str = option(
        "trice",
        help="trice: memory + proposals with the control variate; rejection: the paper's Figure 2 baseline "
        "(--proposals-per-question samples per question each step, train on the correct ones, no memory, no control variate).",
        choices=ESTIMATORS,
    )
    steps: int = option(100, help="Optimizer steps (the notebook: 100).")
    batch_size: int = option(64, help="Questions per optimizer step, on each process when data-parallel (the notebook: 64); a multiple of sft.batch_size.")
    subsample: int | None = option(
        64, help="Terms back-propagated per step, drawn in proportion to |weight| (the notebook's L = 64); none: every nonzero term with its exact weight."
    )
    control_variate: bool = option(True, help="Leave-one-out control variate (--no-control-variate: the paper's 'TRICE without control variate').")
    proposals_per_question: int = option(4, help="Samples per question and step of --estimator rejection (the paper's 4 particles).")
    init_retries: int = option(
        0, help="Resample the guide template this many more times for questions whose first memory sample is wrong (the notebook: 0, wrong memories are masked)."
    )
    strict_format: bool = option(
        False, help="Also require the notebook's format: the rationale ends with `the answer is {answer}.` (besides the task's verifier)."
    )
    trim: bool = option(True, help="Cut a correct rationale after its first statement of the answer before it enters memory.")
    temperature: float = option(1.0, help="Sampling temperature of memory initialization and proposals (the notebook: 1).")
    max_new_tokens: int = option(256, help="Longest rationale in tokens (sampling and evaluation).")
    eval_every: int = option(10, help="Greedy dev accuracy of the live model every N steps (0: only after training).")
    soft_prompt_init: str = option(
        "fewshot",
        help="fewshot: start the soft prompt from the task's 3-shot CoT demonstrations in the template's layout, one virtual token "
        "per token (the notebook), and evaluate the base model with that text as a prefix; sft: sft.soft_prompt_tokens and "
        "sft.soft_prompt_init_text as given (the base model is evaluated without a prefix).",
        choices=("fewshot", "sft"),
    )
    sft: TriceSFTConfig = field(default_factory=TriceSFTConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "proposals_per_question", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("init_retries", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.subsample is not None and self.subsample < 1:
            raise ConfigError(f"subsample must be at least 1 (or none for every term), got {self.subsample}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive (TRICE samples rationales), got {self.temperature}")
        if self.batch_size % self.sft.batch_size:
            raise ConfigError(f"batch_size={self.batch_size} must be a multiple of sft.batch_size={self.sft.batch_size}")
        if self.estimator == "trice" and self.batch_size < 2 and self.control_variate:
            raise ConfigError("the leave-one-out control variate needs batch_size of at least 2 (or --no-control-variate)")
        super().__post_init__()  # the split limits

    def engine_sft(self, init_text: str | None, init_tokens: int | None) -> SFTConfig:
        """The fine-tuning config the engine runs: --batch-size questions per step, and the soft prompt's start where fewshot chose it."""
        sft = replace(self.sft, grad_accum=self.batch_size // self.sft.batch_size)
        if init_text is not None and init_tokens is not None:
            sft = replace(sft, soft_prompt_init_text=init_text, soft_prompt_tokens=init_tokens)
        return sft


# ------------------------------------------------------------------------------------ prompts


class TricePrompts:
    """The task seen through the notebook's templates, for the shared `sample` / `evaluate` steps and for training.

    `prefix` is put before every prompt (the soft prompt's init text, for the untrained model).
    """

    def __init__(self, task: Any, prefix: str = ""):
        self._task = task
        self.prefix = prefix

    def prompt(self, example: Example, style: str = VIEW_STYLE, hint: bool | str = False) -> Prompt:
        """The rationale template, or the guide template (the gold answer given) when `hint`."""
        q = self._task.question_text(example)
        text = GUIDE_TEMPLATE.format(q=q, a=self._task.answer_text(example)) if hint else RATIONALE_TEMPLATE.format(q=q)
        return self.prefix + text

    def stop_sequences(self, style: str = VIEW_STYLE) -> list[str]:
        """A next `Question:` (the template's) or `Q:` (the task's layout) ends a rationale."""
        return ["\n\nQuestion:", "\nQuestion:", *self._task.stop_sequences("zeroshot")]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


def fewshot_demonstrations(task: Any, example: Example) -> str:
    """The task's few-shot CoT demonstrations (the few-shot prompt before its query) in the template's `Question:`/`Answer:` layout."""
    text = re.sub(r"(?m)^Q: ", "Question: ", fewshot_text(task, example))
    return re.sub(r"(?m)^A:", "Answer:", text)


# ------------------------------------------------------------------------------------ verdicts


def judge(samples: list[Any], task: Any, verifier: Any, cfg: TriceConfig) -> list[Proposal]:
    """Each sample as a Proposal: correct by the task's verifier (and the strict format), text trimmed after its answer when correct."""
    from cotkit import verify_samples

    verify_samples(samples, verifier)
    out = []
    for s in samples:
        correct = s.verdict is not None and s.verdict.correct
        if correct and cfg.strict_format:
            correct = strict_format_correct(s.completion, task.answer_text(s.example))
        text = s.completion
        if correct and cfg.trim:
            text = trim_after_answer(text, task.answer_sentence(s.example), task.answer_text(s.example)) or text
        out.append(Proposal(s.example.id, text, correct))
    return out


def sampled_tokens(samples: list[Any]) -> int:
    return sum(int(s.meta.get("n_tokens", 0)) for s in samples)


# ------------------------------------------------------------------------------------ objective


class TriceObjective(OnlineObjective):
    """Items are the training Examples; each step proposes from the live model, updates the memory and returns the weighted terms."""

    shown_stats = ("memory_coverage", "proposal_accuracy", "dev_accuracy")

    def __init__(self, view: TricePrompts, memory: TriceMemory, cfg: TriceConfig, verifier: Any, dev: list[Example], step_rng: Any):
        super().__init__(cfg.sft.loss_normalization, eval_every=cfg.eval_every)
        self.view, self.memory, self.cfg, self.verifier, self.dev = view, memory, cfg, verifier, dev
        self.step_rng = step_rng  # (step (1-based), process index) -> the subsampling RNG of that step on that process
        self.sampled_tokens = 0

    def sequences(self, step: Any) -> tuple[list[TrainExample], dict[str, float]]:
        cfg, live = self.cfg, step.live
        k = cfg.proposals_per_question if cfg.estimator == "rejection" else 1
        params = SamplingParams(n=k, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, stop=self.view.stop_sequences(), seed=step.seed)
        samples = live.sample(self.view, step.items, params, style=VIEW_STYLE)
        proposals = judge(samples, self.view, self.verifier, cfg)
        number = step.step + 1
        if cfg.estimator == "rejection":
            correct_ids = [p.question_id for p in proposals if p.correct]
            kept, questions = live.all_sum([len(correct_ids), len(set(correct_ids))])
            terms = rejection_sampling_terms(proposals, kept, questions)
            accepted = self.memory.update(proposals, number)
            local = {"nonzero_weights": len(terms), "sum_squared_weights": sum(t.weight**2 for t in terms)}
        else:
            covered = sum(p.correct or self.memory[p.question_id].correct for p in proposals)
            total_c, total_m = live.all_sum([sum(p.correct for p in proposals), covered])
            terms, local = step_terms(
                self.memory, proposals, number, cfg.subsample, self.step_rng(number, live.process_index), cfg.control_variate,
                total_correct=total_c, total_covered=total_m, processes=live.num_processes,
            )  # fmt: skip
            if cfg.subsample is None and live.num_processes > 1:
                terms = exact_weights_across_processes(terms, live.all_sum([len(terms)])[0], live.num_processes)
            accepted = int(local["accepted"])
        self.share_memory(live, proposals)
        questions = {p.question_id for p in proposals}
        batch = sum(self.memory[q].correct for q in questions)
        n_q, n_p, right, acc, nonzero, squares, n_terms, covered_q, tokens = live.all_sum(
            [len(questions), len(proposals), sum(p.correct for p in proposals), accepted, local["nonzero_weights"],
             local["sum_squared_weights"], len(terms), batch, sampled_tokens(samples)]
        )  # fmt: skip
        self.sampled_tokens += int(tokens)
        metrics = {
            "memory_coverage": self.memory.coverage(),
            "batch_coverage": covered_q / n_q if n_q else 0.0,  # the notebook's memory_acc (M/B)
            "proposal_accuracy": right / n_p if n_p else 0.0,
            "accepted": acc,
            "nonzero_weights": nonzero,
            "sum_squared_weights": squares,
            "terms": n_terms,
        }
        by_id = {e.id: e for e in step.items}
        chosen = [TrainExample(self.view.prompt(by_id[t.question_id]), t.text, t.weight, {"id": t.question_id, "kind": t.kind}) for t in terms]
        return chosen, {**metrics, "sampled_tokens": tokens, "sampled_tokens_total": float(self.sampled_tokens)}

    def share_memory(self, live: Any, proposals: list[Proposal]) -> None:
        """Every data-parallel process takes the others' updated entries for their minibatch questions, so all hold the whole memory."""
        if live.num_processes > 1:
            mine = sorted({p.question_id for p in proposals})
            self.memory.absorb(MemoryEntry(**row) for row in live.all_gather([vars(self.memory[q]) for q in mine]))

    def evaluate(self, live: Any) -> dict[str, float]:
        return live.accuracy(self.view, self.dev, self.verifier, style=VIEW_STYLE, max_new_tokens=self.cfg.max_new_tokens)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.to_rows(), "sampled_tokens": self.sampled_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = TriceMemory.from_rows(state["memory"], "saved objective state")
        self.sampled_tokens = int(state["sampled_tokens"])


# ------------------------------------------------------------------------------------ method


class Trice(Method):
    """TRICE: a memory of one correct rationale per question, online proposals and a control-variate gradient."""

    name = "trice"
    paper = "Phan, Hoffman et al. Training Chain-of-Thought via Latent-Variable Inference. NeurIPS 2023 (arXiv 2312.02179)"
    Config = TriceConfig

    def run(self, ctx: RunContext[TriceConfig]) -> dict[str, Any]:
        """Evaluate the base, initialize the memory, train online, evaluate: every step a resumable phase."""
        cfg: TriceConfig = ctx.options
        task = ctx.task
        fit, dev, heldout = method_splits(ctx, cfg)
        d1 = ctx.iter_dir(1)
        models = ModelSlot(ctx)
        base_view = TricePrompts(task, self.init_text(ctx, fit) or "")
        try:
            eval_phases(ctx, 0, dev, heldout, lambda examples, out, split: self.evaluate(ctx, models, "base", base_view, examples, out, split))
            ctx.write_report()
            if cfg.estimator == "trice":
                ctx.phase("iter_001/memory_init", lambda: self.init_memory(ctx, models, base_view, fit, d1))
            models.close()  # free the sampler's memory before training
            trained = ctx.phase("iter_001/train", lambda: self.train(ctx, fit, dev, d1), all_processes=True)
            model = trained["checkpoint"]
            view = TricePrompts(task)
            eval_phases(ctx, 1, dev, heldout, lambda examples, out, split: self.evaluate(ctx, models, model, view, examples, out, split))
            ctx.phase("iter_001/summary", lambda: self.funnel(ctx))
            ctx.show_iterations()
            ctx.write_report()
        finally:
            models.close()
        return {"final_checkpoint": model}

    # -- steps -------------------------------------------------------------------------------

    def init_text(self, ctx: Any, fit: list[Example]) -> str | None:
        """The soft prompt's init text where --soft-prompt-init fewshot sets it (also the base model's prefix), else None."""
        cfg: TriceConfig = ctx.options
        if not cfg.sft.soft_prompt or cfg.soft_prompt_init != "fewshot":
            return None
        return fewshot_demonstrations(ctx.task, fit[0])

    def evaluate(self, ctx: Any, models: ModelSlot, model: str, view: TricePrompts, examples: list[Example], output: Path, split: str) -> dict[str, Any]:
        """Greedy accuracy of `model` with the rationale template (n and 95% interval)."""
        from cotkit import evaluate, make_verifier

        cfg: TriceConfig = ctx.options
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens, stop=view.stop_sequences(), seed=0)
        verifier = make_verifier(None, ctx.task)
        try:
            summary = evaluate(view, examples, models.get(model), verifier, style=VIEW_STYLE, params=params, output=output, model_label=model)  # type: ignore[arg-type]
        finally:
            verifier.close()
        return {"split": split, "model": model, **summary, "prefixed": bool(view.prefix)}

    def init_memory(self, ctx: Any, models: ModelSlot, view: TricePrompts, fit: list[Example], d: Path) -> dict[str, Any]:
        """One guide-template sample per question (and --init-retries more for wrong ones): memory_init.jsonl."""
        from cotkit import atomic_write_jsonl, make_verifier, sample, sample_row

        cfg: TriceConfig = ctx.options
        backend = models.get("base")
        verifier = make_verifier(None, ctx.task)
        rows: list[dict[str, Any]] = []
        memory: TriceMemory | None = None
        todo, tokens = list(fit), 0
        try:
            for attempt in range(cfg.init_retries + 1):
                seed = ctx.seed_for(f"iter_001/memory_init/{attempt}")
                params = SamplingParams(n=1, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, stop=view.stop_sequences(), seed=seed)
                samples = sample(view, todo, backend, params, style=VIEW_STYLE, hint=True, progress=True)  # type: ignore[arg-type]
                proposals = judge(samples, view, verifier, cfg)
                tokens += sampled_tokens(samples)
                rows += [{"attempt": attempt, **sample_row(s, include_prompt=True)} for s in samples]
                if memory is None:
                    memory = TriceMemory.initialize(proposals)
                else:
                    memory.update(proposals, 0)
                uncovered = set(memory.uncovered())
                todo = [e for e in fit if e.id in uncovered]
                if not todo:
                    break
        finally:
            verifier.close()
        assert memory is not None
        atomic_write_jsonl(d / "memory_init_samples.jsonl", rows)
        atomic_write_jsonl(d / "memory_init.jsonl", memory.to_rows())
        return {"questions": len(fit), "covered": round(memory.coverage() * len(fit)), "memory_coverage": memory.coverage(), "sampled_tokens": tokens}

    def train(self, ctx: Any, fit: list[Example], dev: list[Example], d: Path) -> dict[str, Any]:
        """The online objective for --steps steps from the base model; d/checkpoint, d/train_log.jsonl, d/memory.jsonl."""
        from cotkit import atomic_write_jsonl, make_verifier

        cfg: TriceConfig = ctx.options
        if cfg.estimator == "trice":
            memory = TriceMemory.from_rows(read_jsonl(d / "memory_init.jsonl"), str(d / "memory_init.jsonl"))
        else:  # the baseline keeps no memory; an empty one counts the questions ever answered correctly
            memory = TriceMemory(MemoryEntry(e.id, "", False, 0) for e in fit)
        start_coverage = memory.coverage()
        init_text = self.init_text(ctx, fit)
        init_tokens = token_count(ctx.base_model, init_text) if init_text is not None else None
        verifier = make_verifier(None, ctx.task)
        objective = TriceObjective(TricePrompts(ctx.task), memory, cfg, verifier, dev, lambda step, process: random.Random(ctx.seed_for(f"trice/step_{step:05d}" + (f"/process_{process}" if process else ""))))
        try:
            sft = cfg.engine_sft(init_text, init_tokens)
            _, row = fine_tune(ctx, "iter_001/train", f"{cfg.estimator} steps", ctx.base_model, fit, sft, cfg.steps, d, objective=objective)
        finally:
            verifier.close()
        atomic_write_jsonl(d / "memory.jsonl", objective.memory.to_rows())
        steps = list(read_jsonl(d / "train_log.jsonl"))
        return {
            **row,
            "estimator": cfg.estimator,
            "questions": len(fit),
            "soft_prompt_tokens": sft.soft_prompt_tokens if sft.soft_prompt else 0,
            "memory_coverage_start": start_coverage,
            "memory_coverage_end": objective.memory.coverage(),
            "proposal_accuracy_first": steps[0]["proposal_accuracy"],
            "proposal_accuracy_last": steps[-1]["proposal_accuracy"],
            "sampled_tokens": objective.sampled_tokens,
        }

    def funnel(self, ctx: Any) -> dict[str, Any]:
        """The run's funnel: memory coverage start and end, proposal accuracy first and last step, sampled tokens, dev accuracy."""
        t = ctx.result("iter_001/train")
        init = ctx.result("iter_001/memory_init") if ctx.done("iter_001/memory_init") else {}
        base, e = ctx.result("iter_000/eval_dev"), ctx.result("iter_001/eval_dev")
        return {
            "questions": t["questions"],
            "memory_coverage_start": t["memory_coverage_start"],
            "memory_coverage_end": t["memory_coverage_end"],
            "proposal_accuracy_first": t["proposal_accuracy_first"],
            "proposal_accuracy_last": t["proposal_accuracy_last"],
            "steps": t["steps"],
            "sampled_tokens": init.get("sampled_tokens", 0) + t["sampled_tokens"],
            "base_dev_accuracy": base["accuracy"],
            "dev_accuracy": e["accuracy"],
            "dev_ci_low": e["ci_low"],
            "dev_ci_high": e["ci_high"],
            "dev_n": e["n"],
            **phase_seconds(ctx, "iter_001"),
        }
