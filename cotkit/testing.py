"""Test helpers: a tiny random causal LM with a real tokenizer, and the plugin contract checks.

Tests exercise real tokenization, generation and training without downloading weights: the
tokenizer is trained here (byte-level BPE, so every string round-trips) and the model is a
two-layer Llama built from a config.

`check_task_contract` and `check_verifier_contract` are what tests/test_contracts.py runs on every
built-in task and verifier; a plugin package runs them on its own plugins the same way.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------- contract checks


def check_task_contract(task: Any) -> None:
    """A task's examples of its train, held-out and eval splits and its prompts in every style (AssertionError if not).

    Every split has examples with unique ids, a question, a gold answer and an answer kind; train
    and held-out share no example; unknown splits and prompt styles raise UnknownNameError; every
    prompt style renders, a hint changes it, and stop sequences are non-empty strings.
    """
    from cotkit.contracts import PROMPT_STYLES
    from cotkit.errors import UnknownNameError

    ids: dict[str, set[str]] = {}
    for split in dict.fromkeys((task.train_split, task.heldout_split, task.eval_split)):
        examples = task.examples(split)
        assert examples, f"{task.full_name} {split}: no examples"
        ids[split] = {ex.id for ex in examples}
        assert len(ids[split]) == len(examples), f"{task.full_name} {split}: ids are not unique"
        for ex in examples:
            _check_example(ex, task)
    if task.heldout_split != task.train_split:
        assert not ids[task.train_split] & ids[task.heldout_split], f"{task.full_name}: train and held-out share questions"
    _assert_raises(UnknownNameError, lambda: task.examples("no-such-split"), f"{task.full_name}: an unknown split")

    for ex in task.examples(task.train_split, limit=2) + task.examples(task.heldout_split, limit=1):
        for style in PROMPT_STYLES:
            prompt = task.prompt(ex, style)
            _check_prompt(prompt)
            assert task.prompt(ex, style, hint=True) != prompt, f"{task.full_name} {style}: the hint changes nothing"
            stops = task.stop_sequences(style)
            assert isinstance(stops, list) and all(isinstance(s, str) and s for s in stops)
        sentence = task.answer_sentence(ex)
        assert isinstance(sentence, str) and sentence.strip()
    _assert_raises(UnknownNameError, lambda: task.prompt(ex, "no-such-style"), f"{task.full_name}: an unknown prompt style")


def check_verifier_contract(
    verifier: Any, examples: list[Any], right: Callable[[Any], str], wrong: Callable[[Any], str], stop: list[str]
) -> None:
    """A verifier's batch shape (AssertionError if not): one verdict per sample, in order, each judged alone;
    `error` verdicts with a reason for a non-string completion, an empty gold answer and a non-sample.

    `examples` are three of a task the verifier scores; `right` / `wrong` write a completion answering one.
    """
    from cotkit.types import Sample, Status, Verdict

    good = [Sample(examples[0], right(examples[0]), stop=stop), Sample(examples[1], wrong(examples[1]), stop=stop),
            Sample(examples[2], right(examples[2]), stop=stop)]  # fmt: skip
    bad = [
        Sample(examples[0], None, stop=stop),  # not a string
        Sample(dataclasses.replace(examples[1], answer=""), right(examples[1]), stop=stop),  # no gold answer
        "not a sample",
    ]
    assert verifier.verify([]) == []
    verdicts = verifier.verify(good + bad)
    assert len(verdicts) == len(good + bad) and all(isinstance(v, Verdict) for v in verdicts)
    assert [v.status for v in verdicts] == [Status.CORRECT, Status.INCORRECT, Status.CORRECT] + [Status.ERROR] * 3, verdicts
    assert all(v.reason for v in verdicts[3:]), "an error verdict says why"
    backwards = verifier.verify(list(reversed(good)))  # in order, each row judged alone
    assert [v.status for v in backwards] == [v.status for v in reversed(verdicts[:3])]


def _check_example(ex: Any, task: Any) -> None:
    from cotkit.types import AnswerKind, Example

    assert isinstance(ex, Example)
    assert isinstance(ex.id, str) and ex.id
    assert isinstance(ex.question, str) and ex.question.strip(), ex.id
    assert isinstance(ex.answer, str) and ex.answer.strip(), ex.id
    assert isinstance(ex.answer_kind, AnswerKind), ex.id
    assert isinstance(ex.raw, dict) and ex.raw, ex.id
    # a group (`bbh`) labels each example with its member task (`bbh:navigate`)
    assert ex.task == task.full_name or (task.group and task.subset is None and ex.task.startswith(f"{task.name}:")), ex.id
    if ex.answer_kind is AnswerKind.CHOICE:
        assert ex.choices, f"{ex.id}: a multiple-choice example lists its choices"


def _check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str):
        assert prompt.strip()
    else:
        assert isinstance(prompt, list) and prompt
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in prompt)
        assert prompt[-1]["role"] == "user" and prompt[-1]["content"].strip()


def _assert_raises(error: type[Exception], call: Callable[[], Any], what: str) -> None:
    try:
        call()
    except error:
        return
    raise AssertionError(f"{what} does not raise {error.__name__}")
