"""A minimal self-training method as a single-file plugin: sample K, keep the correct ones, fine-tune once."""

from dataclasses import dataclass, field

from cotkit import (
    Method,
    ModelSlot,
    RunContext,
    SamplingParams,
    SFTConfig,
    SplitLimits,
    fine_tune,
    greedy_accuracy,
    hookimpl,
    method_splits,
    option,
    read_jsonl,
)


@dataclass
class BestOfKConfig(SplitLimits):
    """Options of `cotkit train --method best-of-k`."""

    samples_per_question: int = option(4, help="Rationales sampled per training question.")
    temperature: float = option(0.7, help="Sampling temperature.")
    max_new_tokens: int = option(64, help="Longest rationale.")
    steps: int = option(4, help="Optimizer steps.")
    final_eval: bool = option(False, help="Also score the held-out split.")  # SplitLimits' default is True
    sft: SFTConfig = field(default_factory=SFTConfig)


class BestOfK(Method):
    """Sample K rationales per question, keep the correct ones, fine-tune once (rejection sampling)."""

    name = "best-of-k"
    Config = BestOfKConfig

    def run(self, ctx: RunContext[BestOfKConfig]):
        cfg, task = ctx.options, ctx.task
        fit, dev, _ = method_splits(ctx, cfg)
        models = ModelSlot(ctx)
        d = ctx.iter_dir(1)

        def evaluate(ref, out):
            return greedy_accuracy(ctx, models.get(ref), ref, dev, out, "dev", style="zeroshot", max_new_tokens=cfg.max_new_tokens)

        def sample_and_keep():
            from cotkit import TrainExample, atomic_write_jsonl, make_verifier, sample, verify_samples

            params = SamplingParams(n=cfg.samples_per_question, temperature=cfg.temperature,
                                    max_new_tokens=cfg.max_new_tokens, stop=task.stop_sequences("zeroshot"),
                                    seed=ctx.seed_for("iter_001/sample"))
            samples = sample(task, fit, models.get("base"), params, style="zeroshot")
            verify_samples(samples, make_verifier(None, task))
            kept = [TrainExample(task.prompt(s.example, "zeroshot"), s.completion) for s in samples if s.verdict.correct]
            atomic_write_jsonl(d / "train.jsonl", [k.to_dict() for k in kept])
            return {"samples": len(samples), "train_examples": len(kept)}

        try:
            ctx.phase("iter_000/eval_dev", lambda: evaluate("base", ctx.iter_dir(0) / "eval_dev.jsonl"))
            if ctx.phase("iter_001/sample", sample_and_keep)["train_examples"] == 0:
                ctx.log("no correct rationale: nothing to fine-tune on")
                return {"final_checkpoint": "base"}
            models.close()  # free the sampler before training
            from cotkit import TrainExample

            items = [TrainExample.from_dict(r) for r in read_jsonl(d / "train.jsonl")]
            trained = ctx.phase("iter_001/train", lambda: fine_tune(
                ctx, "iter_001/train", "train", ctx.base_model, items, cfg.sft, cfg.steps, d)[1], all_processes=True)
            ctx.phase("iter_001/eval_dev", lambda: evaluate(trained["checkpoint"], d / "eval_dev.jsonl"))
        finally:
            models.close()
        return {"final_checkpoint": trained["checkpoint"]}


@hookimpl
def register_methods(register):
    register(BestOfK)
