"""PaD, program-aided distillation (Zhu, Qi, Zhang, Long, Lin, Zhou 2023, arXiv 2305.13888).

A teacher (any backend and model; the student itself by default) writes a Python program for
every training question with PAL's few-shot prompt (`tasks/pad/programs.yaml`); each program runs
in cotkit's sandbox through the `program` verifier and is kept only if its result equals the gold
answer. The student is fine-tuned on question -> program (`Q: ...\\n\\n# solution in Python:` ->
`def solution(): ... return result`) through the shared fine-tuning step.

Self-refinement: a failed program (an exception, no result, or a wrong result) of a question that
also has a verified program becomes a repair example: the question, the failed program and what
went wrong in its run -> a verified program for that question. Whose failures (`--refine-source`):
the paper's are the trained student's own (the reference's extract_code_feedback.py runs the
student's programs on the training questions): after a round's fine-tune the student writes
programs for the training questions, they run in the sandbox, and its failures become repair
examples on which it is fine-tuned further (mixed with the round's programs, so one checkpoint
still writes programs too). `teacher` mixes the teacher's failed programs into the round's training
set instead (one fine-tune); `both` does both. With `--repair-unsolved` the sampler is also asked
to repair its failures on questions it never solved; verified repairs join the programs.

Teacher generations (programs and repairs) go through cotkit's teacher cache (`--teacher-cache`,
default <run>/teacher_cache.jsonl): a resumed run, or another run given the same file, asks the
teacher nothing it has answered before.

At evaluation, the refinement pass (`--refine`) gives a program that fails or returns no result
back to the student in the repair format and runs the new program (this needs no gold answer; a
wrong but well-formed result cannot be noticed and is left alone).

Step-verified decoding (the paper's step-by-step verification): the final student also decodes
with step-level beam search, the search of `cotkit eval --search beam`, where a beam's score is the
student's summed token log-probability plus the log of every completed line's faithfulness (the
`faithfulness` step scorer: how well the line aligns with the question's sentences, over sentence
embeddings with `encoder=...`, else lexically), per generated token as Hugging Face ranks finished
beams. The reference extends beams token by token; here they grow by sampled lines. The `exec` step
scorer (the program so far runs and binds new names) stays selectable as another signal.

Rounds: round 1 samples from the teacher; with `--iterations N`, later rounds sample from the
latest student (its own format), verify and repair the same way, and add what they keep to the
teacher's data (PaD's iterative self-refinement). Each round fine-tunes from the base model
(`--init base`) on everything kept so far.

Evaluation: the base student (PAL few-shot prompt, as it has not learnt the student format) on
dev and held-out; after each round the student on dev; after the last round on held-out three
ways on the same examples: plain greedy, with the refinement pass, and with step verification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotkit import (
    CachedTeacher,
    ConfigError,
    Method,
    ModelSlot,
    SamplingParams,
    SFTConfig,
    SplitLimits,
    TeacherCache,
    capped_steps,
    fine_tune,
    method_splits,
    option,
    phase_seconds,
    prune_checkpoints,
    read_jsonl,
)

if TYPE_CHECKING:
    from cotkit import RunContext

from .pad_programs import (
    PROMPT_STYLES,
    STOPS,
    ProgramPrompts,
    clean_program,
    describe_failure,
    program_key,
    repair_prompt,
    student_prompt,
    teacher_repair_prompt,
    wrong_result_feedback,
)

TEACHER = "teacher"  # the model reference of the teacher (students are "base" or a run folder)


def beam_settings(cfg: PadConfig) -> Any:
    """The beam search of step-verified decoding; log-probabilities are summed, as the paper's beams score."""
    from cotkit import BeamSettings

    return BeamSettings(
        beam_width=cfg.beam_width, expand=cfg.beam_expand, max_new_tokens=cfg.max_new_tokens, aggregate=cfg.beam_aggregate,
        logprob_weight=cfg.beam_logprob_weight, logprob_reduce="sum", length_penalty=cfg.beam_length_penalty,
    )  # fmt: skip


@dataclass
class PadSFTConfig(SFTConfig):
    """The shared fine-tuning step with defaults for distilling programs into a small student."""

    learning_rate: float = option(2e-5, help="Peak learning rate (AdamW).")
    warmup_steps: int = option(10, help="Optimizer steps of linear warm-up from 0 to the peak rate.")
    batch_size: int = option(4, help="Sequences per micro-batch on each device.")
    grad_accum: int = option(4, help="Micro-batches accumulated per optimizer step.")


