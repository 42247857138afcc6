"""Quiet-STaR's model wrapper: a thought after every token, around any Hugging Face causal LM.

The reference (ezelikman/quiet-star) patches Mistral's modeling file. Here the base model is left
alone and driven from outside: the start/end-of-thought embeddings are separate parameters fed
through `inputs_embeds` (so they are not vocabulary entries and can never be sampled inside a
thought), the mixing head reads the last hidden states (or the logits where the model transforms
them after its LM head), and the parallel algorithm is a loop of ordinary forward calls that pass a
custom 4-D attention mask and position ids over a growing KV cache: every position's thought
attends to its own prefix and its own earlier thought tokens, so all T thoughts of a sequence cost
one pass per thought token. A model whose attention cannot take such a mask (found by a probe
that compares the 4-D path with plain runs) gets the fallback: thoughts at a random subset of
positions, each run as an ordinary left-padded row, which is an unbiased estimate of the same loss.

Pass layout (`n_ahead + n_ahead_talk - 1` passes): 0 the text; 1 START; 2 .. n_ahead-2 the sampled
thought tokens; n_ahead-1 END, whose output (mixed with the base output at t) predicts x[t+1];
then x[t+1] .. x[t+n_ahead_talk-1] teacher-forced, whose outputs (mixed with the base outputs at
t+k) predict x[t+k+1].

This module imports torch at the top: the method imports it only when it builds a model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cotkit import ConfigError, ModelError, cache_kwarg, write_backend_file

#: The folder inside a checkpoint that holds the thought embeddings, the mixing head and the settings.
THOUGHTS_DIR = "quiet_star"
_WEIGHTS = "thoughts.safetensors"
_SETTINGS = "config.json"
#: The text whose embedding starts both thought markers (the reference's "---").
MARKER_INIT_TEXT = "---"


@dataclass
class ThoughtSettings:
    """What the wrapper needs to think; saved beside the weights as quiet_star/config.json."""

    n_ahead: int = 8  # passes of a thought: START + (n_ahead - 3) sampled tokens + END, then the talk passes
    n_ahead_talk: int = 4  # true tokens each thought is scored on
    n_passes: int = 2  # thoughts per position
    embedding_scale: float = 100.0  # markers are stored divided by this and multiplied back (a larger effective learning rate)
    mix: str = "hidden"  # mix last hidden states (reference) or logits (models that transform logits after the LM head)
    parallel: bool = True  # 4-D masks; False: the fallback rows at `fallback_positions` random positions per sequence
    fallback_positions: int = 8
    thought_temperature: float = 1.0  # sampling temperature of thought tokens

    def __post_init__(self) -> None:
        if self.n_ahead < 4:
            raise ConfigError(f"n_ahead must be at least 4 (START, one sampled token, END and its prediction), got {self.n_ahead}")
        for name in ("n_ahead_talk", "n_passes", "fallback_positions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mix not in ("hidden", "logits"):
            raise ConfigError(f"mix must be hidden or logits, got {self.mix!r}")
        if self.embedding_scale <= 0 or self.thought_temperature <= 0:
            raise ConfigError("embedding_scale and thought_temperature must be positive")

    @property
    def thought_tokens(self) -> int:
        """Sampled tokens between START and END."""
        return self.n_ahead - 3


@dataclass
class Rollout:
    """What one parallel (or fallback) pass over a batch gives the loss; every tensor is (rows, T, ...)."""

    base_logp: Any  # (B, T) log p_base(x[t+1]) from pass 0
    base_valid: Any  # (B, T) whether x[t+1] is a real token
    talk_base_logp: Any  # (B, T, K) log p_base(x[t+k+1]), the base prediction at t+k
    talk_mix_logp: Any  # (B, T, K) log p_mix(x[t+k+1]) after the thought at t
    talk_valid: Any  # (B, T, K) whether the thought at t is scored on x[t+k+1]
    thought_logp: Any  # (B, T, n_thought) log-probability of each sampled thought token at the policy temperature
    thought_tokens: Any  # (B, T, n_thought) the sampled thought tokens
    thought_valid: Any  # (B, T) positions that have a thought the loss uses
    pass_logits: list[Any] = field(default_factory=list)  # with keep_logits: each pass's raw output logits (B, T, V)
    mixing_weight: Any = None  # (B, T, K) the head's weight of the thought


def mixing_head(hidden: int) -> nn.Sequential:
    """The reference's MLP on [h_base; h_thought] -> one unbounded weight; the last layer starts at zero so the thought has no say yet."""
    head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


