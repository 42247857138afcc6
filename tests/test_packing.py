"""Sequence packing in the shared fine-tuning step (`sft.packing`) on the tiny model.

A packed row must train each example exactly as if it were alone: the same summed NLL and the same
gradient, with attention and positions restarting per example. The data order stays a pure function
of (seed, step), so a killed packed run resumes to the same weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cotkit.errors import ConfigError
from cotkit.harness.preference import DPONLLObjective, PreferencePair
from cotkit.harness.train import (
    LossFnObjective,
    PackedOrder,
    SFTConfig,
    TrainExample,
    WeightedSFT,
    pack_batch,
    packed_model_inputs,
    pad_batch,
    sequence_nll,
    train,
)

# Signed, unequal weights: a packed example must keep its own weight.
ITEMS = [
    TrainExample(f"Q: What is {a} plus {b}?\nA:", f" {a} + {b} = {a + b}. The answer is {a + b}.", weight=1.0 + a - 0.5 * b)
    for a in range(4)
    for b in range(3)
]

pytestmark = pytest.mark.usefixtures("one_thread")


def load(tiny_model: Path, attention: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention), AutoTokenizer.from_pretrained(tiny_model)


def weighted_nll_and_grads(model, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each example's summed NLL, and the gradient of their weighted sum."""
    model.zero_grad()
    nll, _ = sequence_nll(model, batch)
    (batch["weight"] * nll).sum().backward()
    return nll.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_example_has_its_unpacked_nll_and_gradient(tiny_model, attention):
    model, tok = load(tiny_model, attention)
    feats = WeightedSFT().features(tok, ITEMS[:7], 512)
    packed = pack_batch([feats[:3], feats[3:5], feats[5:]], tok.pad_token_id)  # rows of 3, 2 and 2 examples, padded
    alone = pad_batch(feats, tok.pad_token_id)
    nll_packed, grads_packed = weighted_nll_and_grads(model, packed)
    nll_alone, grads_alone = weighted_nll_and_grads(model, alone)
    assert torch.allclose(nll_packed, nll_alone, rtol=1e-5, atol=1e-4)
    assert sequence_nll(model, packed)[1].tolist() == sequence_nll(model, alone)[1].tolist()
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(grads_packed, grads_alone))
    # The check has teeth: with the plain padding mask the second example of a row sees the first.
    n0, n1 = len(feats[0]["input_ids"]), len(feats[1]["input_ids"])
    with torch.no_grad():
        leaky = model(input_ids=packed["input_ids"][:1], attention_mask=packed["attention_mask"][:1], position_ids=packed["position_ids"][:1])
        second = model(input_ids=torch.tensor([feats[1]["input_ids"]]))
    assert not torch.allclose(leaky.logits[0, n0 : n0 + n1], second.logits[0], atol=1e-3)


def test_kernels_without_masks_get_one_row_whose_position_ids_mark_each_example(tiny_model):
    """FlashAttention reads example starts from position ids; transformers does the same for sdpa when no mask is given."""
    model, tok = load(tiny_model, "sdpa")
    feats = WeightedSFT().features(tok, ITEMS[:5], 512)
    packed = pack_batch([feats[:3], feats[3:]], tok.pad_token_id)
    inputs = packed_model_inputs(model, packed, attention="flash_attention_2")
    assert "attention_mask" not in inputs and inputs["input_ids"].shape == (1, packed["input_ids"].numel())
    with torch.no_grad():
        logits = model(**inputs).logits[0]
        at = 0
        for row, pack in enumerate([feats[:3], feats[3:]]):
            for f in pack:
                n = len(f["input_ids"])
                alone = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]
                start = row * packed["input_ids"].shape[1] + at
                assert torch.allclose(logits[start : start + n], alone, atol=1e-4)
                at += n
            at = 0


