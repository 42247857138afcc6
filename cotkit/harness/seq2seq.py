"""Encoder-decoder students (T5, Flan-T5, CodeT5) in the shared fine-tuning step.

Why apart from train.py: a causal model learns prompt + completion as one sequence with the
prompt's labels masked; an encoder-decoder model reads the prompt in its encoder and learns the
completion (ending with EOS) as its decoder's labels, so features, batches and the loss differ.
The loop, the optimizer, the schedule, resume and the checkpoint are train.py's, unchanged;
train.py only asks here which model class to load and which objective trains it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cotkit.errors import ConfigError, DataError, ModelError
from cotkit.harness.train import Objective, TrainExample, WeightedSFT, completion_ids, render_prompt_ids


def is_encoder_decoder(model: str) -> bool:
    """Whether `model` (alias, folder, .gguf file or hub id) is an encoder-decoder model, from its config alone.

    Nothing is downloaded or converted. A model whose config cannot be read here (a served name, an
    alias or hub id with no local copy offline) counts as a decoder: loading it as one says what is
    wrong with it.
    """
    from transformers import AutoConfig

    from cotkit.models import resolve_model

    try:
        return bool(getattr(AutoConfig.from_pretrained(resolve_model(model, download=False)), "is_encoder_decoder", False))
    except (ModelError, OSError, ValueError):
        return False


def load_seq2seq_lm(path: str) -> tuple[Any, Any]:
    """Encoder-decoder model (fp32 master weights) and tokenizer from a folder or hub id."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load encoder-decoder model {path!r} for training: {e}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def seq2seq_objective(objective: Objective) -> Objective:
    """The objective that trains an encoder-decoder model where `objective` would train a causal one.

    Plain weighted SFT becomes `Seq2SeqSFT` with the same normalisation; objectives built around
    one causal sequence (preference pairs, custom loss functions) are refused.
    """
    if isinstance(objective, Seq2SeqSFT):
        return objective
    if type(objective) is WeightedSFT:
        return Seq2SeqSFT(objective.normalization)
    raise ConfigError(f"objective {type(objective).__name__} trains causal models only: this model is encoder-decoder")


class Seq2SeqSFT(WeightedSFT):
    """Weighted SFT of an encoder-decoder model: the prompt is the encoder's input, the completion + EOS its labels.

    `max_length` caps each side on its own (the encoder's prompt and the decoder's labels), keeping
    their first tokens. A chat prompt is rendered with the tokenizer's chat template, as the hf
    backend renders it; a model without one takes text prompts only.
    """

    packable = False  # an encoder reads one prompt: there is no causal context to pack examples into (sft.packing is refused)

    def features(self, tokenizer: Any, items: Sequence[Any], max_length: int) -> list[dict[str, Any]]:
        out = []
        for i, item in enumerate(items):
            ex = item if isinstance(item, TrainExample) else TrainExample.from_dict(item)
            if isinstance(ex.prompt, list) and not getattr(tokenizer, "chat_template", None):
                raise DataError(
                    f"training example {i}: a chat prompt, but this encoder-decoder model has no chat template: use a text prompt style (zeroshot, fewshot)"
                )
            labels = completion_ids(tokenizer, ex.completion)[:max_length]
            out.append({
                "input_ids": render_prompt_ids(tokenizer, ex.prompt)[:max_length] or _empty_prompt(tokenizer),
                "labels": labels, "weight": float(ex.weight), "n_label": len(labels),
            })  # fmt: skip
        return out

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
        return pad_seq2seq_batch(features, pad_id)

    def loss(self, model: Any, batch: dict[str, Any], normalizer: float) -> tuple[Any, dict[str, float]]:
        seq_nll, n_tokens = seq2seq_sequence_nll(model, batch)
        weights = batch["weight"].to(seq_nll.dtype)
        loss = (weights * seq_nll).sum() / normalizer
        return loss, {"nll_per_token": float(seq_nll.sum().detach() / n_tokens.sum().clamp(min=1))}


def _empty_prompt(tokenizer: Any) -> list[int]:
    # An encoder needs at least one position to attend to; an empty prompt reads as a lone EOS.
    return [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id]


def pad_seq2seq_batch(features: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-padded encoder ids with their attention mask, decoder labels padded with -100, and the weights."""
    import torch

    enc_width = max(len(f["input_ids"]) for f in features)
    dec_width = max(1, max(len(f["labels"]) for f in features))
    ids = torch.full((len(features), enc_width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), enc_width), dtype=torch.long)
    labels = torch.full((len(features), dec_width), -100, dtype=torch.long)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[i, : len(f["input_ids"])] = 1
        labels[i, : len(f["labels"])] = torch.tensor(f["labels"], dtype=torch.long)
    weight = torch.tensor([float(f.get("weight", 1.0)) for f in features])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "weight": weight}


def seq2seq_sequence_nll(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Summed NLL of each sequence's decoder labels given its encoder input, and how many labels there are.

    The model is given the labels so that it builds its own decoder inputs (labels shifted right
    after its decoder start token), whatever wraps it (peft, DDP); its mean loss is not used.
    """
    import torch
    import torch.nn.functional as F

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"], use_cache=False)
    logits = out.logits.float()
    target = batch["labels"]
    tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="none")
    tok = tok.view(target.shape)
    valid = (target != -100).to(tok.dtype)
    return (tok * valid).sum(dim=1), valid.sum(dim=1).to(torch.long)


def lora_task_type(model: Any) -> str:
    """peft's task type for a model: SEQ_2_SEQ_LM for encoder-decoder models, else CAUSAL_LM."""
    return "SEQ_2_SEQ_LM" if getattr(model.config, "is_encoder_decoder", False) else "CAUSAL_LM"
