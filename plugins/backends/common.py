"""What every built-in backend shares: prompt rendering and tokenization, seeds, stop strings, parameter checks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cotkit import SEED_MASK, ConfigError, ModelError, Prompt, SamplingParams


def prompt_seed(base: int, text: str) -> int:
    """A request seed from a base seed and the rendered prompt, independent of the prompt's position."""
    digest = hashlib.sha256(f"{base}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & SEED_MASK


def render_prompt(tokenizer: Any, prompt: Prompt, model_name: str) -> str:
    """A string prompt as-is; chat messages through the tokenizer's chat template with a generation prompt."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"model {model_name} has no chat template, so it cannot take a chat prompt: use --style fewshot or zeroshot"
        )
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, prompt: Prompt, model_name: str) -> list[int]:
    """Token ids of a prompt; a chat template writes its own special tokens, so none are added to it."""
    text = render_prompt(tokenizer, prompt, model_name)
    return list(tokenizer(text, add_special_tokens=isinstance(prompt, str)).input_ids)


def pair_ids(tokenizer: Any, context: Prompt, continuation: str, model_name: str) -> tuple[list[int], int]:
    """(context + continuation token ids, number of continuation tokens) for log-likelihood scoring.

    Context and continuation are tokenized together and split where the context's tokens end,
    with the context's trailing whitespace moved to the continuation (as lm-eval does), so the
    continuation is scored in the tokenization the model would produce. An empty context starts
    from the BOS token (EOS when there is none).
    """
    ctx = render_prompt(tokenizer, context, model_name)
    trailing = len(ctx) - len(ctx.rstrip())
    if trailing:
        ctx, continuation = ctx[:-trailing], ctx[-trailing:] + continuation
    special = isinstance(context, str)
    ctx_ids = list(tokenizer(ctx, add_special_tokens=special).input_ids) if ctx else []
    if not ctx_ids:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        cont_ids = list(tokenizer(continuation, add_special_tokens=False).input_ids)
        return [start, *cont_ids], len(cont_ids)
    whole = list(tokenizer(ctx + continuation, add_special_tokens=special).input_ids)
    return whole, len(whole) - len(ctx_ids)


def cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """`text` up to the earliest of the stop strings in it (the stop string left out), or None when it holds none."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text[:cut] if cut >= 0 else None


def check_params(params: SamplingParams) -> None:
    """Raise ConfigError for sampling parameters no backend can honour."""
    if params.n < 1:
        raise ConfigError(f"n={params.n}: expected at least 1 sample per prompt")
    if params.temperature < 0:
        raise ConfigError(f"temperature={params.temperature}: expected 0 (greedy) or more")
    if not 0 < params.top_p <= 1:
        raise ConfigError(f"top_p={params.top_p}: expected a value in (0, 1]")
    if params.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={params.max_new_tokens}: expected at least 1")


def is_oom(e: BaseException) -> bool:
    """True for an out-of-memory error from torch (CPU or CUDA), vLLM or Python."""
    if isinstance(e, MemoryError):
        return True
    text = str(e).lower()
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in text or "can't allocate memory" in text
