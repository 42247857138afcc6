"""A soft prompt that starts as a task's few-shot demonstrations (TRICE's notebook, and STaR compared with it on one parameterization).

Prompt tuning from the embeddings of a few-shot prompt's text, one virtual token per token: the
untrained soft prompt then *is* the few-shot prompt (up to tokenization at the seam), so a method
can evaluate and sample its base model with that text as a plain prefix and train a prompt that
begins exactly where few-shot prompting stands.
"""

from __future__ import annotations

from typing import Any

from cotkit import ConfigError, Example


def fewshot_text(task: Any, example: Example) -> str:
    """The text the task's few-shot prompt puts before its query (its demonstrations)."""
    fewshot, query = task.prompt(example, "fewshot"), task.prompt(example, "bare")
    if not isinstance(fewshot, str) or not fewshot.endswith(query) or fewshot == query:
        raise ConfigError(f"soft_prompt_init=fewshot: task {task.full_name} has no few-shot text prompt to start from; use --soft-prompt-init sft")
    return fewshot[: -len(query)]


def token_count(model: str, text: str) -> int:
    """How many tokens `text` is to the model's tokenizer, as peft counts them for a TEXT-initialized prompt."""
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(model)(text)["input_ids"])
