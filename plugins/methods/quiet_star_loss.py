"""Quiet-STaR's loss on a rollout: language modelling with and without the thought, and REINFORCE on the thought tokens.

Per sequence (rows are the sequence repeated `n_passes` times, pass-major):
`base_weight * NLL_base + mix_weight * mean_k NLL_mix,k + policy_weight * policy`, where NLL_base is
the ordinary next-token NLL of the text, NLL_mix,k the NLL of the k-th true token after each
thought, and the policy term `-mean(A * log softmax(logits / T_policy)[sampled token])` over the
sampled thought tokens. The reward of a thought is how much it raised the log-likelihood of the
next `n_ahead_talk` true tokens over the base prediction; its advantage is the reward minus the
mean reward of the thoughts at the same position, clipped at 0 (the reference keeps only the
better-than-average thoughts), and detached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class LossWeights:
    base: float = 0.5
    mix: float = 0.5
    policy: float = 1e6
    policy_temperature: float = 3.0
    clip_advantage: bool = True


def thought_rewards(rollout: Any) -> Any:
    """(rows, T): the summed gain in log-likelihood of the next true tokens from each position's thought (detached)."""
    gain = (rollout.talk_mix_logp - rollout.talk_base_logp) * rollout.talk_valid
    return gain.sum(-1).detach()


def reinforce_advantages(rewards: Any, n_passes: int, clip: bool = True) -> Any:
    """Each thought's reward minus the mean over the `n_passes` thoughts of the same position (rows pass-major), clipped at 0."""
    grouped = rewards.reshape(n_passes, -1, *rewards.shape[1:])
    advantage = grouped - grouped.mean(0, keepdim=True)
    if clip:
        advantage = advantage.clamp(min=0)
    return advantage.reshape(rewards.shape).detach()


def _masked_mean(values: Any, mask: Any, dims: tuple[int, ...]) -> Any:
    mask = mask.to(values.dtype)
    return (values * mask).sum(dims) / mask.sum(dims).clamp(min=1)


def sequence_losses(rollout: Any, n_passes: int, weights: LossWeights) -> tuple[Any, dict[str, float]]:
    """The loss of each original sequence (averaged over its passes) and statistics of the batch."""
    nll_base = _masked_mean(-rollout.base_logp, rollout.base_valid, (1,))
    # mean over k of each k's mean NLL over positions
    per_k = _masked_mean(-rollout.talk_mix_logp, rollout.talk_valid, (1,))
    has_k = rollout.talk_valid.any(1).to(per_k.dtype)
    nll_mix = (per_k * has_k).sum(-1) / has_k.sum(-1).clamp(min=1)
    rewards = thought_rewards(rollout)
    advantages = reinforce_advantages(rewards, n_passes, weights.clip_advantage)
    tokens_valid = rollout.thought_valid[..., None].expand_as(rollout.thought_logp)
    policy = _masked_mean(-advantages[..., None] * rollout.thought_logp, tokens_valid, (1, 2))
    per_row = weights.base * nll_base + weights.mix * nll_mix + weights.policy * policy
    per_sequence = per_row.reshape(n_passes, -1).mean(0)
    valid = rollout.thought_valid
    stats = {
        "nll_base": float(nll_base.mean().detach()),
        "nll_mix": float(nll_mix.mean().detach()),
        "policy_loss": float(policy.mean().detach()),
        "reward_mean": float(_masked_mean(rewards, valid, (0, 1))),
        "advantage_nonzero": float(_masked_mean((advantages > 0).float(), valid, (0, 1))),
        "mixing_weight": float(_masked_mean(rollout.mixing_weight.detach(), rollout.talk_valid, (0, 1, 2))),
    }
    return per_sequence, stats

