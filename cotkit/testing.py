"""A tiny random causal LM with a real byte-level BPE tokenizer, for tests and examples.

Tests exercise real tokenization, generation and training without downloading weights: the
tokenizer is trained here (byte-level BPE, so every string round-trips) and the model is a
two-layer Llama built from a config.
"""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Word-problem-like sentences, so merges look like those of a real English tokenizer."""
    rng = random.Random(seed)
    names = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis", "Tina", "Mark"]
    things = ["clips", "apples", "books", "dollars", "pages", "cookies", "marbles", "eggs", "pencils"]
    verbs = ["sold", "bought", "read", "earned", "baked", "found", "gave away", "collected"]
    lines = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        nm, th, vb = rng.choice(names), rng.choice(things), rng.choice(verbs)
        lines.append(
            f"Q: {nm} {vb} {a} {th} in April and {b} more in May. How many {th} did {nm} {vb} in total?\n"
            f"A: Let's think step by step. {nm} {vb} {a} + {b} = {a + b} {th}. The answer is {a + b}.\n"
            f"So the answer is (A). True or False? Yes, no, valid, invalid. \\boxed{{{a}/{b}}}\n"
        )
    return lines


def build_tiny_tokenizer(vocab_size: int = 1024, seed: int = 0):
    """A trained byte-level BPE tokenizer wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(path: str | Path, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random Llama and its tokenizer to `path` (a Hugging Face folder); return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tiny_tokenizer(seed=seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