class QuietStarModel(nn.Module):
    """A causal LM that thinks at every position: thought markers, the parallel rollout, the mixing head."""

    def __init__(self, base: Any, settings: ThoughtSettings, marker: Any):
        super().__init__()
        self.base = base
        self.settings = settings
        width = base.get_input_embeddings().weight.shape[1]
        self.start_embedding = nn.Parameter(marker.detach().clone().float().reshape(width))
        self.end_embedding = nn.Parameter(marker.detach().clone().float().reshape(width))
        self.mixing_head = mixing_head(width)
        self._cache_name = cache_kwarg(base)

    # -- what the engine, accelerate and a backend read from a transformers model ------------

    @property
    def config(self) -> Any:
        return self.base.config

    @property
    def generation_config(self) -> Any:
        return self.base.generation_config

    @property
    def device(self) -> Any:
        return self.base.get_input_embeddings().weight.device

    @property
    def dtype(self) -> Any:
        return self.base.get_input_embeddings().weight.dtype

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.base.gradient_checkpointing_enable(**kwargs)

    def forward(self, input_ids: Any = None, **kwargs: Any) -> Any:
        """The base model's forward (no thoughts): what the shared SFT code and plain scoring see."""
        return self.base(input_ids=input_ids, **kwargs)

    # -- pieces ------------------------------------------------------------------------------

    def embed(self, ids: Any) -> Any:
        return self.base.get_input_embeddings()(ids)

    def marker(self, which: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """START or END embeddings for every row and position (stored / scale, used x scale)."""
        param = self.start_embedding if which == "start" else self.end_embedding
        return (param * self.settings.embedding_scale).to(dtype).expand(*shape, -1)

    def lm_head(self, hidden: Any) -> Any:
        return self.base.get_output_embeddings()(hidden)

    def mix(self, h_base: Any, h_thought: Any, logits_base: Any, logits_thought: Any) -> tuple[Any, Any]:
        """Mixed logits and the head's weight: (1 - w) base + w thought, on hidden states or logits."""
        w = self.mixing_head(torch.cat([h_base, h_thought], dim=-1).to(self.mixing_head[0].weight.dtype)).to(h_base.dtype)
        if self.settings.mix == "hidden":
            return self.lm_head((1 - w) * h_base + w * h_thought), w.squeeze(-1)
        return (1 - w) * logits_base + w * logits_thought, w.squeeze(-1)

    def step(self, embeds: Any, mask: Any, positions: Any, cache: Any) -> tuple[Any, Any]:
        """One forward call of the base over the cache: (last hidden states, logits)."""
        out = self.base(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, output_hidden_states=True,
            **({self._cache_name: cache} if cache is not None else {}),
        )  # fmt: skip
        return out.hidden_states[-1], out.logits

    def attention_mask(self, allowed: Any) -> Any:
        """A (B, Q, K) boolean 'may attend' table as the model's kernel takes a 4-D mask: boolean for sdpa, additive for eager."""
        mask = allowed[:, None]
        if attention_kernel(self.base) == "eager":
            dtype = self.dtype
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        return mask

    def sample_thought_token(self, logits: Any, generator: Any = None) -> Any:
        probs = torch.softmax(logits.float() / self.settings.thought_temperature, dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])

    # -- the rollout ---------------------------------------------------------------------------

    def rollout(self, ids: Any, attention_mask: Any, *, policy_temperature: float = 3.0, keep_logits: bool = False) -> Rollout:
        """Thoughts at every position (4-D masks) or at the fallback's random positions, scored on the next true tokens."""
        if self.settings.parallel:
            return self._parallel_rollout(ids, attention_mask.bool(), policy_temperature, keep_logits)
        return self._row_rollout(ids, attention_mask.bool(), policy_temperature, keep_logits)

    def _parallel_rollout(self, ids: Any, real: Any, policy_temperature: float, keep_logits: bool) -> Rollout:
        from transformers import DynamicCache

        s, (rows, width), device = self.settings, ids.shape, ids.device
        cache = DynamicCache()
        eye = torch.eye(width, dtype=torch.bool, device=device).expand(rows, width, width)
        # Padding keys are never attended to; a padding query still sees itself so no row is empty.
        prefix = torch.ones(width, width, dtype=torch.bool, device=device).tril() & real[:, None, :] | eye
        blocks = [prefix]
        positions = torch.arange(width, device=device).expand(rows, width)
        embeds = self.embed(ids)
        h0, logits0 = self.step(embeds, self.attention_mask(prefix), positions, cache)
        pass_logits = [logits0] if keep_logits else []
        logits, sampled, policy, talk = logits0, [], [], []
        for j in range(1, s.n_ahead + s.n_ahead_talk - 1):
            if j == 1:
                step_embeds = self.marker("start", (rows, width), embeds.dtype)
            elif j <= s.n_ahead - 2:
                token = self.sample_thought_token(logits.detach())
                sampled.append(token)
                policy.append(torch.log_softmax(logits.float() / policy_temperature, dim=-1).gather(-1, token[..., None]).squeeze(-1))
                step_embeds = self.embed(token)
            elif j == s.n_ahead - 1:
                step_embeds = self.marker("end", (rows, width), embeds.dtype)
            else:
                step_embeds = self.embed(shifted(ids, j - (s.n_ahead - 1), 0))
            blocks.append(eye)
            h, logits = self.step(step_embeds, self.attention_mask(torch.cat(blocks, dim=-1)), positions + j, cache)
            if keep_logits:
                pass_logits.append(logits)
            if j >= s.n_ahead - 1:
                talk.append((h, logits))
        return self._score(ids, real, h0, logits0, talk, sampled, policy, real, pass_logits)

    def _row_rollout(self, ids: Any, real: Any, policy_temperature: float, keep_logits: bool) -> Rollout:
        """The fallback: a random subset of each sequence's positions, each thought run as its own left-padded row."""
        from transformers import DynamicCache

        s, (rows, width), device = self.settings, ids.shape, ids.device
        out = self.base(input_ids=ids, attention_mask=real.long(), use_cache=False, output_hidden_states=True)
        h0, logits0 = out.hidden_states[-1], out.logits
        chosen = torch.zeros(rows, width, dtype=torch.bool, device=device)
        for r in range(rows):
            usable = int(real[r].sum()) - 1  # positions with a next true token
            if usable > 0:
                chosen[r, torch.randperm(usable, device=device)[: s.fallback_positions]] = True
        where = chosen.nonzero()  # (R, 2): (row, position)
        n, span = where.shape[0], int(where[:, 1].max()) + 1 if where.numel() else 1
        at = torch.arange(span, device=device)
        # Row i is ids[b, : t + 1] right-aligned (left padding) so every row's next token goes in the same column.
        source = (where[:, 1:2] - (span - 1) + at).clamp(min=0)
        prefix_ids = ids[where[:, 0:1], source]
        mask = (at >= (span - 1 - where[:, 1:2])).long()
        cache = DynamicCache()
        h, logits = self.step(self.embed(prefix_ids), mask, (mask.cumsum(-1) - 1).clamp(min=0), cache)
        logits = logits[:, -1:]
        embeds_dtype = h.dtype
        sampled, policy, talk, pass_logits = [], [], [], []
        for j in range(1, s.n_ahead + s.n_ahead_talk - 1):
            if j == 1:
                step_embeds = self.marker("start", (n, 1), embeds_dtype)
            elif j <= s.n_ahead - 2:
                token = self.sample_thought_token(logits.detach())
                sampled.append(token[:, 0])
                policy.append(torch.log_softmax(logits[:, 0].float() / policy_temperature, dim=-1).gather(-1, token).squeeze(-1))
                step_embeds = self.embed(token)
            elif j == s.n_ahead - 1:
                step_embeds = self.marker("end", (n, 1), embeds_dtype)
            else:
                k = j - (s.n_ahead - 1)
                step_embeds = self.embed(ids[where[:, 0], (where[:, 1] + k).clamp(max=width - 1)][:, None])
            mask = torch.cat([mask, mask.new_ones(n, 1)], dim=1)
            h, logits = self.step(step_embeds, mask, where[:, 1:2] + j, cache)
            if keep_logits:
                pass_logits.append(logits[:, 0])
            if j >= s.n_ahead - 1:
                talk.append((scatter_rows(h[:, 0], where, rows, width), scatter_rows(logits[:, 0], where, rows, width)))
        sampled = [scatter_rows(t, where, rows, width) for t in sampled]
        policy = [scatter_rows(p, where, rows, width) for p in policy]
        return self._score(ids, real, h0, logits0, talk, sampled, policy, chosen, pass_logits)

    def _score(self, ids: Any, real: Any, h0: Any, logits0: Any, talk: list[Any], sampled: list[Any], policy: list[Any], thought_at: Any, pass_logits: list[Any]) -> Rollout:
        """Log-likelihoods of the true next tokens under the base and under the mixed predictions after each thought."""
        base_all = torch.log_softmax(logits0.float(), dim=-1)
        next_ids = shifted(ids, 1, 0)
        base_valid = shifted(real, 1, False) & real
        base_logp = base_all.gather(-1, next_ids[..., None]).squeeze(-1)
        talk_base, talk_mix, talk_valid, weights = [], [], [], []
        for k, (h, logits) in enumerate(talk):
            mixed, w = self.mix(shifted(h0, k, 0.0), h, shifted(logits0, k, 0.0), logits)
            target = shifted(ids, k + 1, 0)
            talk_mix.append(torch.log_softmax(mixed.float(), dim=-1).gather(-1, target[..., None]).squeeze(-1))
            talk_base.append(shifted(base_logp, k, 0.0))
            talk_valid.append(shifted(base_valid, k, False) & thought_at)
            weights.append(w)
        return Rollout(
            base_logp=base_logp, base_valid=base_valid,
            talk_base_logp=torch.stack(talk_base, -1), talk_mix_logp=torch.stack(talk_mix, -1), talk_valid=torch.stack(talk_valid, -1),
            thought_logp=torch.stack(policy, -1), thought_tokens=torch.stack(sampled, -1), thought_valid=thought_at & base_valid,
            pass_logits=pass_logits, mixing_weight=torch.stack(weights, -1),
        )  # fmt: skip

    # -- saving --------------------------------------------------------------------------------

    def merge_and_unload(self) -> QuietStarModel:
        """Fold LoRA adapters into the base (the engine calls this before saving a LoRA run)."""
        if hasattr(self.base, "merge_and_unload"):
            self.base = self.base.merge_and_unload()
        return self

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        """The base model as a plain Hugging Face folder (safetensors), and quiet_star/ (thought markers, mixing head, settings) beside it.

        Takes the engine's `save_pretrained(folder, state_dict=..., safe_serialization=...)` call and
        ignores those arguments: the weights are this module's own.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        base = self.base.merge_and_unload() if hasattr(self.base, "merge_and_unload") else self.base
        base.save_pretrained(folder, safe_serialization=True)
        own = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("base.")}
        (folder / THOUGHTS_DIR).mkdir(parents=True, exist_ok=True)
        save_file(own, str(folder / THOUGHTS_DIR / _WEIGHTS))
        (folder / THOUGHTS_DIR / _SETTINGS).write_text(json.dumps(asdict(self.settings), indent=2) + "\n", encoding="utf-8")
        write_backend_file(folder, "quiet-star")  # `cotkit sample/eval --model CHECKPOINT` decode with thoughts


def shifted(x: Any, k: int, fill: Any) -> Any:
    """x moved k positions left along dim 1 (x[:, t] becomes x[:, t + k]); the last k positions get `fill`."""
    if k == 0:
        return x
    tail = torch.full_like(x[:, :k], fill)
    return torch.cat([x[:, k:], tail], dim=1)


def scatter_rows(values: Any, where: Any, rows: int, width: int) -> Any:
    """Per-thought values (R, ...) placed at their (row, position) in a zero (rows, width, ...) tensor."""
    out = values.new_zeros((rows, width, *values.shape[1:]))
    return out.index_put((where[:, 0], where[:, 1]), values)


def attention_kernel(model: Any) -> str:
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def marker_init(base: Any, tokenizer: Any, scale: float) -> Any:
    """The reference's start: the embedding of "---" (mean over its tokens) divided by the embedding scale."""
    ids = tokenizer(MARKER_INIT_TEXT, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ModelError(f"the tokenizer makes no tokens of {MARKER_INIT_TEXT!r} to start the thought markers from")
    weight = base.get_input_embeddings().weight
    return weight[torch.tensor(ids, device=weight.device)].detach().float().mean(0) / scale


def add_thoughts(base: Any, tokenizer: Any, settings: ThoughtSettings, *, log: Any = print) -> QuietStarModel:
    """`base` wrapped to think: sdpa (or eager) attention, the markers from "---", and the 4-D path where a probe says it works."""
    if getattr(base.config, "is_encoder_decoder", False):
        raise ConfigError("--method quiet-star trains causal language models only: this model is encoder-decoder")
    force_mask_attention(base, log)
    model = QuietStarModel(base, settings, marker_init(base, tokenizer, settings.embedding_scale))
    if settings.parallel and not four_d_masks_work(model):
        settings.parallel = False
        log(f"quiet-star: {type(base).__name__} does not take custom 4-D attention masks here; thoughts run as ordinary rows "
            f"at {settings.fallback_positions} random positions per sequence (an unbiased estimate of the loss)")  # fmt: skip
    if settings.mix == "hidden" and not lm_head_gives_logits(model):
        settings.mix = "logits"
        log(f"quiet-star: {type(base).__name__} transforms its logits after the LM head; the mixing head mixes logits")
    return model


def force_mask_attention(base: Any, log: Any) -> None:
    """4-D float/bool masks need sdpa or eager attention (not FlashAttention-2 or flex)."""
    kernel = attention_kernel(base)
    if kernel in ("sdpa", "eager"):
        return
    try:
        base.set_attn_implementation("sdpa")
    except Exception:  # noqa: BLE001 - any refusal leaves the kernel to the probe, which falls back to rows
        return
    log(f"quiet-star: attention switched from {kernel} to sdpa (custom 4-D masks)")


def _probe_ids(model: QuietStarModel) -> Any:
    vocab = model.base.get_input_embeddings().weight.shape[0]
    return (torch.arange(5, device=model.device) * 7 + 3)[None] % vocab


@torch.no_grad()
def four_d_masks_work(model: QuietStarModel) -> bool:
    """Whether one 4-D-masked pass over a cache gives what a plain run of prefix + token gives, at every position."""
    from transformers import DynamicCache

    was_training = model.training
    model.eval()
    try:
        ids = _probe_ids(model)
        width = ids.shape[1]
        cache = DynamicCache()
        prefix = torch.ones(1, width, width, dtype=torch.bool, device=ids.device).tril()
        positions = torch.arange(width, device=ids.device)[None]
        model.step(model.embed(ids), model.attention_mask(prefix), positions, cache)
        eye = torch.eye(width, dtype=torch.bool, device=ids.device)[None]
        start = model.marker("start", (1, width), model.dtype)
        _, logits = model.step(start, model.attention_mask(torch.cat([prefix, eye], -1)), positions + 1, cache)
        for t in range(width):
            plain = model.base(inputs_embeds=torch.cat([model.embed(ids[:, : t + 1]), start[:, t : t + 1]], 1), use_cache=False).logits[0, -1]
            if not torch.allclose(plain, logits[0, t], atol=1e-4, rtol=1e-3):
                return False
        return True
    except Exception:  # noqa: BLE001 - an architecture that rejects the mask or the cache call gets the fallback
        return False
    finally:
        model.train(was_training)


@torch.no_grad()
def lm_head_gives_logits(model: QuietStarModel) -> bool:
    """Whether the output embeddings applied to the last hidden states give exactly the model's logits (no soft-capping or scaling after).

    Exact equality: a soft-cap barely moves a random model's small logits, and mixing logits is
    right for every model, so any doubt picks it.
    """
    ids = _probe_ids(model)
    out = model.base(input_ids=ids, use_cache=False, output_hidden_states=True)
    head = model.base.get_output_embeddings()
    return head is not None and torch.equal(head(out.hidden_states[-1]), out.logits)


def load_thoughts(base: Any, folder: str | Path) -> QuietStarModel | None:
    """The base model loaded from `folder`, wrapped with the thoughts saved in folder/quiet_star (None where there are none)."""
    from safetensors.torch import load_file

    here = Path(folder) / THOUGHTS_DIR
    if not (here / _WEIGHTS).is_file():
        return None
    try:
        settings = ThoughtSettings(**json.loads((here / _SETTINGS).read_text(encoding="utf-8")))
        weights = load_file(str(here / _WEIGHTS))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ModelError(f"cannot load the Quiet-STaR thoughts in {here}: {type(e).__name__}: {e}") from e
    model = QuietStarModel(base, settings, weights["start_embedding"] * 0)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    own_missing = [k for k in missing if not k.startswith("base.")]
    if own_missing or unexpected:
        raise ModelError(f"the Quiet-STaR thoughts in {here} do not fit this model: missing {own_missing}, unexpected {list(unexpected)}")
    force_mask_attention(base, lambda _: None)
    return model.to(base.get_input_embeddings().weight.device)
