"""Fine-tune-CoT: large language models are reasoning teachers (Ho, Schmid, Yun 2022, arXiv 2212.10071).

A teacher answers every training question with zero-shot chain of thought in two stages (stage 1
`Q: {q}\\nA: Let's think step by step.` gives a rationale; stage 2 appends it and
`\\nTherefore, the answer is` to get the answer, up to 128 tokens as in the reference code), D times
per question at temperature 0.7 with *diverse reasoning* (one greedy sample when D = 1). Samples
whose answer the task's verifier marks correct become the student's training set, in the paper's
format (prompt `{q} ###`, completion ` {rationale} --> {answer} END`; for an encoder-decoder
student `{q}` -> `{rationale} --> {answer}`) or a chat format; the student is fine-tuned with the
shared step and evaluated with the same verifier, its answer read after the `-->` cue. As in the
paper, each evaluation also reports how often the answer appears anywhere among the completion's
candidates (contains answer) and how often the completion has the cue at all (correct format).

The teacher is any backend and model, or an OpenAI-compatible endpoint (`--teacher-endpoint URL`,
key from the environment variable named by `--teacher-api-key-env`, never written anywhere).
Teacher generations are cached (cotkit's `TeacherCache`, JSONL appended as they arrive): a resumed
run, or another run given the same `--teacher-cache`, re-filters and re-trains without asking the
teacher again.

Phases: iter_000/eval_dev and eval_heldout (the base student with the same two-stage zero-shot CoT,
greedy), iter_001/teacher, filter, train, eval_dev, eval_heldout, summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotkit import (
    AnswerKind,
    CachedTeacher,
    ConfigError,
    CotkitError,
    Example,
    Generation,
    Method,
    Prompt,
    Sample,
    SamplingParams,
    SFTConfig,
    SplitLimits,
    TeacherCache,
    capped_steps,
    check_key_env_name,
    eval_phases,
    fine_tune,
    is_encoder_decoder,
    method_splits,
    option,
    phase_seconds,
    read_jsonl,
    refuse_secrets_in_options,
)

if TYPE_CHECKING:
    from cotkit import RunContext

STAGE2_TRIGGER = "\nTherefore, the answer is"
SEPARATOR = " ###"
ARROW = " --> "
END = " END"
#: The paper's student format for an encoder-decoder student: `{q}` -> `{rationale} --> {answer}`.
SEQ2SEQ = "paper-seq2seq"


@dataclass
class FinetuneCoTSFT(SFTConfig):
    """The shared fine-tuning step with the paper's student settings (lr 3e-4, batch 8, no warm-up, AdamW weight decay 0.01)."""

    learning_rate: float = option(3e-4, help="Peak learning rate (AdamW); the paper's 3e-4 for its open students.")
    warmup_steps: int = option(0, help="Optimizer steps of linear warm-up from 0 to the peak rate.")
    batch_size: int = option(1, help="Sequences per micro-batch on each device.")
    grad_accum: int = option(8, help="Micro-batches accumulated per optimizer step (8 x 1: the paper's batch 8).")
    weight_decay: float = option(0.01, help="AdamW weight decay (the reference's torch AdamW default, 0.01).")


