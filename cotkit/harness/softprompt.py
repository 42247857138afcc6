"""Soft prompts (prompt tuning, Lester et al. 2021): trainable input embeddings put before every prompt.

Why a small module of our own instead of peft's `PeftModelForCausalLM` forward: peft prepends the
virtual tokens on *every* call and ignores `position_ids`, so it cannot run inside the hf backend's
KV-cached decode loop (which prefills once, then feeds one token per step with explicit positions),
and its logits are longer than the input ids, which the shared loss code does not expect. Here the
virtual tokens enter the cache once at prefill, every later call sees them through the attention
mask, and the positions of real tokens start after them whether the batch is right-padded
(training) or left-padded (decoding), so training and sampling see the same sequence.

peft is still what initialises the prompt (`PromptEmbedding`: TEXT takes the embeddings of a text's
tokens, repeated or cut to length; SAMPLE_VOCAB those of random vocabulary tokens) and what the
saved adapter is: `checkpoint/soft_prompt/` is a peft prompt-tuning folder (`adapter_config.json`,
`adapter_model.safetensors` with `prompt_embeddings`) that `PeftModel.from_pretrained` also loads,
next to the unchanged base weights, so the checkpoint folder stays a complete model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cotkit.errors import ConfigError, ModelError
from cotkit.models import cache_kwarg

#: The folder inside a checkpoint that holds its soft prompt.
SOFT_PROMPT_DIR = "soft_prompt"
_WEIGHTS = "adapter_model.safetensors"


def _module_class() -> type:
    """`SoftPromptModel` is an nn.Module; torch is imported only when one is built."""
    import torch

    class SoftPromptModel(torch.nn.Module):
        """A causal LM whose every input starts with `prompt` (virtual tokens x hidden size), the only trained weights."""

        def __init__(self, base: Any, prompt: Any, init_config: Any):
            super().__init__()
            self.base = base
            self.prompt = torch.nn.Parameter(prompt)
            self.init_config = init_config  # peft's PromptTuningConfig, written beside the weights
            self._cache_name = cache_kwarg(base)

        # The attributes the hf backend and accelerate read from a transformers model.
        @property
        def config(self) -> Any:
            return self.base.config

        @property
        def generation_config(self) -> Any:
            return self.base.generation_config

        @property
        def device(self) -> Any:
            return self.base.device

        @property
        def dtype(self) -> Any:
            return self.base.dtype

        @property
        def virtual_tokens(self) -> int:
            return int(self.prompt.shape[0])

        def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
            self.base.gradient_checkpointing_enable(**kwargs)

        def forward(
            self,
            input_ids: Any = None,
            attention_mask: Any = None,
            position_ids: Any = None,
            cache: Any = None,
            past_key_values: Any = None,
            logits_to_keep: int = 0,
            **kwargs: Any,
        ) -> Any:
            cache = cache if cache is not None else past_key_values
            n_virtual, (rows, width) = self.virtual_tokens, input_ids.shape
            seen = cache.get_seq_length() if cache is not None else 0
            prefill = seen == 0
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            if position_ids is None:  # transformers' default, counting the virtual tokens once they are cached
                position_ids = (seen + torch.arange(width, device=input_ids.device)).expand(rows, width)
                shift = n_virtual if prefill else 0
            else:  # the caller counts real tokens only
                shift = n_virtual
            embeds = self.base.get_input_embeddings()(input_ids)
            position_ids = position_ids + shift
            if prefill:
                virtual = self.prompt.to(embeds.dtype).unsqueeze(0).expand(rows, -1, -1)
                embeds = torch.cat([virtual, embeds], dim=1)
                first = torch.arange(n_virtual, device=input_ids.device).expand(rows, n_virtual)
                position_ids = torch.cat([first, position_ids], dim=1)
            mask = torch.cat([attention_mask.new_ones((rows, n_virtual)), attention_mask], dim=1)
            out = self.base(
                inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                **({self._cache_name: cache} if cache is not None else {}), logits_to_keep=logits_to_keep, **kwargs,
            )  # fmt: skip
            if prefill and not logits_to_keep:  # the virtual tokens predict nothing the caller asked about
                out.logits = out.logits[:, n_virtual:]
            return out

        def save_soft_prompt(self, folder: Path) -> None:
            """Write the peft prompt-tuning adapter folder."""
            from safetensors.torch import save_file

            folder.mkdir(parents=True, exist_ok=True)
            self.init_config.save_pretrained(str(folder))
            save_file({"prompt_embeddings": self.prompt.detach().float().cpu().contiguous()}, str(folder / _WEIGHTS))

    return SoftPromptModel


_CLASS: type | None = None


def soft_prompt_class() -> type:
    """The `SoftPromptModel` class (built once)."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _module_class()
    return _CLASS


def is_soft_prompted(model: Any) -> bool:
    """Whether `model` is a base model wrapped with a soft prompt."""
    return _CLASS is not None and isinstance(model, _CLASS)


def add_soft_prompt(base: Any, tokens: int, init_text: str, tokenizer_path: str) -> Any:
    """`base` frozen under a new trainable soft prompt of `tokens` virtual tokens.

    With `init_text` the prompt starts as the embeddings of that text's tokens (peft's TEXT rule:
    cut or repeated to `tokens`), for example a few-shot prompt; without, as the embeddings of
    random vocabulary tokens drawn from the seeded torch RNG (peft's SAMPLE_VOCAB).
    """
    from peft import PromptTuningConfig, PromptTuningInit
    from peft.tuners.prompt_tuning import PromptEmbedding

    if getattr(base.config, "is_encoder_decoder", False):
        raise ConfigError("sft.soft_prompt trains causal models only: this model is encoder-decoder")
    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=tokens, token_dim=base.get_input_embeddings().weight.shape[1],
        num_transformer_submodules=1, num_attention_heads=getattr(base.config, "num_attention_heads", None),
        num_layers=getattr(base.config, "num_hidden_layers", None),
        prompt_tuning_init=PromptTuningInit.TEXT if init_text else PromptTuningInit.SAMPLE_VOCAB,
        prompt_tuning_init_text=init_text or None, tokenizer_name_or_path=tokenizer_path if init_text else None,
        base_model_name_or_path=getattr(base.config, "_name_or_path", None),
    )  # fmt: skip
    prompt = PromptEmbedding(config, base.get_input_embeddings()).embedding.weight.detach().clone().float()
    for p in base.parameters():
        p.requires_grad_(False)
    return soft_prompt_class()(base, prompt, config)


def with_soft_prompt(model: Any, path: str | Path) -> Any:
    """`model` (loaded from `path`) wrapped with the soft prompt saved in `path/soft_prompt`, or `model` unchanged where there is none.

    A sampling backend calls this after loading a checkpoint, so a run's prompt-tuned model samples
    and scores with its prompt.
    """
    folder = Path(path) / SOFT_PROMPT_DIR
    if not (folder / _WEIGHTS).is_file():
        return model
    from peft import PromptTuningConfig
    from safetensors.torch import load_file

    try:
        prompt = load_file(str(folder / _WEIGHTS))["prompt_embeddings"]
        config = PromptTuningConfig.from_pretrained(str(folder))
    except Exception as e:
        raise ModelError(f"cannot load the soft prompt in {folder}: {type(e).__name__}: {e}") from e
    width = model.get_input_embeddings().weight.shape[1]
    if prompt.ndim != 2 or prompt.shape[1] != width:
        raise ModelError(f"soft prompt in {folder} has shape {tuple(prompt.shape)}; the model's embeddings are {width} wide")
    wrapped = soft_prompt_class()(model, prompt.to(model.device), config)
    return wrapped.eval()