@dataclass
class PadConfig(SplitLimits):
    """Options of `cotkit train --method pad` (`cotkit show pad` lists them)."""

    teacher_model: str | None = option(None, help="Teacher model (hub id, folder, .gguf, alias); default: the student model itself.")
    teacher_backend: str | None = option(None, help="Backend that runs the teacher (default: the run's --backend and its options).")
    teacher_backend_options: dict[str, Any] = option(
        default_factory=dict, help="Teacher backend options KEY=VALUE (repeatable), e.g. batch_size=8."
    )
    teacher_prompt: str = option("pal", help="Teacher prompt: PAL's few-shot programs as text, or as chat turns.", choices=("pal", "pal-chat"))
    shots: int = option(8, help="PAL exemplars in few-shot prompts (teacher and base model), at most 8.")
    samples_per_question: int = option(4, help="Programs the sampler writes per training question.")
    temperature: float = option(0.7, help="Sampling temperature of the programs (0: greedy; then use 1 sample per question).")
    top_p: float = option(1.0, help="Nucleus sampling for programs.")
    max_new_tokens: int = option(320, help="Longest program in tokens (sampling, repairs and evaluation).")
    dedup: bool = option(True, help="Keep one copy of programs with the same syntax tree for a question.")
    max_per_question: int | None = option(None, help="Keep at most this many correct programs per question.")
    drop_truncated: bool = option(True, help="Discard correct programs that hit --max-new-tokens before ending.")
    strip_docstring: bool = option(True, help="Drop the docstring PAL repeats the question in from student targets.")
    self_refine: bool = option(True, help="Train on repair examples (question, failed program, error or wrong result -> a verified program); --refine-source says whose failures.")
    refine_source: str = option(
        "student", help="Whose failed programs become repair examples: the trained student's own (the paper's), the teacher's (mixed into the round's training set), or both.",
        choices=("student", "teacher", "both"),
    )  # fmt: skip
    repair_wrong_results: bool = option(True, help="Also make repair examples of programs that ran but returned a wrong answer (else errors only).")
    repairs_per_question: int = option(2, help="At most this many repair examples per question and round.")
    repair_unsolved: bool = option(False, help="Ask the sampler to repair its failed programs of questions it never solved; keep the verified repairs.")
    teacher_cache: str | None = option(
        None, help="JSONL cache of teacher generations (default <run>/teacher_cache.jsonl); give several runs one file to share it."
    )
    iterations: int = option(1, help="Rounds: 1 is PaD (teacher data); later rounds add verified programs and repairs sampled from the latest student.")
    base_prompt: str = option(
        "pal", help="Prompt of the base student before training (it has not learnt the student format).", choices=tuple(PROMPT_STYLES)
    )
    refine: bool = option(True, help="Also evaluate with the refinement pass: a failing program goes back to the student with its error.")
    refine_rounds: int = option(1, help="Refinement passes at most per question.")
    step_verify: bool = option(
        True, help="Also evaluate with step-verified decoding (beam search on log-probability + log faithfulness per line)."
    )
    beam_width: int = option(4, help="Beams kept by step-verified decoding.")
    beam_expand: int = option(4, help="Next statements sampled from each live beam in step-verified decoding.")
    beam_temperature: float = option(0.7, help="Sampling temperature of the candidate statements in step-verified decoding.")
    step_scorer: str = option(
        "faithfulness",
        help="Step scorer of step-verified decoding (faithfulness: each line's similarity with the question, as the paper; "
        "exec: the program so far runs and binds new names).",
    )
    step_scorer_options: dict[str, Any] = option(
        default_factory=dict,
        help="Options of the step scorer KEY=VALUE, e.g. encoder=facebook/roscoe-512-roberta-base (faithfulness; "
        "default: lexical, no model) or cpu_seconds=1 (exec).",
    )
    beam_aggregate: str = option(
        "logsum", help="Step scores to a beam's score: logsum (the paper: sum of their logs), min, prod or last."
    )
    beam_logprob_weight: float = option(1.0, help="Weight of the student's summed token log-probability in a beam's score (0: step scores only).")
    beam_length_penalty: float = option(
        1.0, help="A beam's score is divided by its tokens to this power (1: per token, as Hugging Face ranks finished beams; 0: not)."
    )
    init: str = option("base", help="Fine-tune each round from the base model or continue from the last one.", choices=("base", "last"))
    epochs: float = option(3.0, help="Passes over the training set per round (ignored when --steps is set).")
    steps: int | None = option(None, help="Optimizer steps per round (default: from --epochs).")
    keep_checkpoints: str = option("all", help="Keep every round's checkpoint, or only the last.", choices=("all", "last"))
    verifier_options: dict[str, Any] = option(
        default_factory=dict, help="Options of the program verifier KEY=VALUE, e.g. cpu_seconds=2 memory_mb=512 workers=2."
    )
    sft: PadSFTConfig = field(default_factory=PadSFTConfig)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {self.iterations}")
        if self.samples_per_question < 1:
            raise ConfigError(f"samples_per_question must be at least 1, got {self.samples_per_question}")
        if self.samples_per_question > 1 and self.temperature <= 0:
            raise ConfigError(
                f"samples_per_question={self.samples_per_question} at temperature 0 gives identical programs; set --temperature (e.g. 0.7)"
            )
        if not 1 <= self.shots <= 8:
            raise ConfigError(f"shots must be between 1 and 8 (PAL has 8 exemplars), got {self.shots}")
        beam_settings(self)  # a bad aggregate or weight fails now, not after training
        if self.beam_temperature <= 0:
            raise ConfigError(f"beam_temperature must be positive (at 0 every candidate statement is the same), got {self.beam_temperature}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        for name in ("max_new_tokens", "refine_rounds", "beam_width", "beam_expand"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.repairs_per_question < 0:
            raise ConfigError(f"repairs_per_question must be 0 or more, got {self.repairs_per_question}")
        for name in ("max_per_question", "steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be at least 1 (or none), got {v}")
        super().__post_init__()  # the split limits


class Models(ModelSlot):
    """The one backend a run holds at a time (teacher or a student), loaded on first use, closed before training."""

    def __init__(self, ctx: Any):
        super().__init__(ctx, load=lambda ref: self._teacher() if ref == TEACHER else ctx.backend(ctx.model_path(ref)))

    def _teacher(self) -> Any:
        from cotkit import load_backend

        cfg: PadConfig = self.ctx.options
        run = self.ctx.run_config
        model = cfg.teacher_model or self.ctx.base_model
        if cfg.teacher_backend is None:
            return load_backend(run.backend, model=model, **{**run.backend_options, **cfg.teacher_backend_options})
        return load_backend(cfg.teacher_backend, model=model, **cfg.teacher_backend_options)


@dataclass
class PadRun:
    """What the phases of one PaD run share: its context, options, splits, prompts, program verifier and models."""

    ctx: Any
    cfg: PadConfig
    fit: list[Any]
    dev: list[Any]
    heldout: list[Any]
    prompts: ProgramPrompts
    verifier: Any  # the `program` verifier: runs each program in the sandbox
    models: Models
    by_id: dict[str, Any] = field(init=False)  # the fit examples by id

    def __post_init__(self) -> None:
        self.by_id = {e.id: e for e in self.fit}

    def params(self, style: str, n: int = 1, temperature: float = 0.0, seed: int = 0) -> SamplingParams:
        """Sampling parameters of programs in `style` (greedy unless a temperature is given)."""
        cfg = self.cfg
        return SamplingParams(
            n=n, temperature=temperature, top_p=cfg.top_p if temperature > 0 else 1.0, max_new_tokens=cfg.max_new_tokens,
            stop=self.prompts.stop_sequences(style), seed=seed,
        )


class Pad(Method):
    """PaD: distil a teacher's sandbox-verified programs into a student; self-refinement; step-verified decoding."""

    name = "pad"
    paper = (
        "Zhu, Qi, Zhang, Long, Lin, Zhou. PaD: Program-aided Distillation Can Teach Small Models Reasoning Better "
        "than Chain-of-thought Fine-tuning. NAACL 2024 (arXiv 2305.13888)"
    )
    Config = PadConfig

    def run(self, ctx: RunContext[PadConfig]) -> dict[str, Any]:
        """The base student, then each round (sample, repair, build, train, evaluate): every step a resumable phase."""
        from cotkit import make_verifier

        cfg: PadConfig = ctx.options
        task = ctx.task
        fit, dev, heldout = method_splits(ctx, cfg)
        prompts, verifier = ProgramPrompts(task, cfg.shots), make_verifier("program", **cfg.verifier_options)
        run = PadRun(ctx, cfg, fit, dev, heldout, prompts, verifier, Models(ctx))
        student = "base"
        try:
            self.evaluate_base(run)
            for it in range(1, cfg.iterations + 1):
                student = self.round(run, it, student)
        finally:
            run.models.close()
            run.verifier.close()
        return {"final_checkpoint": student}

    def round(self, run: PadRun, it: int, current: str) -> str:
        """Round `it`: sample programs (and repairs), build the training set, fine-tune, evaluate; the new student."""
        ctx, cfg = run.ctx, run.cfg
        d, name = ctx.iter_dir(it), f"iter_{it:03d}"
        sampler = TEACHER if it == 1 or current == "base" else current  # a base student has not learnt its format
        sampled = ctx.phase(f"{name}/sample", lambda: self.sample_programs(run, sampler, d / "samples.jsonl", f"{name}/sample"))
        if cfg.repair_unsolved:
            ctx.phase(f"{name}/repair", lambda: self.repair_programs(run, sampler, d, set(sampled["unsolved_ids"]), f"{name}/repair"))
        run.models.close()  # free the sampler's memory before fine-tuning
        built = ctx.phase(f"{name}/build", lambda: self.build_train_set(ctx, it, run.by_id))
        if built["train_examples"] == 0:
            ctx.log(f"[yellow]{name}: no verified program to train on; the student is unchanged this round[/yellow]")
            trained = ctx.phase(f"{name}/train", lambda: {"checkpoint": current, "steps": 0, "skipped": True, "examples": 0})
        else:
            init = "base" if cfg.init == "base" else current
            trained = ctx.phase(f"{name}/train", lambda: self.train(ctx, init, d, it), all_processes=True)
        student = trained["checkpoint"]
        if cfg.self_refine and cfg.refine_source != "teacher" and not trained.get("skipped"):
            student = self.refine_student(run, it, student)
        style = PROMPT_STYLES["student"] if student != "base" else PROMPT_STYLES[cfg.base_prompt]
        ctx.phase(f"{name}/eval_dev", lambda: self.evaluate(run, student, run.dev, d / "eval_dev.jsonl", "dev", style))
        if run.heldout and it == cfg.iterations:
            self.evaluate_final(run, d, name, student, style)
        ctx.phase(f"{name}/summary", lambda: self.funnel(ctx, it))
        if cfg.keep_checkpoints == "last":
            prune_checkpoints(ctx, it, keep=student)
        ctx.show_iterations()
        ctx.write_report()
        return student

    # -- evaluation --------------------------------------------------------------------------

    def evaluate_base(self, run: PadRun) -> None:
        """The base student on dev and held-out, with the base prompt (it has not learnt the student format)."""
        ctx, style = run.ctx, PROMPT_STYLES[run.cfg.base_prompt]
        ctx.phase("iter_000/eval_dev", lambda: self.evaluate(run, "base", run.dev, ctx.iter_dir(0) / "eval_dev.jsonl", "dev", style))
        if run.heldout:
            split = ctx.task.heldout_split
            ctx.phase("iter_000/eval_heldout", lambda: self.evaluate(run, "base", run.heldout, ctx.iter_dir(0) / "eval_heldout.jsonl", split, style))
        ctx.write_report()

    def evaluate_final(self, run: PadRun, d: Path, name: str, student: str, style: str) -> None:
        """The last student on held-out three ways on the same examples: greedy, with the refinement pass, step-verified."""
        ctx, heldout, split = run.ctx, run.heldout, run.ctx.task.heldout_split
        ctx.phase(f"{name}/eval_heldout", lambda: self.evaluate(run, student, heldout, d / "eval_heldout.jsonl", split, style))
        if run.cfg.refine:
            ctx.phase(
                f"{name}/eval_heldout_refine",
                lambda: self.evaluate_refined(run, student, heldout, d / "eval_heldout.jsonl", d / "eval_heldout_refine.jsonl", split),
            )
        if run.cfg.step_verify:
            phase = f"{name}/eval_heldout_stepverify"
            ctx.phase(phase, lambda: self.evaluate_step_verified(run, student, heldout, d / "eval_heldout_stepverify.jsonl", split, style, phase))

    def evaluate(self, run: PadRun, model: str, examples: list[Any], output: Path, split: str, style: str) -> dict[str, Any]:
        """Greedy accuracy of a student on `examples`: its program is run in the sandbox and its result compared."""
        from cotkit import evaluate

        summary = evaluate(
            run.prompts, examples, run.models.get(model), run.verifier, style=style, params=run.params(style), output=output, model_label=model
        )
        return {"split": split, "model": model, "prompt": _prompt_name(style), "decoding": "greedy", **summary}

    def evaluate_refined(self, run: PadRun, model: str, examples: list[Any], plain: Path, output: Path, split: str) -> dict[str, Any]:
        """The plain evaluation's programs with the refinement pass: failures go back to the student with their error.

        Only what a run shows without the gold answer triggers a repair (an exception, a timeout,
        no result, a result that is not a number, no program at all), so the number is a fair
        inference-time accuracy on the same examples as the plain one.
        """
        from cotkit import Sample, atomic_write_jsonl, sample_row, summarize, wilson_interval

        cfg = run.cfg
        rows = read_jsonl(plain)
        if len(rows) != len(examples):
            raise ConfigError(f"{plain}: {len(rows)} rows for {len(examples)} examples; the plain evaluation is incomplete")
        samples = [Sample(example=ex, completion=row["completion"], stop=list(STOPS)) for ex, row in zip(examples, rows)]
        checks = run.verifier.check(samples)
        before = [c.verdict.correct for c in checks]
        completions = [s.completion for s in samples]
        rounds = [0] * len(samples)
        history: list[list[dict[str, Any]]] = [[] for _ in samples]
        params = run.params(PROMPT_STYLES["student"])
        for _ in range(cfg.refine_rounds):
            todo = []
            for i, (ex, check) in enumerate(zip(examples, checks)):
                shown, feedback = describe_failure(check, ex.answer_kind, cfg.strip_docstring, completions[i])
                if feedback is not None:
                    todo.append((i, repair_prompt(ex.question, shown, feedback), feedback))
            if not todo:
                break
            grid = run.models.get(model).generate([p for _, p, _ in todo], params, progress=True)
            fixed = [Sample(example=examples[i], completion=g[0].text, prompt=p, stop=list(STOPS)) for (i, p, _), g in zip(todo, grid)]
            for (i, prompt, feedback), check, sample in zip(todo, run.verifier.check(fixed), fixed):
                history[i].append({"feedback": feedback, "prompt": prompt, "completion": sample.completion, "verdict": check.verdict.status.value})
                checks[i], completions[i] = check, sample.completion
                rounds[i] += 1
        out_rows = []
        for ex, check, completion, r, h in zip(examples, checks, completions, rounds, history):
            s = Sample(example=ex, completion=completion, verdict=check.verdict)
            row = sample_row(s)
            row.update({"id": ex.id, "refine_rounds": r, "refinements": h})
            out_rows.append(row)
        atomic_write_jsonl(output, out_rows)
        summary = summarize([c.verdict for c in checks])
        low, high = wilson_interval(summary["correct"], summary["n"])  # over all rows, errors included
        refined = sum(1 for r in rounds if r)
        return {
            "split": split, "model": model, "prompt": "student", "decoding": f"greedy + refinement ({cfg.refine_rounds} round(s))",
            **summary, "accuracy": round(summary["accuracy"], 6), "unparseable": round(summary["unparseable"], 6),
            "ci_low": round(low, 6), "ci_high": round(high, 6), "examples": len(examples),
            "refined": refined,
            "fixed": sum(1 for b, c, r in zip(before, checks, rounds) if r and c.verdict.correct and not b),
            "correct_before_refinement": sum(before),
        }

    def evaluate_step_verified(
        self, run: PadRun, model: str, examples: list[Any], output: Path, split: str, style: str, phase: str
    ) -> dict[str, Any]:
        """Accuracy with step-verified decoding: step-level beam search over program statements, a
        beam scored by the student's summed log-probability plus the aggregate of its step scores
        (by default the paper's: the logs of every line's faithfulness), per token.

        The search is cotkit's shared one (`cotkit eval --search beam`), wrapped around the
        student's backend; the best final beam is the answer, run and compared like any program.
        """
        from cotkit import BeamBackend, atomic_write_jsonl, evaluate, make_step_scorer, prompt_key

        cfg, ctx = run.cfg, run.ctx
        scorer = make_step_scorer(cfg.step_scorer, **cfg.step_scorer_options)
        by_prompt = {prompt_key(run.prompts.prompt(ex, style)): ex for ex in examples}
        settings = beam_settings(cfg)
        search = BeamBackend(run.models.get(model), scorer, settings, example_of=lambda p: by_prompt.get(prompt_key(p)))
        params = SamplingParams(
            n=1, temperature=cfg.beam_temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
            stop=run.prompts.stop_sequences(style), seed=ctx.seed_for(phase),
        )  # fmt: skip
        try:
            summary = evaluate(run.prompts, examples, search, run.verifier, style=style, params=params, output=output, model_label=model)
        finally:
            scorer.close()  # not search.close(): that would close the student's backend, which `models` owns
        out_rows = read_jsonl(output)
        for row, ex in zip(out_rows, examples):
            beams = search.traces.get(prompt_key(run.prompts.prompt(ex, style)), [])
            row["search"] = beams[0].to_dict(settings) if beams else None
        atomic_write_jsonl(output, out_rows)
        decoding = f"step-verified beam search (width {cfg.beam_width}, expand {cfg.beam_expand}, scorer {cfg.step_scorer})"
        beam = {
            "step_scorer": cfg.step_scorer, "beam_aggregate": settings.aggregate, "beam_logprob_weight": settings.logprob_weight,
            "beam_logprob_reduce": settings.logprob_reduce, "beam_length_penalty": settings.length_penalty,
        }  # fmt: skip
        return {"split": split, "model": model, "prompt": _prompt_name(style), "decoding": decoding, **beam, **summary}

    # -- self-refinement from the student's own programs ---------------------------------------

    def refine_student(self, run: PadRun, it: int, student: str) -> str:
        """The round's student writes programs for the training questions; its failures become repair
        examples (target: a verified program of the question) and it is fine-tuned on them; the refined student."""
        ctx, d, name = run.ctx, run.ctx.iter_dir(it), f"iter_{it:03d}"
        ctx.phase(f"{name}/student_programs", lambda: self.sample_programs(run, student, d / "student_samples.jsonl", f"{name}/student_programs"))
        run.models.close()  # free the student's memory before fine-tuning
        built = ctx.phase(f"{name}/refine_build", lambda: self.build_refine_set(ctx, it, run.by_id))
        if built["student_repair_examples"] == 0:
            ctx.log(f"[yellow]{name}: the student failed no question that has a verified program; no self-refinement this round[/yellow]")
            return student
        refined = ctx.phase(f"{name}/refine_train", lambda: self.train_refiner(ctx, student, d, it), all_processes=True)
        return refined["checkpoint"]

    def build_refine_set(self, ctx: Any, it: int, by_id: dict[str, Any]) -> dict[str, Any]:
        """Repair examples from the student's failed programs, with the round's programs: iter_NNN/refine.jsonl."""
        from cotkit import TrainExample, atomic_write_jsonl

        d = ctx.iter_dir(it)
        programs = [TrainExample.from_dict(r) for r in read_jsonl(d / "train.jsonl")]
        programs = [ex for ex in programs if ex.meta.get("kind") == "program"]
        verified: dict[str, list[str]] = {}
        for ex in programs:
            verified.setdefault(ex.meta["id"], []).append(ex.completion)
        repairs = repair_items(failures_of(read_jsonl(d / "student_samples.jsonl"), ctx.options), verified, by_id, ctx.options)
        atomic_write_jsonl(d / "refine.jsonl", [ex.to_dict() for ex in [*repairs, *programs]])
        return {"student_repair_examples": len(repairs), "refine_examples": len(repairs) + len(programs)}

    def train_refiner(self, ctx: Any, student: str, d: Path, it: int) -> dict[str, Any]:
        """Fine-tune the round's student on d/refine.jsonl; the checkpoint goes to d/refine/checkpoint."""
        from cotkit import TrainExample

        cfg: PadConfig = ctx.options
        items = [TrainExample.from_dict(r) for r in read_jsonl(d / "refine.jsonl")]
        steps = cfg.steps or capped_steps(items, cfg.epochs, cfg.sft, model=ctx.model_path(student))
        phase = f"iter_{it:03d}/refine_train"
        _, row = fine_tune(ctx, phase, f"self-refinement round {it}", ctx.model_path(student), items, cfg.sft, steps, d / "refine")
        return {**row, "checkpoint": f"{d.name}/refine/checkpoint"}  # fine_tune names it relative to d, not to the run

    # -- data --------------------------------------------------------------------------------

    def teacher(self, run: PadRun) -> CachedTeacher:
        """The teacher behind the run's teacher cache: loaded (through the run's model slot) only for prompts the cache lacks."""
        ctx, cfg = run.ctx, run.cfg
        cache = TeacherCache(Path(cfg.teacher_cache) if cfg.teacher_cache else ctx.path / "teacher_cache.jsonl")
        # As Fine-tune-CoT's: the backend and model name the teacher; backend options (batch size,
        # a count file) do not change what it writes, so they stay out of the key.
        identity = {"backend": cfg.teacher_backend or ctx.run_config.backend, "model": cfg.teacher_model or ctx.run_config.model}
        # Not closed here: the model slot owns the backend and frees it before training.
        return CachedTeacher(lambda: run.models.get(TEACHER), identity, cache)

    def sampler_backend(self, run: PadRun, sampler: str) -> Any:
        """The teacher behind its cache, or a student's backend."""
        return self.teacher(run) if sampler == TEACHER else run.models.get(sampler)

    def sample_programs(self, run: PadRun, sampler: str, output: Path, phase: str) -> dict[str, Any]:
        """Sample programs for the fit questions (teacher: PAL few-shot; a student: its own format); run and save every one."""
        from cotkit import sample

        ctx, cfg, examples = run.ctx, run.cfg, run.fit
        style = PROMPT_STYLES[cfg.teacher_prompt] if sampler == TEACHER else PROMPT_STYLES["student"]
        params = run.params(style, n=cfg.samples_per_question, temperature=cfg.temperature, seed=ctx.seed_for(phase))
        backend = self.sampler_backend(run, sampler)
        samples = sample(run.prompts, examples, backend, params, style=style, progress=True)
        checks = run.verifier.check(samples)
        rows = [program_row(s, c, sampler, cfg) for s, c in zip(samples, checks)]
        from cotkit import atomic_write_jsonl

        atomic_write_jsonl(output, rows)
        solved = {r["id"] for r in rows if r["correct"]}
        outcomes: dict[str, int] = {}
        for r in rows:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        return {
            "sampler": self._sampler_name(ctx, sampler),
            "prompt": _prompt_name(style),
            "questions": len(examples),
            "generated": len(rows),
            "programs": sum(1 for r in rows if r["program"] is not None),
            "ran": outcomes.get("ok", 0),
            "correct": sum(1 for r in rows if r["correct"]),
            "questions_correct": len(solved),
            "truncated": sum(1 for r in rows if r["truncated"]),
            "outcomes": outcomes,
            "unsolved_ids": [e.id for e in examples if e.id not in solved],
            **_teacher_counts(backend),
        }

    def repair_programs(self, run: PadRun, sampler: str, d: Path, unsolved: set[str], phase: str) -> dict[str, Any]:
        """Ask the sampler to repair its failed programs of unsolved questions; run and keep every repair."""
        from cotkit import Sample, atomic_write_jsonl

        ctx, cfg, by_id = run.ctx, run.cfg, run.by_id
        todo: list[tuple[Any, str, str]] = []
        seen: dict[str, set[str]] = {}
        for row in read_jsonl(d / "samples.jsonl"):
            if row["id"] not in unsolved or row.get("repair_feedback") is None:
                continue
            keys = seen.setdefault(row["id"], set())
            key = program_key(row["repair_program"]) if row["program"] is not None else row["repair_program"]
            if key in keys or len(keys) >= max(1, cfg.repairs_per_question):
                continue
            keys.add(key)
            todo.append((by_id[row["id"]], row["repair_program"], row["repair_feedback"]))
        if sampler == TEACHER:
            style = PROMPT_STYLES[cfg.teacher_prompt]
            prompts = [teacher_repair_prompt(ex.question, prog, fb, cfg.teacher_prompt) for ex, prog, fb in todo]
        else:
            style = PROMPT_STYLES["student"]
            prompts = [repair_prompt(ex.question, prog, fb) for ex, prog, fb in todo]
        params = run.params(style, n=1, temperature=cfg.temperature, seed=ctx.seed_for(phase))
        backend = self.sampler_backend(run, sampler)
        grid = backend.generate(prompts, params, progress=True) if prompts else []
        samples = [Sample(example=ex, completion=g[0].text, stop=list(STOPS)) for (ex, _, _), g in zip(todo, grid)]
        for s, g in zip(samples, grid):
            s.meta = {"finish_reason": g[0].finish_reason, "n_tokens": g[0].n_tokens}
        checks = run.verifier.check(samples)
        rows = []
        for (ex, prog, fb), s, c in zip(todo, samples, checks):
            row = program_row(s, c, sampler, cfg)
            row.update({"wrong_program": prog, "feedback": fb})
            rows.append(row)
        atomic_write_jsonl(d / "repaired.jsonl", rows)
        return {
            "attempts": len(rows),
            "repaired": sum(1 for r in rows if r["correct"]),
            "questions_repaired": len({r["id"] for r in rows if r["correct"]}),
            **_teacher_counts(backend),
        }

    def build_train_set(self, ctx: Any, it: int, by_id: dict[str, Any]) -> dict[str, Any]:
        """Verified programs and repair examples of rounds 1..it as the training set: iter_NNN/train.jsonl."""
        from cotkit import atomic_write_jsonl

        rounds = []
        for i in range(1, it + 1):
            d = ctx.path / f"iter_{i:03d}"
            repaired = d / "repaired.jsonl"
            rounds.append((read_jsonl(d / "samples.jsonl"), read_jsonl(repaired) if repaired.exists() else []))
        items, counts = training_items(rounds, by_id, ctx.options)
        atomic_write_jsonl(ctx.iter_dir(it) / "train.jsonl", [ex.to_dict() for ex in items])
        tokens = _count_tokens(ctx, items)
        return {**counts, "train_tokens": tokens["tokens"], "train_completion_tokens": tokens["completion_tokens"]}

    def train(self, ctx: Any, init: str, d: Path, it: int) -> dict[str, Any]:
        """Fine-tune `init` on d/train.jsonl; the checkpoint goes to d/checkpoint."""
        from cotkit import TrainExample

        cfg: PadConfig = ctx.options
        items = [TrainExample.from_dict(r) for r in read_jsonl(d / "train.jsonl")]
        steps = cfg.steps or capped_steps(items, cfg.epochs, cfg.sft, model=ctx.model_path(init))
        _, row = fine_tune(ctx, f"iter_{it:03d}/train", f"train round {it}", ctx.model_path(init), items, cfg.sft, steps, d)
        return row

    # -- reporting ---------------------------------------------------------------------------

    def funnel(self, ctx: Any, it: int) -> dict[str, Any]:
        """The round's funnel (generated -> ran -> correct -> kept), accuracies and phase times as one metrics row."""
        name = f"iter_{it:03d}"
        s = ctx.result(f"{name}/sample")
        r = ctx.result(f"{name}/repair") if ctx.done(f"{name}/repair") else {}
        b = ctx.result(f"{name}/build")
        t = ctx.result(f"{name}/train")
        e = ctx.result(f"{name}/eval_dev")
        sp = ctx.result(f"{name}/student_programs") if ctx.done(f"{name}/student_programs") else {}
        rb = ctx.result(f"{name}/refine_build") if ctx.done(f"{name}/refine_build") else {}
        rt = ctx.result(f"{name}/refine_train") if ctx.done(f"{name}/refine_train") else {}
        row: dict[str, Any] = {
            "questions": s["questions"],
            "samples": s["generated"],
            "generated": s["generated"],
            "programs": s["programs"],
            "ran": s["ran"],
            "correct": s["correct"],
            "questions_correct": s["questions_correct"],
            "repair_attempts": r.get("attempts", 0),
            "repaired": r.get("repaired", 0),
            "kept": b["kept"],
            "repair_examples": b["repair_examples"],
            "train_examples": b["train_examples"],
            "train_tokens": b["train_tokens"],
            "steps": t.get("steps", 0),
            "teacher_requests": s.get("teacher_requests", 0) + r.get("teacher_requests", 0),
            "cache_hits": s.get("cache_hits", 0) + r.get("cache_hits", 0),
            "student_programs": sp.get("generated", 0),
            "student_correct": sp.get("correct", 0),
            "student_repair_examples": rb.get("student_repair_examples", 0),
            "refine_steps": rt.get("steps", 0),
            "dev_accuracy": e["accuracy"],
            "dev_ci_low": e["ci_low"],
            "dev_ci_high": e["ci_high"],
            "dev_n": e["n"],
        }
        for phase, key in (("eval_heldout", "heldout"), ("eval_heldout_refine", "heldout_refine"), ("eval_heldout_stepverify", "heldout_stepverify")):
            if ctx.done(f"{name}/{phase}"):
                ev = ctx.result(f"{name}/{phase}")
                row.update({f"{key}_accuracy": ev["accuracy"], f"{key}_ci_low": ev["ci_low"], f"{key}_ci_high": ev["ci_high"], f"{key}_n": ev["n"]})
        if ctx.done("iter_000/eval_heldout"):
            ev = ctx.result("iter_000/eval_heldout")
            row.update({"base_heldout_accuracy": ev["accuracy"], "base_heldout_n": ev["n"]})
        row.update(phase_seconds(ctx, name))
        return row

    @staticmethod
    def _sampler_name(ctx: Any, sampler: str) -> str:
        cfg: PadConfig = ctx.options
        if sampler == TEACHER:
            return f"teacher {cfg.teacher_model or ctx.run_config.model} ({cfg.teacher_backend or ctx.run_config.backend})"
        return f"student {sampler}"


# ------------------------------------------------------------------------------ the data


def program_row(sample: Any, check: Any, sampler: str, cfg: PadConfig) -> dict[str, Any]:
    """A sampled program as a JSONL row: verdict, the program as run, its outcome, and a failure's repair view.

    `repair_program` / `repair_feedback` are what a repair example shows: the failed program
    (docstring dropped if asked) and what went wrong in its run, or, for a program that ran and
    answered wrongly, its wrong result; `failure` says which ("error" or "wrong_result"). All are
    None for a correct program and for a sandbox failure, which says nothing about the program.
    """
    from cotkit import sample_row

    sample.verdict = check.verdict
    row = sample_row(sample)
    shown, feedback, failure = None, None, None
    if not check.verdict.correct:
        shown, feedback = describe_failure(check, sample.example.answer_kind, cfg.strip_docstring, sample.completion)
        failure = "error" if feedback is not None else None
        if feedback is None:
            feedback = wrong_result_feedback(check)
            failure = "wrong_result" if feedback is not None else None
    row.update(
        {
            "id": sample.example.id,
            "sampler": sampler,
            "program": check.program,
            "outcome": check.result.outcome.value if check.result is not None else "no_program",
            "error": check.result.error if check.result is not None else None,
            "truncated": (sample.meta or {}).get("finish_reason") == "length",
            "failure": failure,
            "repair_program": shown if feedback is not None else None,
            "repair_feedback": feedback,
        }
    )
    return row


def training_items(
    rounds: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]], by_id: dict[str, Any], cfg: PadConfig
) -> tuple[list[Any], dict[str, int]]:
    """The training set from the rows of each round so far: (sampled rows, repaired rows) per round.

    A correct program is kept once per question (same syntax tree = duplicate) as question ->
    program. With `self_refine` and a refine source that includes the teacher, each failed teacher
    program of a question that has a kept program becomes a repair example (question, failed
    program, feedback -> a kept program, or the verified repair of exactly that failure), at most
    `repairs_per_question` distinct ones per question. (The student's own failures are turned into
    repair examples after its fine-tune: `Pad.refine_student`.)
    """
    from cotkit import TrainExample

    programs: dict[str, list[tuple[str, str]]] = {}  # id -> [(key, target program)]
    failures: dict[str, list[tuple[str, str, str | None]]] = {}  # id -> [(shown, feedback, its fix)]
    # A round-2+ sample comes from the last student: its failures are the student's own.
    source_ok = {"teacher": lambda r: r["sampler"] == TEACHER, "student": lambda r: r["sampler"] != TEACHER, "both": lambda r: True}[cfg.refine_source]
    counts = {"kept_sampled": 0, "kept_repaired": 0, "duplicates": 0, "dropped_truncated": 0, "over_cap": 0}

    def keep(qid: str, program: str, source: str) -> str | None:
        have = programs.setdefault(qid, [])
        key = program_key(program) if cfg.dedup else str(len(have))
        for k, target in have:
            if k == key:
                counts["duplicates"] += 1
                return target
        if cfg.max_per_question is not None and len(have) >= cfg.max_per_question:
            counts["over_cap"] += 1
            return None
        target = clean_program(program, cfg.strip_docstring)
        have.append((key, target))
        counts[f"kept_{source}"] += 1
        return target

    for sampled, repaired in rounds:
        for row in sampled:
            if row["correct"]:
                if cfg.drop_truncated and row["truncated"]:
                    counts["dropped_truncated"] += 1
                else:
                    keep(row["id"], row["program"], "sampled")
        for qid, failed in failures_of([r for r in sampled if source_ok(r)], cfg).items():
            failures.setdefault(qid, []).extend(failed)
        for row in repaired:
            if row["correct"] and not (cfg.drop_truncated and row["truncated"]):
                fix = keep(row["id"], row["program"], "repaired")
                if source_ok(row):
                    failures.setdefault(row["id"], []).insert(0, (row["wrong_program"], row["feedback"], fix))
    items: list[Any] = []
    for qid, have in programs.items():
        question = by_id[qid].question
        items.extend(TrainExample(student_prompt(question), target, 1.0, {"id": qid, "kind": "program"}) for _, target in have)
    verified = {qid: [target for _, target in have] for qid, have in programs.items()}
    repair_examples = repair_items(failures, verified, by_id, cfg) if cfg.self_refine else []
    items.extend(repair_examples)
    repairs = len(repair_examples)
    return items, {
        "kept": len(items) - repairs,
        "train_questions": sum(1 for v in programs.values() if v),
        "repair_examples": repairs,
        "train_examples": len(items),
        **counts,
    }