@dataclass
class FinetuneCoTConfig(SplitLimits):
    """Options of `cotkit train --method finetune-cot` (`cotkit show finetune-cot` lists them)."""

    teacher_model: str | None = option(
        None, help="Teacher: hub id, folder, .gguf or alias (default: the student, --model); with --teacher-endpoint, the served model name."
    )
    teacher_backend: str = option("hf", help="Backend that runs the teacher (hf, vllm, openai, ...).")
    teacher_backend_options: dict[str, Any] = option(default_factory=dict, help="Teacher backend options KEY=VALUE (repeatable).")
    teacher_endpoint: str | None = option(
        None, help="OpenAI-compatible base URL of a teacher server, e.g. http://127.0.0.1:8000/v1 (uses the openai backend)."
    )
    teacher_api_key_env: str = option(
        "OPENAI_API_KEY", help="NAME of the environment variable holding the endpoint's API key (the key is never stored)."
    )
    teacher_style: str = option(
        "zeroshot", help="zeroshot: the paper's two-stage zero-shot CoT; chat: one chat turn asking for the answer sentence.",
        choices=("zeroshot", "chat"),
    )  # fmt: skip
    answer_trigger: str = option(
        "plain", help="Stage 2's trigger: plain (`Therefore, the answer is`, the paper's) or typed (Zero-shot-CoT's `Therefore, the answer (yes or no) is` forms).",
        choices=("plain", "typed"),
    )  # fmt: skip
    samples_per_question: int = option(1, help="D: teacher rationales per question (1: one greedy rationale; >1: diverse reasoning).")
    temperature: float = option(0.7, help="Teacher sampling temperature when D > 1 (paper: 0.7).")
    top_p: float = option(1.0, help="Teacher nucleus sampling when D > 1.")
    max_new_tokens: int = option(128, help="Longest teacher rationale in tokens (stage 1).")
    answer_max_new_tokens: int = option(128, help="Longest teacher answer in tokens (stage 2; the reference's 128).")
    teacher_cache: str | None = option(
        None, help="JSONL cache of teacher generations (default <run>/teacher_cache.jsonl); give several runs one file to share it."
    )
    teacher_chunk: int = option(64, help="Questions per teacher request batch; the cache is saved after each.")
    dedup: bool = option(True, help="Keep one copy of identical rationales for the same question.")
    drop_truncated: bool = option(False, help="Discard rationales that hit --max-new-tokens (the paper keeps them).")
    student_format: str = option(
        "paper", help="paper: `{q} ###` -> ` {rationale} --> {answer} END` (encoder-decoder student: `{q}` -> `{rationale} --> {answer}`); chat: the chat template, answer sentence at the end.",
        choices=("paper", "chat"),
    )  # fmt: skip
    student_max_new_tokens: int = option(192, help="Longest student generation in tokens at evaluation.")
    epochs: float = option(20.0, help="Student training epochs over the kept samples (paper: 20).")
    max_steps: int | None = option(None, help="Cap on optimizer steps (default: what --epochs needs).")
    baseline: bool = option(True, help="Score the base student with two-stage zero-shot CoT first (iteration 0).")
    sft: FinetuneCoTSFT = field(default_factory=FinetuneCoTSFT)

    def __post_init__(self) -> None:
        if self.samples_per_question < 1:
            raise ConfigError(f"samples_per_question must be at least 1, got {self.samples_per_question}")
        if self.samples_per_question > 1 and self.temperature <= 0:
            raise ConfigError("diverse reasoning (samples_per_question > 1) needs --temperature > 0 (paper: 0.7)")
        for name in ("max_new_tokens", "answer_max_new_tokens", "student_max_new_tokens", "teacher_chunk"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1 (or none), got {self.max_steps}")
        super().__post_init__()  # the split limits
        if self.teacher_endpoint and not self.teacher_model:
            raise ConfigError("--teacher-endpoint needs --teacher-model: the model name the server serves")
        # Before config.yaml is written: a key pasted where its variable's name goes would be saved there.
        check_key_env_name(self.teacher_api_key_env, "--teacher-api-key-env")
        refuse_secrets_in_options(self.teacher_backend_options, "--teacher-backend-options")


# ------------------------------------------------------------------------------------ formats


def student_layout(fmt: str, model: str) -> str:
    """The student format as laid out for `model`: `paper` becomes `paper-seq2seq` for an encoder-decoder."""
    return SEQ2SEQ if fmt == "paper" and is_encoder_decoder(model) else fmt


def student_prompt(task: Any, example: Example, layout: str) -> Prompt:
    """The student's input: `{q} ###` (paper), `{q}` (paper-seq2seq) or one user turn (chat)."""
    q = task.question_text(example)
    if layout == "chat":
        return [{"role": "user", "content": q}]
    return q if layout == SEQ2SEQ else f"{q}{SEPARATOR}"


def student_completion(rationale: str, answer: str, layout: str) -> str:
    """The student's target: ` {rationale} --> {answer} END` (paper), `{rationale} --> {answer}`
    (paper-seq2seq: the end of sequence ends it) or the rationale and an answer sentence (chat).

    The rationale keeps its inner whitespace (line breaks included) and loses only its ends, as
    the reference's formatter does.
    """
    rationale = rationale.strip()
    if layout == "chat":
        return f"{rationale}{STAGE2_TRIGGER} {answer}."
    if layout == SEQ2SEQ:
        return f"{rationale}{ARROW}{answer}"
    return f" {rationale}{ARROW}{answer}{END}"


class StudentTask:
    """The task seen through the student's prompt format, for the harness's `sample` and `evaluate`."""

    def __init__(self, task: Any, layout: str):
        self._task = task
        self._layout = layout

    def prompt(self, example: Example, style: str = "zeroshot", hint: bool = False) -> Prompt:
        return student_prompt(self._task, example, self._layout)

    def stop_sequences(self, style: str = "zeroshot") -> list[str]:
        return [END.strip()] if self._layout == "paper" else []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


# ------------------------------------------------------------------- the paper's three metrics

_NUMERAL = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def answer_cue(layout: str) -> str:
    """What the answer follows in a completion of `layout` (the reference's prediction prefix)."""
    return STAGE2_TRIGGER.strip() if layout in ("chat", "zeroshot") else ARROW.strip()


def format_checks(example: Example, completion: str, cue: str, stop: list[str]) -> dict[str, bool]:
    """The paper's `contains_answer` and `correct_format` of one completion (its verdict gives `correct`).

    As the reference's evaluator reads them: the answer region is the text after the first cue, or
    the whole completion when the cue is missing; `contains_answer` says the gold answer is among
    the region's answer candidates, `correct_format` that the cue is there at all.
    """
    from cotkit import cut_completion

    text = cut_completion(completion, stop)
    at = text.find(cue)
    region = text if at < 0 else text[at + len(cue) :]
    return {"contains_answer": contains_answer(example, region), "correct_format": at >= 0}


def contains_answer(example: Example, text: str) -> bool:
    """Whether any answer candidate in `text` equals the gold answer: a number, an option label, a word or phrase."""
    from cotkit import normalize_math, normalize_text, numbers_equal, parse_gold_number, parse_number

    kind = AnswerKind(example.answer_kind)
    if kind is AnswerKind.NUMBER:
        gold = parse_gold_number(example.answer)
        found = (parse_number(m.group()) for m in _NUMERAL.finditer(text))
        return gold is not None and any(n is not None and numbers_equal(n, gold) for n in found)
    if kind is AnswerKind.CHOICE and example.choices:
        label = re.escape(gold_label(example))
        return re.search(rf"(?<![A-Za-z0-9]){label}(?![A-Za-z0-9])", text) is not None
    if kind is AnswerKind.MATH:
        gold = normalize_math(example.answer)
        return bool(gold) and gold in normalize_math(text)
    gold = normalize_text(example.answer)
    return bool(gold) and re.search(rf"(?<!\w){re.escape(gold)}(?!\w)", normalize_text(text)) is not None


def gold_label(example: Example) -> str:
    """The gold option's label (`(B)` -> `B`; a gold written as the option's text -> its label)."""
    from cotkit import normalize_label, normalize_text

    label = normalize_label(example.answer)
    choices = example.choices or []
    if label in {normalize_label(c.label) for c in choices}:
        return label
    for c in choices:
        if normalize_text(c.text) == normalize_text(example.answer):
            return normalize_label(c.label)
    return label


def format_summary(checks: list[dict[str, bool]]) -> dict[str, Any]:
    """Counts, rates over all n rows and 95% intervals of `contains_answer` and `correct_format`."""
    from cotkit import wilson_interval

    n, out, rates = len(checks), {}, {}
    for key in ("contains_answer", "correct_format"):
        count = sum(1 for c in checks if c[key])
        low, high = wilson_interval(count, n)
        out.update({key: round(count / n, 6) if n else 0.0, f"{key}_count": count, f"{key}_ci_low": round(low, 6), f"{key}_ci_high": round(high, 6)})
        rates[key.replace("_", " ")] = {"count": count, "n": n}
    out["rates"] = rates  # report.md shows each as a column beside the accuracy
    return out


# ------------------------------------------------------------------------------ zero-shot CoT


def stage2_trigger(example: Example, kind: str = "plain") -> str:
    """Stage 2's answer trigger: `\nTherefore, the answer is` (the paper's), or with Zero-shot-CoT's answer format.

    Kojima et al.'s typed triggers name the expected form: `(arabic numerals)` for numbers,
    `among A through E` for options, `(yes or no)` for a two- to four-word label set. On
    SmolLM2-135M's sports_understanding rationales the typed trigger gave a readable answer 9 times
    in 16 against 2 in 16 for the plain one.
    """
    if kind == "plain":
        return STAGE2_TRIGGER
    if example.answer_kind is AnswerKind.NUMBER:
        return "\nTherefore, the answer (arabic numerals) is"
    if example.answer_kind is AnswerKind.CHOICE and example.choices:
        return f"\nTherefore, among {example.choices[0].label} through {example.choices[-1].label}, the answer is"
    if example.answer_set and 2 <= len(example.answer_set) <= 4:
        return f"\nTherefore, the answer ({' or '.join(example.answer_set)}) is"
    return STAGE2_TRIGGER


def zero_shot_cot(
    teacher: CachedTeacher,
    task: Any,
    examples: list[Example],
    *,
    style: str,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    answer_max_new_tokens: int,
    seed: int,
    chunk: int,
    answer_trigger: str = "plain",
    progress: Any = None,
) -> list[Sample]:
    """Rationale then answer for each example, n per example (two stages; one chat turn for style chat).

    Each Sample's completion is the text the verdict is read from: `Therefore, the answer is X`
    (zeroshot) or the whole chat answer; the rationale is in `meta["rationale"]`.
    """
    from cotkit import example_seed, merge_stops

    stops = merge_stops(task.stop_sequences(style))
    stage1 = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, stop=stops or None, seed=seed)
    stage2 = SamplingParams(n=1, temperature=0.0, max_new_tokens=answer_max_new_tokens, stop=stops or None, seed=seed)
    samples: list[Sample] = []
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        prompts = [task.prompt(ex, style=style) for ex in part]
        seeds = [example_seed(seed, ex.id) for ex in part]
        rationales = teacher.generate(prompts, stage1, progress=False, seeds=seeds)
        if style == "chat":
            for ex, prompt, gens in zip(part, prompts, rationales):
                for j, g in enumerate(gens):
                    samples.append(_sample(ex, prompt, g.text, g, None, j, stops, temperature))
        else:
            flat = [(ex, p, j, g) for ex, p, gens in zip(part, prompts, rationales) for j, g in enumerate(gens)]
            prompts2 = [p + g.text.rstrip() + stage2_trigger(ex, answer_trigger) for ex, p, _, g in flat]
            answers = teacher.generate(prompts2, stage2, progress=False, seeds=[0] * len(prompts2))
            for (ex, p, j, g), ans in zip(flat, answers):
                # The verdict is read from the stage-2 text after the plain cue, whatever the trigger
                # (Zero-shot-CoT's answer cleansing looks only at this part).
                completion = STAGE2_TRIGGER.strip() + ans[0].text
                samples.append(_sample(ex, p, completion, g, ans[0], j, stops, temperature))
        if progress is not None:
            progress(len(part))
    return samples


