"""GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) through TRL's GRPOTrainer, rewarded by cotkit's verifiers.

Online RL with verifiable rewards: for each training question the model samples
`--num-generations` completions, each is scored by the task's verifier (or `--verifier`, e.g. the
sandboxed `program` verifier; `--step-scorer` adds a process reward), and the policy is moved
towards the completions that score above their group's mean. TRL owns the algorithm (generation,
advantages, clipped loss, optional KL to the reference model, LoRA through peft); this method
puts it inside a cotkit run: the task's splits and prompts, the rewards of `cotkit.rewards`
(one verifier instance and its sandbox workers for the whole run, closed at the end), the base and
final model scored on dev and held-out questions by the same verifier, and the run directory's
resume: TRL saves a checkpoint (weights, optimizer, scheduler, RNG) every `--save-every` steps in
iter_001/trainer/, and `cotkit train --resume` continues from the last one.

Generation stops at the model's end of sequence or `--max-completion-length` tokens (TRL's
transformers path takes no stop strings); the verifier cuts a completion at the prompt style's
stop sequences before it reads the answer, as it does in `cotkit eval`. `--style chat` (the
default) suits instruct models, whose turn ends with an end-of-sequence token.

Phases: iter_000/eval_dev and eval_heldout (the base model), iter_001/train (all processes;
iter_001/rewards.jsonl holds every completion with its reward and typed verdict, train_log.jsonl
TRL's per-step log), iter_001/eval_dev, iter_001/eval_heldout, iter_001/summary.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from cotkit import (
    PROMPT_STYLES,
    ConfigError,
    Example,
    Method,
    ModelSlot,
    SamplingParams,
    SplitLimits,
    Status,
    eval_phases,
    is_main_process,
    method_splits,
    option,
    phase_seconds,
    quiet_transformers,
    read_jsonl,
)

if TYPE_CHECKING:
    from cotkit import RunContext

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
PHASE = "iter_001/train"
#: TRL's scheduler names for cotkit's three (constant keeps the warm-up, as in the shared fine-tuning step).
SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


@dataclass
class GrpoConfig(SplitLimits):
    """Options of `cotkit train --method grpo` (`cotkit show grpo` lists them); defaults are TRL's GRPOConfig's unless said."""

    steps: int = option(100, help="Optimizer steps (TRL's max_steps).")
    num_generations: int = option(8, help="Completions sampled per question; their rewards are compared within the group.")
    batch_size: int = option(
        8, help="Completions per micro-batch on each process (TRL's per_device_train_batch_size); a step holds batch_size x grad_accum x processes."
    )
    grad_accum: int = option(1, help="Micro-batches per optimizer step; the step's completions must be a multiple of num_generations.")
    max_completion_length: int = option(256, help="Longest completion in tokens, in training and evaluation (TRL: 512).")
    temperature: float = option(1.0, help="Sampling temperature of the completions.")
    top_p: float = option(1.0, help="Nucleus sampling of the completions.")
    beta: float = option(0.0, help="KL coefficient to the reference model (0: no reference model is loaded; DeepSeek-R1 used 0.001).")
    epsilon: float = option(0.2, help="Clipping range of the probability ratio.")
    num_iterations: int = option(1, help="Optimizer steps per generated batch (GRPO's mu).")
    loss_type: str = option("dapo", help="How token losses are aggregated (TRL's loss_type).", choices=LOSS_TYPES)
    scale_rewards: str = option("group", help="Divide advantages by the reward std of the group, of the batch, or not at all (Dr. GRPO).", choices=("group", "batch", "none"))
    learning_rate: float = option(1e-6, help="Peak learning rate (AdamW).")
    lr_scheduler: str = option("linear", help="Schedule after warm-up.", choices=tuple(SCHEDULERS))
    warmup_steps: int = option(0, help="Optimizer steps of linear warm-up.")
    weight_decay: float = option(0.0, help="AdamW weight decay.")
    max_grad_norm: float = option(1.0, help="Gradient clipping norm.")
    lora: bool = option(False, help="Train LoRA adapters (peft) instead of all weights; merged into the saved checkpoint.")
    lora_r: int = option(16, help="LoRA rank.")
    lora_alpha: int = option(32, help="LoRA scaling alpha.")
    lora_dropout: float = option(0.0, help="LoRA dropout.")
    lora_targets: list[str] = option(default_factory=lambda: ["all-linear"], help="Module names LoRA adapts (peft target_modules).")
    precision: str = option("auto", help="auto: bf16 on a GPU that has it, fp32 on CPU.", choices=("auto", "fp32", "bf16"))
    gradient_checkpointing: bool = option(False, help="Trade compute for memory (TRL's default is on; off here, as in cotkit's fine-tuning step).")
    save_every: int = option(25, help="Save a resumable TRL checkpoint every N steps (0: none; a killed run then starts training again).")
    style: str = option("chat", help="Prompt style of training and evaluation (chat for instruct models).", choices=PROMPT_STYLES)
    verifier: str | None = option(None, help="Verifier that rewards and evaluates (default: the task's).")
    verifier_options: dict[str, Any] = option(default_factory=dict, help="Options of the verifier KEY=VALUE, e.g. cpu_seconds=2 workers=2.")
    status_rewards: dict[str, float] = option(
        default_factory=dict, help="Reward of a verdict status KEY=VALUE (default correct=1, every other status 0), e.g. unparseable=-0.5."
    )
    step_scorer: str | None = option(None, help="Add a process reward: this step scorer's aggregated step scores (arith, exec, prm, faithfulness).")
    step_scorer_options: dict[str, Any] = option(default_factory=dict, help="Options of the step scorer KEY=VALUE.")
    step_aggregate: str = option("min", help="Step scores to one reward.", choices=("min", "prod", "last", "logsum"))
    step_scorer_weight: float = option(1.0, help="Weight of the process reward in the sum (the verifier's is 1).")

    def __post_init__(self) -> None:
        for name in ("steps", "num_generations", "batch_size", "grad_accum", "max_completion_length", "num_iterations", "lora_r"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ConfigError("num_generations must be at least 2: GRPO compares a completion with the others of its group")
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ConfigError(
                f"batch_size x grad_accum ({self.batch_size} x {self.grad_accum}) must be a multiple of num_generations={self.num_generations}"
            )
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive (GRPO samples its completions), got {self.temperature}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        statuses = [s.value for s in Status]
        for key in self.status_rewards:
            if key not in statuses:
                raise ConfigError(f"status_rewards: no verdict status {key!r} (statuses: {', '.join(statuses)})")
        super().__post_init__()  # the split limits


class Grpo(Method):
    """GRPO on TRL's GRPOTrainer: sampled groups rewarded by the task's verifier, advantages within each group."""

    name = "grpo"
    paper = "Shao et al. DeepSeekMath (GRPO), arXiv 2402.03300; run by TRL's GRPOTrainer"
    Config = GrpoConfig

    def run(self, ctx: RunContext[GrpoConfig]) -> dict[str, Any]:
        """Evaluate the base model, train with GRPO, evaluate: every step a resumable phase."""
        cfg: GrpoConfig = ctx.options
        fit, dev, heldout = method_splits(ctx, cfg)
        d1 = ctx.iter_dir(1)
        models = ModelSlot(ctx)
        try:
            eval_phases(ctx, 0, dev, heldout, lambda examples, out, split: self.evaluate(ctx, models, "base", examples, out, split))
            ctx.write_report()
            models.close()  # free the evaluator's memory before training
            trained = ctx.phase(PHASE, lambda: self.train(ctx, fit, d1), all_processes=True)
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
        """The verifier that rewards training and scores evaluations."""
        from cotkit import make_verifier

        cfg: GrpoConfig = ctx.options
        return make_verifier(cfg.verifier, ctx.task, **cfg.verifier_options)

    def evaluate(self, ctx: Any, models: ModelSlot, model: str, examples: list[Example], output: Path, split: str) -> dict[str, Any]:
        """Greedy accuracy of `model` in the training style, scored by the reward's verifier (n and 95% interval)."""
        from cotkit import evaluate

        cfg: GrpoConfig = ctx.options
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=cfg.max_completion_length, stop=ctx.task.stop_sequences(cfg.style), seed=0)
        verifier = self.make_verifier(ctx)
        try:
            summary = evaluate(ctx.task, examples, models.get(model), verifier, style=cfg.style, params=params, output=output, model_label=model)
        finally:
            verifier.close()
        return {"split": split, "model": model, **summary}

    def train(self, ctx: Any, fit: list[Example], d: Path) -> dict[str, Any]:
        """TRL's GRPOTrainer for --steps steps from the base model (or its last checkpoint in d/trainer); d/checkpoint."""
        from cotkit import reward_rows

        cfg: GrpoConfig = ctx.options
        try:
            from datasets import Dataset
            from trl import GRPOTrainer
        except ImportError as e:
            raise ConfigError(f"--method grpo needs TRL ({e}); install it with: pip install 'cotkit[train]'") from e
        from transformers.trainer_utils import get_last_checkpoint

        trainer_dir = d / "trainer"
        last = get_last_checkpoint(str(trainer_dir)) if trainer_dir.is_dir() else None
        resumed_at = int(Path(last).name.rsplit("-", 1)[1]) if last else 0
        log_path = d / "rewards.jsonl"
        quiet_transformers()
        rewards = self.rewards(ctx, fit, log_path, resumed_at)
        tokenizer = load_tokenizer(ctx.base_model)
        with ctx.progress("GRPO steps", cfg.steps) as update:

            def report(advance: int, step: int, logs: dict[str, Any]) -> None:
                update(advance, loss=logs["loss"], reward=logs.get("reward"))
                stats = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and k not in ("loss", "learning_rate")}
                ctx.tracking.train_step(PHASE, SimpleNamespace(step=step, total=cfg.steps, loss=logs["loss"], lr=logs.get("learning_rate"), stats=stats))

            trainer = GRPOTrainer(
                model=ctx.base_model,
                reward_funcs=rewards,
                args=trl_config(cfg, trainer_dir, ctx.seed_for(PHASE), len(rewards)),
                train_dataset=Dataset.from_list(reward_rows(ctx.task, fit, cfg.style)),
                processing_class=tokenizer,
                peft_config=lora_config(cfg),
                callbacks=[run_callback(report, resumed_at, ctx.fault_step(PHASE))],
            )
            quiet_trainer(trainer)
            try:
                trainer.train(resume_from_checkpoint=last)
            finally:
                for r in rewards:
                    r.close()
        history = [row for row in trainer.state.log_history if "step" in row and "loss" in row]
        if is_main_process():
            save_checkpoint(trainer, tokenizer, cfg, d / "checkpoint", history)
            from cotkit import atomic_write_jsonl

            atomic_write_jsonl(d / "train_log.jsonl", history)
            shutil.rmtree(trainer_dir, ignore_errors=True)  # resumable state is kept only while training
        return train_row(history, cfg, resumed_at, read_jsonl(log_path) if log_path.exists() else [])

    def rewards(self, ctx: Any, fit: list[Example], log_path: Path, resumed_at: int) -> list[Any]:
        """The reward functions: the verifier's, then the step scorer's when one is asked for."""
        from cotkit import StepScorerReward, VerifierReward, make_step_scorer

        cfg: GrpoConfig = ctx.options
        out = [VerifierReward(self.make_verifier(ctx), fit, values=cfg.status_rewards, log_path=log_path, resume_step=resumed_at)]
        if cfg.step_scorer:
            scorer = make_step_scorer(cfg.step_scorer, **cfg.step_scorer_options)
            out.append(StepScorerReward(scorer, fit, aggregate=cfg.step_aggregate, log_path=log_path, resume_step=resumed_at))
        return out

    def funnel(self, ctx: Any) -> dict[str, Any]:
        """The run's row: steps, mean reward of the first and last steps, base and final dev accuracy, phase times."""
        t = ctx.result(PHASE)
        base = ctx.result("iter_000/eval_dev")
        e = ctx.result("iter_001/eval_dev")
        return {
            "steps": t["steps"],
            "completions": t["completions"],
            "correct_completions": t["correct_completions"],
            "first_reward": t["first_reward"],
            "final_reward": t["final_reward"],
            "base_dev_accuracy": base["accuracy"],
            "dev_accuracy": e["accuracy"],
            "dev_ci_low": e["ci_low"],
            "dev_ci_high": e["ci_high"],
            "dev_n": e["n"],
            **phase_seconds(ctx, "iter_001"),
        }