def failures_of(rows: list[dict[str, Any]], cfg: PadConfig) -> dict[str, list[tuple[str, str, str | None]]]:
    """The failed programs of sampled rows that can teach a repair, by question: (shown program, feedback, no fix yet)."""
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for row in rows:
        if not row["correct"] and row.get("repair_feedback") is not None and (cfg.repair_wrong_results or row["failure"] != "wrong_result"):
            out.setdefault(row["id"], []).append((row["repair_program"], row["repair_feedback"], None))
    return out


def repair_items(
    failures: dict[str, list[tuple[str, str, str | None]]], verified: dict[str, list[str]], by_id: dict[str, Any], cfg: PadConfig
) -> list[Any]:
    """Repair examples: (question, failed program, feedback) -> its verified fix, or a verified program of the question.

    At most `repairs_per_question` distinct (program, feedback) pairs per question; a question
    without a verified program teaches no repair.
    """
    from cotkit import TrainExample

    items = []
    for qid, failed in failures.items():
        have = verified.get(qid) or []
        if not have:
            continue
        question = by_id[qid].question
        used: set[tuple[str, str]] = set()
        for shown, feedback, fix in failed:
            if len(used) >= cfg.repairs_per_question:
                break
            key = (program_key(shown), feedback)
            if key in used:
                continue
            target = fix or have[len(used) % len(have)]
            used.add(key)
            items.append(TrainExample(repair_prompt(question, shown, feedback), target, 1.0, {"id": qid, "kind": "repair"}))
    return items


def _teacher_counts(backend: Any) -> dict[str, int]:
    """Generations asked of the teacher and served from its cache (none for a student)."""
    if not isinstance(backend, CachedTeacher):
        return {}
    return {"teacher_requests": backend.requests, "cache_hits": backend.hits}


def _prompt_name(style: str) -> str:
    return {v: k for k, v in PROMPT_STYLES.items()}[style]


def _count_tokens(ctx: Any, items: list[Any]) -> dict[str, int]:
    """Prompt + completion tokens of a training set, with the student's tokenizer."""
    if not items:
        return {"tokens": 0, "completion_tokens": 0}
    from transformers import AutoTokenizer

    from cotkit import completion_ids, render_prompt_ids

    tok = AutoTokenizer.from_pretrained(ctx.base_model)
    prompt_tokens = sum(len(render_prompt_ids(tok, ex.prompt)) for ex in items)
    completion_tokens = sum(len(completion_ids(tok, ex.completion)) for ex in items)
    return {"tokens": prompt_tokens + completion_tokens, "completion_tokens": completion_tokens}