def _sample(ex: Example, prompt: Prompt, completion: str, g: Generation, ans: Generation | None, j: int, stops: list[str], t: float) -> Sample:
    meta = {"sample_index": j, "rationale": g.text, "finish_reason": g.finish_reason, "n_tokens": g.n_tokens, "temperature": t}
    if ans is not None:
        meta["answer_finish_reason"] = ans.finish_reason
    return Sample(example=ex, completion=completion, prompt=prompt, stop=list(stops) if ans is None else [], meta=meta)


# ------------------------------------------------------------------------------------ method


class FinetuneCoT(Method):
    """Fine-tune-CoT: distil a teacher's zero-shot chains of thought (with diverse reasoning) into a student."""

    name = "finetune-cot"
    paper = "Ho, Schmid, Yun. Large Language Models Are Reasoning Teachers. ACL 2023 (arXiv 2212.10071)"
    Config = FinetuneCoTConfig

    def run(self, ctx: RunContext[FinetuneCoTConfig]) -> dict[str, Any]:
        """Baseline, teacher, filter, train, evaluate: top to bottom, every step a resumable phase."""
        cfg: FinetuneCoTConfig = ctx.options
        fit, dev, heldout = method_splits(ctx, cfg, need_dev=False)
        d1 = ctx.iter_dir(1)
        if cfg.baseline:
            eval_phases(ctx, 0, dev, heldout, lambda examples, out, split: self.baseline(ctx, examples, out, split))
            ctx.write_report()
        ctx.phase("iter_001/teacher", lambda: self.teach(ctx, fit, d1 / "teacher_samples.jsonl"))
        built = ctx.phase("iter_001/filter", lambda: self.build_train_set(ctx, d1))
        if built["train_examples"] == 0:
            raise CotkitError(
                f"the teacher got no training question right ({d1 / 'teacher_samples.jsonl'}): nothing to distil; "
                "try a stronger --teacher-model, more --samples-per-question or more --train-limit"
            )
        trained = ctx.phase("iter_001/train", lambda: self.train(ctx, d1), all_processes=True)
        student = trained["checkpoint"]
        eval_phases(ctx, 1, dev, heldout, lambda examples, out, split: self.evaluate(ctx, student, examples, out, split))
        ctx.phase("iter_001/summary", lambda: self.funnel(ctx))
        ctx.show_iterations()
        return {"final_checkpoint": student}

    # -- teacher -----------------------------------------------------------------------------

    def teacher_identity(self, ctx: Any) -> dict[str, Any]:
        """What names the teacher in cache keys (never the API key)."""
        cfg: FinetuneCoTConfig = ctx.options
        if cfg.teacher_endpoint:
            return {"backend": "openai", "endpoint": cfg.teacher_endpoint.rstrip("/"), "model": cfg.teacher_model, "style": cfg.teacher_style}
        return {"backend": cfg.teacher_backend, "model": cfg.teacher_model or ctx.run_config.model, "style": cfg.teacher_style}

    def open_teacher(self, ctx: Any) -> Any:
        """The teacher's sampling backend."""
        from cotkit import load_backend

        cfg: FinetuneCoTConfig = ctx.options
        if cfg.teacher_endpoint:
            opts = {**cfg.teacher_backend_options, "base_url": cfg.teacher_endpoint, "api_key_env": cfg.teacher_api_key_env}
            return load_backend("openai", model=cfg.teacher_model, **opts)
        return load_backend(cfg.teacher_backend, model=cfg.teacher_model or ctx.run_config.model, **cfg.teacher_backend_options)

    def teach(self, ctx: Any, fit: list[Example], output: Path) -> dict[str, Any]:
        """The teacher's rationales and answers for every training question, verified; teacher_samples.jsonl."""
        cfg: FinetuneCoTConfig = ctx.options
        cache = TeacherCache(Path(cfg.teacher_cache) if cfg.teacher_cache else ctx.path / "teacher_cache.jsonl")
        teacher = CachedTeacher(lambda: self.open_teacher(ctx), self.teacher_identity(ctx), cache)
        diverse = cfg.samples_per_question > 1
        try:
            with ctx.progress("teacher", len(fit)) as update:
                samples = zero_shot_cot(
                    teacher, ctx.task, fit, style=cfg.teacher_style, n=cfg.samples_per_question,
                    temperature=cfg.temperature if diverse else 0.0, top_p=cfg.top_p if diverse else 1.0,
                    max_new_tokens=cfg.max_new_tokens, answer_max_new_tokens=cfg.answer_max_new_tokens,
                    seed=ctx.seed_for("iter_001/teacher"), chunk=cfg.teacher_chunk, answer_trigger=cfg.answer_trigger,
                    progress=update,
                )  # fmt: skip
        finally:
            teacher.close()
        summary = _verify_and_write(ctx.task, samples, output)
        return {
            **summary,
            "teacher_requests": teacher.requests,
            "cache_hits": teacher.hits,
            "truncated": sum(1 for s in samples if s.meta.get("finish_reason") == "length"),
        }

    # -- training set ------------------------------------------------------------------------

    def build_train_set(self, ctx: Any, d: Path) -> dict[str, Any]:
        """Correct teacher samples in the student format: d/train.jsonl."""
        from cotkit import TrainExample, atomic_write_jsonl

        cfg: FinetuneCoTConfig = ctx.options
        task = ctx.task
        layout = student_layout(cfg.student_format, ctx.base_model)
        by_id = {e.id: e for e in task.examples("fit", limit=cfg.train_limit)}
        kept: list[TrainExample] = []
        seen: dict[str, set[str]] = {}
        counts = {"duplicates": 0, "dropped_truncated": 0, "empty_rationales": 0}
        for row in read_jsonl(d / "teacher_samples.jsonl"):
            if not row.get("correct"):
                continue
            meta = row.get("meta") or {}
            if cfg.drop_truncated and meta.get("finish_reason") == "length":
                counts["dropped_truncated"] += 1
                continue
            rationale = row["teacher_rationale"]
            if not rationale.strip():
                counts["empty_rationales"] += 1
                continue
            example = by_id[row["id"]]
            got = seen.setdefault(example.id, set())
            norm = " ".join(rationale.split())
            if cfg.dedup and norm in got:
                counts["duplicates"] += 1
                continue
            got.add(norm)
            completion = student_completion(rationale, task.answer_text(example), layout)
            kept.append(TrainExample(student_prompt(task, example, layout), completion, 1.0, {"id": example.id}))
        atomic_write_jsonl(d / "train.jsonl", [ex.to_dict() for ex in kept])
        return {
            "train_examples": len(kept), "train_questions": sum(1 for v in seen.values() if v), "student_format": layout,
            **counts, **self._count_tokens(ctx, kept),
        }  # fmt: skip

    def _count_tokens(self, ctx: Any, kept: list[Any]) -> dict[str, int]:
        if not kept:
            return {"train_tokens": 0}
        from transformers import AutoTokenizer

        from cotkit import completion_ids, render_prompt_ids

        tok = AutoTokenizer.from_pretrained(ctx.base_model)
        return {"train_tokens": sum(len(render_prompt_ids(tok, ex.prompt)) + len(completion_ids(tok, ex.completion)) for ex in kept)}

    # -- student -----------------------------------------------------------------------------

    def train(self, ctx: Any, d: Path) -> dict[str, Any]:
        """Fine-tune the base student on d/train.jsonl; d/checkpoint."""
        from cotkit import TrainExample

        cfg: FinetuneCoTConfig = ctx.options
        items = [TrainExample.from_dict(r) for r in read_jsonl(d / "train.jsonl")]
        steps = capped_steps(items, cfg.epochs, cfg.sft, cfg.max_steps, model=ctx.base_model)
        _, row = fine_tune(ctx, "iter_001/train", "train student", ctx.base_model, items, cfg.sft, steps, d)
        return row

    def evaluate(self, ctx: Any, model: str, examples: list[Example], output: Path, split: str) -> dict[str, Any]:
        """Greedy accuracy of the student in its own format, read with the task's verifier, with the
        paper's contains-answer and correct-format rates beside it (and on every row)."""
        from cotkit import atomic_write_jsonl, evaluate, make_verifier

        cfg: FinetuneCoTConfig = ctx.options
        layout = student_layout(cfg.student_format, ctx.base_model)
        student = StudentTask(ctx.task, layout)
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.student_max_new_tokens, stop=student.stop_sequences(), seed=0)
        verifier = make_verifier(None, ctx.task)
        backend = ctx.backend(ctx.model_path(model))
        try:
            summary = evaluate(student, examples, backend, verifier, style="zeroshot", params=params, output=output)  # type: ignore[arg-type]
        finally:
            backend.close()
            verifier.close()
        rows = read_jsonl(output)
        checks = [format_checks(ex, row["completion"], answer_cue(layout), row.get("stop") or []) for ex, row in zip(examples, rows)]
        atomic_write_jsonl(output, [{**row, **c} for row, c in zip(rows, checks)])
        return {"split": split, "model": model, **summary, **format_summary(checks), "style": f"student-{layout}"}

    def baseline(self, ctx: Any, examples: list[Example], output: Path, split: str) -> dict[str, Any]:
        """The base student's accuracy with the teacher's procedure (two-stage zero-shot CoT, greedy)."""
        from cotkit import wilson_interval

        cfg: FinetuneCoTConfig = ctx.options
        runner = CachedTeacher(lambda: ctx.backend(ctx.base_model), {"student": "base"}, None)
        try:
            samples = zero_shot_cot(
                runner, ctx.task, examples, style=cfg.teacher_style, n=1, temperature=0.0, top_p=1.0,
                max_new_tokens=cfg.max_new_tokens, answer_max_new_tokens=cfg.answer_max_new_tokens, seed=0,
                chunk=max(len(examples), 1), answer_trigger=cfg.answer_trigger,
            )  # fmt: skip
        finally:
            runner.close()
        summary = _verify_and_write(ctx.task, samples, output)
        low, high = wilson_interval(summary["correct"], summary["n"])  # over all rows, errors included
        return {"split": split, "model": "base", **summary, "ci_low": round(low, 6), "ci_high": round(high, 6), "style": f"{cfg.teacher_style}-cot"}

    def funnel(self, ctx: Any) -> dict[str, Any]:
        """The run's funnel and phase times, as one metrics row."""
        t = ctx.result("iter_001/teacher")
        b = ctx.result("iter_001/filter")
        tr = ctx.result("iter_001/train")
        e = ctx.result("iter_001/eval_dev")
        times = phase_seconds(ctx, "iter_001")
        row: dict[str, Any] = {
            "questions": t["questions"],
            "samples": t["n"],
            "correct": t["correct"],
            "questions_correct": t["questions_correct"],
            "unparseable": t["unparseable_count"],
            "teacher_requests": t["teacher_requests"],
            "cache_hits": t["cache_hits"],
            "train_examples": b["train_examples"],
            "train_tokens": b["train_tokens"],
            "steps": tr["steps"],
            **_eval_rates("dev", e),
        }
        if ctx.done("iter_001/eval_heldout"):
            row.update(_eval_rates("heldout", ctx.result("iter_001/eval_heldout")))
        return {**row, **times}


