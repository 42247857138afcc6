"""The DPO + NLL loss (cotkit.harness.preference) against TRL 1.16's own DPOTrainer on the same batch.

TRL computes `loss_type=["sigmoid", "sft"], loss_weights=[1, alpha]` in DPOTrainer._compute_loss;
we build a real DPOTrainer on the tiny model, take a batch from its own data pipeline and collator,
and compare its loss with ours on exactly those token ids.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

from cotkit.errors import ConfigError  # noqa: E402
from cotkit.harness.preference import DPONLLObjective, PreferencePair, dpo_nll_loss, pair_features  # noqa: E402

PAIRS = [
    ("Q: Natalia sold 48 clips in April and 12 more in May. How many clips did she sell?\nA:",
     " She sold 48 + 12 = 60 clips. The answer is 60.", " She sold 48 clips. The answer is 48."),
    ("Q: Ken baked 7 cookies and ate 2. How many are left?\nA:",
     " 7 - 2 = 5. The answer is 5.", " Ken baked 7 cookies, he ate 2 of them, so 7 + 2 = 9 are left. The answer is 9."),
    ("Q: Betty has 3 books and buys 4 more. How many books?\nA:",
     " 3 + 4 = 7 books in all. The answer is 7.", " The answer is 12."),
]  # fmt: skip


@pytest.fixture(scope="module")
def make_trainer(tiny_model, tmp_path_factory):
    """make(alpha) -> (a real TRL DPOTrainer, its policy, its reference, one batch of all pairs from its pipeline).

    Policy = the tiny model with seeded noise added, reference = the tiny model. Every trainer gets
    fresh model objects: TRL patches the model it is given, and a second trainer on the same
    objects changes what the first computes.
    """
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])

    def make(alpha: float):
        policy = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        ref = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():  # the policy must differ from the reference or every log-ratio is 0
            for p in policy.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        args = trl.DPOConfig(
            output_dir=str(tmp_path_factory.mktemp("trl")), loss_type=["sigmoid", "sft"], loss_weights=[1.0, alpha],
            beta=0.1, per_device_train_batch_size=len(PAIRS), report_to=[], use_cpu=True, bf16=False, max_length=None,
        )  # fmt: skip
        trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
        return trainer, policy, ref, batch

    return make


def _trl_loss(trainer, batch) -> float:
    trainer.model.eval()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, dict(batch)))


def _ours(policy, ref, batch, alpha: float, normalization: str) -> float:
    obj = DPONLLObjective("unused", beta=0.1, nll_weight=alpha, nll_normalization=normalization)
    obj.reference = ref
    ours = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100),
    }
    policy.eval()
    with torch.no_grad():
        loss, _ = obj.loss(policy, ours, normalizer=len(PAIRS))
    return float(loss)


@pytest.mark.parametrize("alpha", [1.0, 0.0, 0.5])
def test_batch_token_normalization_equals_trl(make_trainer, alpha):
    trainer, policy, ref, batch = make_trainer(alpha)
    expected = _trl_loss(trainer, batch)
    got = _ours(policy, ref, batch, alpha, "batch_tokens")
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_paper_normalization_is_per_winner_and_equals_trl_on_one_pair(make_trainer):
    trainer, policy, ref, batch = make_trainer(1.0)
    # Winners of different lengths: the paper's per-winner mean differs from TRL's batch-token mean ...
    paper = _ours(policy, ref, batch, 1.0, "winner_tokens")
    trl_form = _ours(policy, ref, batch, 1.0, "batch_tokens")
    assert abs(paper - trl_form) > 1e-4
    # ... and on a single pair they coincide.
    one = {k: v[[0, len(PAIRS)]] for k, v in batch.items() if hasattr(v, "shape")}
    expected = _trl_loss(trainer, one)
    obj = DPONLLObjective("unused", beta=0.1, nll_weight=1.0)
    obj.reference = ref
    mine = {"input_ids": one["input_ids"], "attention_mask": one["attention_mask"],
            "labels": one["input_ids"].masked_fill(one["completion_mask"] == 0, -100)}  # fmt: skip
    with torch.no_grad():
        loss, _ = obj.loss(policy, mine, normalizer=1.0)
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_loss_by_hand():
    """log 2 + α·NLL/|w| when policy = reference; the DPO gradient pushes winners up and losers down."""
    pc = torch.tensor([-12.0, -30.0], requires_grad=True)
    pr = torch.tensor([-20.0, -10.0], requires_grad=True)
    losses, parts = dpo_nll_loss(pc, pr, pc.detach(), pr.detach(), torch.tensor([4, 10]), beta=0.1, nll_weight=1.0)
    assert losses.tolist() == pytest.approx([math.log(2) + 3.0, math.log(2) + 3.0])
    assert parts["chosen_rewards"].tolist() == [0.0, 0.0]
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descending the loss raises log π(w), lowers log π(l)
    # A margin already in favour of the winner lowers the DPO term below log 2.
    losses, parts = dpo_nll_loss(torch.tensor([-5.0]), torch.tensor([-25.0]), torch.tensor([-10.0]), torch.tensor([-20.0]),
                                 torch.tensor([5]), beta=0.1, nll_weight=0.0)  # fmt: skip
    assert float(losses[0]) == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    assert float(parts["chosen_rewards"][0] - parts["rejected_rewards"][0]) == pytest.approx(1.0)


def test_nll_normalizations_divide_the_winners_nll_as_named():
    """winner_tokens: NLL(w)/|w| per pair (the paper); batch_tokens: ΣNLL/Σ|w| of the batch (TRL); none: NLL(w)."""
    pc, pr, tokens = torch.tensor([-12.0, -30.0]), torch.tensor([-20.0, -10.0]), torch.tensor([4, 10])

    def nll(normalization: str, alpha: float = 1.0) -> list[float]:
        losses, parts = dpo_nll_loss(pc, pr, pc, pr, tokens, beta=0.1, nll_weight=alpha, nll_normalization=normalization)
        assert losses.tolist() == pytest.approx([math.log(2) + alpha * x for x in parts["nll"].tolist()])
        return parts["nll"].tolist()

    assert nll("winner_tokens") == pytest.approx([12 / 4, 30 / 10])
    assert nll("batch_tokens") == pytest.approx([42 / 14, 42 / 14])
    assert nll("none", alpha=0.5) == pytest.approx([12.0, 30.0])
    # The objective's default is the paper's, and an unknown name is one line naming the option.
    assert DPONLLObjective("unused").nll_normalization == "winner_tokens" == DPONLLObjective.NLL_NORMALIZATIONS[0]
    with pytest.raises(ConfigError, match="nll_normalization must be one of winner_tokens, batch_tokens, none"):
        DPONLLObjective("unused", nll_normalization="sequence")


def test_pair_features_mask_prompt_and_end_with_eos(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    f = pair_features(tok, PreferencePair("Q: 1 + 1?\nA:", " 2. The answer is 2.", " 3."), max_length=512)
    for side in ("chosen", "rejected"):
        ids, labels = f[f"{side}_ids"], f[f"{side}_labels"]
        assert len(ids) == len(labels) and labels[-1] == tok.eos_token_id
        n_prompt = sum(1 for t in labels if t == -100)
        assert tok.decode(ids[:n_prompt]).endswith("A:") and all(t != -100 for t in labels[n_prompt:])
    # A prompt that fills max_length leaves nothing to compare: the pair is dropped.
    assert pair_features(tok, PreferencePair("Q: " + "word " * 200, " a", " b"), max_length=16) is None
    # So is a pair with one side too long to keep its EOS: cut, it would differ from the other in how it ends.
    pair = PreferencePair("Q: 1 + 1?\nA:", " 2.", " 3, " + "and then some more words " * 20)
    whole = pair_features(tok, pair, max_length=512)
    assert whole is not None and pair_features(tok, pair, max_length=len(whole["rejected_ids"]) - 1) is None
    assert pair_features(tok, pair, max_length=len(whole["rejected_ids"])) == whole