# ------------------------------------------------------------------------------------ TRL glue


def trl_config(cfg: GrpoConfig, output_dir: Path, seed: int, n_rewards: int) -> Any:
    """TRL's GRPOConfig from the method's options: one log row per step, checkpoints for --resume, no hub, no trackers."""
    import torch
    from trl import GRPOConfig

    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    weights = [1.0, cfg.step_scorer_weight][:n_rewards]
    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        num_iterations=cfg.num_iterations,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=SCHEDULERS[cfg.lr_scheduler],
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=bf16,
        fp16=False,
        model_init_kwargs={"dtype": torch.bfloat16 if bf16 else torch.float32},
        activation_checkpointing=cfg.gradient_checkpointing,
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or cfg.steps,
        save_total_limit=1,
        reward_weights=weights,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def quiet_trainer(trainer: Any) -> None:
    """Leave the display to the run's progress bar: without tqdm, transformers would print every log dict."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def lora_config(cfg: GrpoConfig) -> Any:
    """peft's LoRA config, or None without --lora."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    targets: Any = "all-linear" if cfg.lora_targets == ["all-linear"] else list(cfg.lora_targets)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")


def load_tokenizer(model: str) -> Any:
    """The model's tokenizer, padded on the left as TRL's generation needs (end of sequence as padding when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def save_checkpoint(trainer: Any, tokenizer: Any, cfg: GrpoConfig, out: Path, history: list[dict[str, Any]]) -> None:
    """The trained model as a plain Hugging Face folder (LoRA merged), written to a temp folder and renamed into place."""
    import json

    model = trainer.accelerator.unwrap_model(trainer.model)
    if cfg.lora:
        model = model.merge_and_unload()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    summary = {"method": "grpo", "steps": trainer.state.global_step, "rewards": [row.get("reward") for row in history], "losses": [row.get("loss") for row in history]}
    (tmp / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def train_row(history: list[dict[str, Any]], cfg: GrpoConfig, resumed_at: int, reward_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The training phase's result: steps, where it resumed, rewards of the first and last steps, the completions judged."""
    first, final = (history[0], history[-1]) if history else ({}, {})
    verdicts = [r for r in reward_rows if "verdict" in r]
    return {
        "checkpoint": "iter_001/checkpoint",
        "steps": final.get("step", 0),
        "resumed_from_step": resumed_at or None,
        "completions": len(verdicts),
        "correct_completions": sum(bool(r.get("correct")) for r in verdicts),
        "first_reward": first.get("reward"),
        "final_reward": final.get("reward"),
        "first_loss": first.get("loss"),
        "final_loss": final.get("loss"),
        "num_generations": cfg.num_generations,
    }


def run_callback(report: Any, shown: int, fault_step: int | None) -> Any:
    """A TrainerCallback: `report(advance, step, logs)` once per new optimizer step (progress bar, trackers), and the
    resume tests' SIGKILL right after the checkpoint of step `fault_step` is saved."""
    from transformers import TrainerCallback

    class RunCallback(TrainerCallback):
        def __init__(self) -> None:
            self.shown = shown  # steps already reported (a resumed run starts at its checkpoint)

        def on_log(self, _args: Any, state: Any, _control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if logs and "loss" in logs and state.global_step > self.shown:
                report(state.global_step - self.shown, state.global_step, logs)
                self.shown = state.global_step

        def on_save(self, _args: Any, state: Any, _control: Any, **kwargs: Any) -> None:
            if fault_step is not None and state.global_step == fault_step:
                os.kill(os.getpid(), signal.SIGKILL)

    return RunCallback()
