"""Preference pairs and the DPO + NLL objective for the shared fine-tuning step.

Iterative RPO (Pang et al. 2024, arXiv 2404.19733) trains on pairs (prompt, winner, loser) with

    loss = -log σ(β [(log π(w) - log π_ref(w)) - (log π(l) - log π_ref(l))])  +  α · NLL_π(w) / |w|

where log π(·) is the summed log-probability of the completion tokens, |w| the winner's completion
length in tokens, and π_ref a frozen reference model (the previous iteration's model). α = 0 is
plain DPO (Rafailov et al. 2023).

`dpo_nll_loss` is the loss on per-sequence log-probabilities; `DPONLLObjective` plugs it into
`cotkit.harness.train.train` (features, batches, a reference model loaded in `setup`). Each pair
counts once in the step normaliser and the NLL term is normalised per winner, so the step loss is
the mean over pairs and does not depend on how the step is split into micro-batches.

TRL 1.16's `DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1, α])` computes the same DPO
term; its "sft" term divides the winners' summed NLL by the winner tokens of the whole batch
instead of per winner. The two agree for one pair per batch or equal winner lengths;
`nll_normalization="batch_tokens"` reproduces TRL's form on a single batch
(tests/test_preference_loss.py checks both against TRL).

The NLL normalizations, named by what divides the winners' summed NLL:

- `winner_tokens` (the paper): each winner's NLL over its own completion tokens, NLL(w) / |w|;
- `batch_tokens` (TRL's "sft" term): the micro-batch's winners' NLL over all their tokens, so a
  long winner weighs more; the same as `winner_tokens` with one pair per micro-batch;
- `none`: each winner's summed NLL, -log π(w), the same unnormalized log-likelihood the DPO term
  compares; longer winners pull harder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cotkit.errors import ConfigError, ModelError
from cotkit.harness.train import Objective, completion_ids, render_prompt_ids
from cotkit.types import Prompt

NLL_NORMALIZATIONS = ("winner_tokens", "batch_tokens", "none")


@dataclass
class PreferencePair:
    """One training pair: a prompt, a preferred (winner) and a dispreferred (loser) completion."""

    prompt: Prompt
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSONL row of a pairs file."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, **({"meta": self.meta} if self.meta else {})}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> PreferencePair:
        """Inverse of `to_dict`."""
        return cls(row["prompt"], row["chosen"], row["rejected"], row.get("meta") or {})


def dpo_nll_loss(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    chosen_tokens: Any,
    *,
    beta: float = 0.1,
    nll_weight: float = 1.0,
    nll_normalization: str = "winner_tokens",
) -> tuple[Any, dict[str, Any]]:
    """Per-pair DPO (sigmoid) + α·NLL(winner) losses from summed completion log-probabilities.

    Returns (losses of shape [pairs], parts) where parts holds the per-pair `dpo` and `nll` terms
    and the implicit rewards β·(log π − log π_ref) of winners and losers. `nll_normalization`
    is one of NLL_NORMALIZATIONS (module docstring): "winner_tokens" (the paper), "batch_tokens"
    (TRL) or "none".
    """
    import torch.nn.functional as F

    if nll_normalization not in NLL_NORMALIZATIONS:
        raise ConfigError(f"nll_normalization must be one of {', '.join(NLL_NORMALIZATIONS)}, got {nll_normalization!r}")
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    dpo = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    tokens = chosen_tokens.to(policy_chosen_logps.dtype).clamp(min=1)
    if nll_normalization == "winner_tokens":
        nll = -policy_chosen_logps / tokens
    elif nll_normalization == "batch_tokens":
        nll = (-policy_chosen_logps.sum() / tokens.sum()).expand_as(policy_chosen_logps)
    else:
        nll = -policy_chosen_logps
    losses = dpo + nll_weight * nll
    parts = {
        "dpo": dpo,
        "nll": nll,
        "chosen_rewards": (beta * chosen_logratios).detach(),
        "rejected_rewards": (beta * rejected_logratios).detach(),
    }
    return losses, parts


def completion_logps(model: Any, input_ids: Any, attention_mask: Any, labels: Any) -> tuple[Any, Any]:
    """Summed log-probability of each row's labelled (completion) tokens, and how many there are."""
    import torch
    import torch.nn.functional as F

    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    logits = out.logits[:, :-1, :].float()
    target = labels[:, 1:]
    valid = target != -100
    safe = target.masked_fill(~valid, 0)
    token_logps = torch.gather(F.log_softmax(logits, dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    token_logps = token_logps * valid.to(token_logps.dtype)
    return token_logps.sum(dim=1), valid.sum(dim=1)


def pair_features(tokenizer: Any, pair: PreferencePair, max_length: int) -> dict[str, Any] | None:
    """Token ids and completion-only labels of a pair's two sequences, both ending with EOS.

    None when either sequence is longer than `max_length`: cutting one side would leave a winner
    and a loser that differ in how they end (one with EOS, one without), which DPO would learn
    from instead of their reasoning.
    """
    p_ids = render_prompt_ids(tokenizer, pair.prompt)
    out: dict[str, Any] = {}
    for side, text in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        c_ids = completion_ids(tokenizer, text)
        if not c_ids or len(p_ids) + len(c_ids) > max_length:
            return None
        out[f"{side}_ids"], out[f"{side}_labels"] = p_ids + c_ids, [-100] * len(p_ids) + c_ids
    # The training loop counts a feature's tokens as len(feature["input_ids"]): both sequences.
    out["input_ids"] = out["chosen_ids"] + out["rejected_ids"]
    return out


class DPONLLObjective(Objective):
    """DPO (+ α·NLL on the winner) against a frozen reference model, for `cotkit.harness.train.train`.

    Items are `PreferencePair`s (or their dicts). `reference` is a model folder or hub id loaded in
    `setup` on the training device; the policy starts from whatever model `train` is given (for
    Iterative RPO, the same one). Every pair weighs 1 in the step normaliser.
    """

    shown_stats = ("reward_accuracy", "reward_margin")

    #: The NLL normalizations this objective supports (module docstring), the paper's first.
    NLL_NORMALIZATIONS = NLL_NORMALIZATIONS

    def __init__(self, reference: str, beta: float = 0.1, nll_weight: float = 1.0, nll_normalization: str = "winner_tokens"):
        if beta <= 0:
            raise ConfigError(f"beta must be positive, got {beta}")
        if nll_weight < 0:
            raise ConfigError(f"nll_weight must be 0 or more, got {nll_weight}")
        if nll_normalization not in NLL_NORMALIZATIONS:
            raise ConfigError(f"nll_normalization must be one of {', '.join(NLL_NORMALIZATIONS)}, got {nll_normalization!r}")
        self.reference_path = reference
        self.beta = beta
        self.nll_weight = nll_weight
        self.nll_normalization = nll_normalization
        self.reference: Any = None

    def features(self, tokenizer: Any, items: Sequence[Any], max_length: int) -> list[dict[str, Any]]:
        out = []
        for item in items:
            pair = item if isinstance(item, PreferencePair) else PreferencePair.from_dict(item)
            f = pair_features(tokenizer, pair, max_length)
            if f is not None:
                out.append(f)
        return out

    def size(self, feature: dict[str, Any]) -> float:
        return 1.0

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        """Winners first, then losers (as TRL lays out a preference batch), right-padded."""
        import torch

        seqs = [(f["chosen_ids"], f["chosen_labels"]) for f in features] + [(f["rejected_ids"], f["rejected_labels"]) for f in features]
        width = max(len(ids) for ids, _ in seqs)
        ids_t = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        labels_t = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (ids, labels) in enumerate(seqs):
            ids_t[i, : len(ids)] = torch.tensor(ids)
            labels_t[i, : len(labels)] = torch.tensor(labels)
            mask[i, : len(ids)] = 1
        return {"input_ids": ids_t, "labels": labels_t, "attention_mask": mask}

    def setup(self, accelerator: Any, model: Any) -> None:
        """Load the frozen reference model on the training device."""
        import torch
        from transformers import AutoModelForCausalLM

        from cotkit.models import resolve_model_path

        try:
            ref = AutoModelForCausalLM.from_pretrained(resolve_model_path(self.reference_path), dtype=torch.float32)
        except OSError as e:
            raise ModelError(f"cannot load the reference model {self.reference_path!r}: {e}") from e
        ref.to(accelerator.device).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        self.reference = ref

    def pair_losses(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Per-pair losses and their parts for a collated batch (winners first, then losers)."""
        import torch

        if self.reference is None:
            raise ModelError("DPONLLObjective.setup was not called: no reference model")
        logps, n_tokens = completion_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        with torch.no_grad():
            ref_logps, _ = completion_logps(self.reference, batch["input_ids"], batch["attention_mask"], batch["labels"])
        pc, pr = logps.chunk(2)
        rc, rr = ref_logps.chunk(2)
        chosen_tokens, _ = n_tokens.chunk(2)
        return dpo_nll_loss(
            pc, pr, rc, rr, chosen_tokens, beta=self.beta, nll_weight=self.nll_weight, nll_normalization=self.nll_normalization
        )

    def loss(self, model: Any, batch: dict[str, Any], normalizer: float) -> tuple[Any, dict[str, float]]:
        losses, parts = self.pair_losses(model, batch)
        chosen, rejected = parts["chosen_rewards"], parts["rejected_rewards"]
        stats = {
            "dpo_loss": float(parts["dpo"].detach().mean()),
            "nll": float(parts["nll"].detach().mean()),
            "chosen_reward": float(chosen.mean()),
            "rejected_reward": float(rejected.mean()),
            "reward_margin": float((chosen - rejected).mean()),
            "reward_accuracy": float((chosen > rejected).float().mean()),
        }
        return losses.sum() / normalizer, stats