def test_packs_hold_whole_examples_within_the_budget_and_each_epoch_visits_every_example_once():
    lengths = [30, 250, 120, 64, 10, 200, 90, 33, 128, 256, 75, 5]
    order = PackedOrder(lengths, budget=256, seed=3)
    packs = [p for step in range(6) for p in order.step_packs(step, per_step=2)]
    assert all(sum(lengths[i] for i in p) <= 256 for p in packs)
    first_epoch = order.epochs[0]
    assert sorted(i for p in first_epoch for i in p) == list(range(len(lengths)))
    assert packs[: len(first_epoch)] == first_epoch
    # A pure function of (lengths, budget, seed, step): a fresh order (a resumed run) asks for step 5 first.
    assert PackedOrder(lengths, 256, seed=3).step_packs(5, 2) == order.step_packs(5, 2)
    assert PackedOrder(lengths, 256, seed=4).step_packs(0, 4) != order.step_packs(0, 4)
    assert order.epochs[1] != order.epochs[0]  # every epoch packs a new permutation


def test_a_packed_step_is_normalised_over_the_examples_inside_its_packs(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = SFTConfig(learning_rate=1e-3, warmup_steps=0, batch_size=2, grad_accum=1, max_length=96, packing=True)
    result = train(str(tiny_model), ITEMS, cfg, 3, tmp_path / "packed", seed=2)
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    feats = WeightedSFT().features(tok, ITEMS, cfg.max_length)
    step0 = [feats[i] for p in PackedOrder([len(f["input_ids"]) for f in feats], 96, seed=2).step_packs(0, 2) for i in p]
    assert len(step0) > 2  # two packed sequences hold more than two examples
    with torch.no_grad():
        nll, n_tokens = sequence_nll(model, pad_batch(step0, tok.pad_token_id))
    expected = float((torch.tensor([f["weight"] for f in step0]) * nll).sum() / n_tokens.sum())
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)
    assert result.packing and result.examples_trained > 3 * 2
    # Packed sequences split into micro-batches differently: the same steps.
    split = SFTConfig(learning_rate=1e-3, warmup_steps=0, batch_size=1, grad_accum=2, max_length=96, packing=True)
    assert train(str(tiny_model), ITEMS, split, 3, tmp_path / "split", seed=2).losses == pytest.approx(result.losses, rel=1e-4)


def test_packing_is_refused_for_objectives_that_do_not_train_on_sft_examples(tiny_model, tmp_path):
    cfg = SFTConfig(learning_rate=1e-3, warmup_steps=0, packing=True)
    pairs = [PreferencePair("Q: 1 plus 1?\nA:", " 2.", " 3.")]
    with pytest.raises(ConfigError, match=r"^sft.packing is for SFT objectives .*DPONLLObjective"):
        train(str(tiny_model), pairs, cfg, 1, tmp_path / "dpo", objective=DPONLLObjective(str(tiny_model)))
    with pytest.raises(ConfigError, match="LossFnObjective"):
        train(str(tiny_model), ITEMS, cfg, 1, tmp_path / "fn", objective=LossFnObjective(lambda model, batch: sequence_nll(model, batch)[0].sum()))


def test_epochs_count_packed_sequences_when_packing(tiny_model):
    """Methods that train for --epochs get a pass over the data, not ~10 passes, when their steps hold packs."""
    from cotkit import ConfigError, capped_steps
    from cotkit.harness.train import packs_per_epoch

    items = ITEMS * 6
    cfg = SFTConfig(batch_size=1, grad_accum=2, max_length=96, packing=True)
    packs = packs_per_epoch(str(tiny_model), items, cfg)
    assert 1 <= packs < len(items)  # several short examples share a pack
    assert capped_steps(items, 2.0, cfg, model=str(tiny_model)) == -(-2 * packs // 2)
    assert capped_steps(items, 2.0, SFTConfig(batch_size=1, grad_accum=2)) == len(items)  # unpacked: items
    with pytest.raises(ConfigError, match="need the model"):
        capped_steps(items, 1.0, cfg)