def _eval_rates(prefix: str, ev: dict[str, Any]) -> dict[str, Any]:
    """The paper's three rates of an evaluation (correct, contains answer, correct format), each with its 95% interval, and n."""
    out = {f"{prefix}_accuracy": ev["accuracy"], f"{prefix}_ci_low": ev["ci_low"], f"{prefix}_ci_high": ev["ci_high"], f"{prefix}_n": ev["n"]}
    for key in ("contains_answer", "correct_format"):
        out.update({f"{prefix}_{key}": ev[key], f"{prefix}_{key}_ci_low": ev[f"{key}_ci_low"], f"{prefix}_{key}_ci_high": ev[f"{key}_ci_high"]})
    return out


def _verify_and_write(task: Any, samples: list[Sample], output: Path) -> dict[str, Any]:
    """Verify zero-shot CoT samples with the task's verifier, write them as score rows (rationale and
    the paper's contains-answer / correct-format kept), summarise."""
    from cotkit import atomic_write_jsonl, make_verifier, sample_row, summarize, verify_samples

    verifier = make_verifier(None, task)
    try:
        verdicts = verify_samples(samples, verifier)
    finally:
        verifier.close()
    rows = []
    for s in samples:
        meta = dict(s.meta)
        rationale = meta.pop("rationale", "")
        s.meta = meta
        row = sample_row(s, include_prompt=True)
        row["id"] = s.example.id
        row["teacher_rationale"] = rationale
        rows.append(row)
    checks = [format_checks(s.example, s.completion, answer_cue("zeroshot"), s.stop) for s in samples]
    atomic_write_jsonl(output, [{**row, **c} for row, c in zip(rows, checks)])
    summary = {**summarize(verdicts), **format_summary(checks)}
    summary["questions"] = len({s.example.id for s in samples})
    summary["questions_correct"] = len({s.example.id for s in samples if s.verdict is not None and s.verdict.correct})
    summary["accuracy"] = round(summary["accuracy"], 6)
    summary["unparseable"] = round(summary["unparseable"], 6)
    return summary
