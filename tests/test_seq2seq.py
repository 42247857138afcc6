"""Encoder-decoder students: a tiny random T5 through the fine-tuning step, the hf backend and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cotkit.contracts import SamplingParams
from cotkit.errors import ConfigError, DataError
from cotkit.harness.seq2seq import Seq2SeqSFT, is_encoder_decoder, pad_seq2seq_batch, seq2seq_objective, seq2seq_sequence_nll
from cotkit.harness.train import LossFnObjective, SFTConfig, TrainExample, WeightedSFT, completion_ids, render_prompt_ids, train

pytestmark = pytest.mark.usefixtures("one_thread")

ITEMS = [
    TrainExample("Q: Ken sold 5 apples and 3 more. How many?\nA:", " 5 + 3 = 8 --> 8"),
    TrainExample("Q: Tina read 12 pages and 30 more. How many?\nA:", " 12 + 30 = 42 --> 42"),
    TrainExample("Q: Mark found 7 eggs and 2 more. How many?\nA:", " 7 + 2 = 9 --> 9"),
    TrainExample("Q: Julie baked 40 cookies and 9 more. How many?\nA:", " 40 + 9 = 49 --> 49"),
]
PROMPTS = ["Q: Natalia sold 48 clips in April and 12 more in May. How many clips?\nA:", "Q: Ken", "True or False?"]
SFT = SFTConfig(learning_rate=3e-2, warmup_steps=0, batch_size=4, grad_accum=1)


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    """A tiny random T5 with the tiny Llama's tokenizer; the decoder starts from the pad token, as T5's does."""
    from transformers import T5Config, T5ForConditionalGeneration

    from cotkit.testing import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-t5")
    tok = build_tiny_tokenizer()
    config = T5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def trained_t5(tiny_t5, tmp_path_factory) -> Path:
    """The tiny T5 after 16 SFT steps on ITEMS: its greedy answers take the `a + b = ...` form."""
    out = tmp_path_factory.mktemp("t5-sft") / "model"
    train(str(tiny_t5), ITEMS, SFT, 16, out, seed=0)
    return out


@pytest.fixture(scope="module")
def backend(trained_t5):
    from cotkit.models import load_backend

    be = load_backend("hf", model=str(trained_t5), batch_size=2)
    yield be
    be.close()


def _nll_per_token(folder: Path, item: TrainExample) -> float:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tok = AutoModelForSeq2SeqLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    batch = pad_seq2seq_batch(Seq2SeqSFT().features(tok, [item], 512), tok.pad_token_id)
    with torch.no_grad():
        nll, n = seq2seq_sequence_nll(model, batch)
    return float(nll[0] / n[0])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ------------------------------------------------------------------------------------ training


def test_features_put_the_prompt_in_the_encoder_and_the_completion_with_eos_in_the_labels(tiny_t5):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_t5)
    (f,) = Seq2SeqSFT().features(tok, [ITEMS[0]], 512)
    assert f["input_ids"] == render_prompt_ids(tok, ITEMS[0].prompt)
    assert f["labels"] == completion_ids(tok, ITEMS[0].completion) and f["labels"][-1] == tok.eos_token_id
    assert f["n_label"] == len(f["labels"])
    (cut,) = Seq2SeqSFT().features(tok, [ITEMS[0]], 4)
    assert cut["input_ids"] == f["input_ids"][:4] and cut["labels"] == f["labels"][:4]


def test_unit_weights_give_the_models_own_mean_token_loss(tiny_t5):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model, tok = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5), AutoTokenizer.from_pretrained(tiny_t5)
    feats = Seq2SeqSFT().features(tok, ITEMS[:3], 512)
    batch = pad_seq2seq_batch(feats, tok.pad_token_id)
    with torch.no_grad():
        ours, _ = Seq2SeqSFT().loss(model, batch, normalizer=sum(f["n_label"] for f in feats))
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_sft_steps_lower_the_loss_and_the_checkpoint_reloads_as_seq2seq(tiny_t5, trained_t5):
    from transformers import AutoModelForSeq2SeqLM

    assert is_encoder_decoder(str(tiny_t5)) and is_encoder_decoder(str(trained_t5))
    losses = json.loads((trained_t5 / "training.json").read_text())["losses"]
    assert losses[-1] < losses[0] / 2
    assert _nll_per_token(trained_t5, ITEMS[1]) < _nll_per_token(tiny_t5, ITEMS[1]) - 1.0
    assert type(AutoModelForSeq2SeqLM.from_pretrained(trained_t5)).__name__ == "T5ForConditionalGeneration"


def test_lora_trains_seq2seq_adapters_and_saves_them_merged(tiny_t5, tmp_path):
    cfg = SFTConfig(learning_rate=1e-2, warmup_steps=0, batch_size=4, grad_accum=1, lora=True, lora_r=4)
    result = train(str(tiny_t5), ITEMS, cfg, 3, tmp_path / "lora", seed=0)
    assert result.losses[-1] < result.losses[0]
    merged, base = _weights(tmp_path / "lora"), _weights(tiny_t5)
    assert set(merged) == set(base), "a plain T5 folder: adapters merged, no lora_ tensors"
    assert any(not torch.equal(merged[k], base[k]) for k in base)


def test_a_resumed_run_matches_an_uninterrupted_one(tiny_t5, tmp_path):
    cfg = SFTConfig(learning_rate=1e-2, warmup_steps=0, batch_size=2, grad_accum=1, save_every=1)
    whole = train(str(tiny_t5), ITEMS, cfg, 3, tmp_path / "whole", seed=1, state_dir=tmp_path / "state-whole")

    def stop_after_step_2(log):
        if log.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_t5), ITEMS, cfg, 3, tmp_path / "resumed", seed=1, state_dir=tmp_path / "state", on_step=stop_after_step_2)
    resumed = train(str(tiny_t5), ITEMS, cfg, 3, tmp_path / "resumed", seed=1, state_dir=tmp_path / "state")
    assert resumed.resumed_from_step == 2 and resumed.losses == whole.losses
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_what_an_encoder_decoder_model_cannot_train_on_is_refused_in_one_line(tiny_t5, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_t5)
    tok.chat_template = None
    with pytest.raises(DataError, match="training example 1: a chat prompt"):
        Seq2SeqSFT().features(tok, [ITEMS[0], TrainExample([{"role": "user", "content": "hi"}], "yo")], 512)
    assert seq2seq_objective(WeightedSFT("sequences")).normalization == "sequences"
    with pytest.raises(ConfigError, match="LossFnObjective trains causal models only"):
        seq2seq_objective(LossFnObjective(lambda model, batch: 0.0))
    with pytest.raises(ConfigError, match="sft.packing is for SFT objectives.*Seq2SeqSFT trains on unpacked sequences"):
        train(str(tiny_t5), ITEMS, SFTConfig(packing=True), 1, tmp_path / "packed")


# -------------------------------------------------------------------------------- hf backend


def test_greedy_batches_match_transformers_generate_one_prompt_at_a_time(backend):
    tok, model = backend.tokenizer, backend.model
    got = backend.generate([*PROMPTS, ITEMS[2].prompt], SamplingParams(n=2, max_new_tokens=10), progress=False)
    for prompt, gens in zip([*PROMPTS, ITEMS[2].prompt], got):
        enc = tok(prompt, return_tensors="pt")
        ref = model.generate(**enc, max_new_tokens=10, do_sample=False)
        assert gens[0] == gens[1]
        assert gens[0].text == tok.decode(ref[0], skip_special_tokens=True), "no prompt echo, same tokens as generate()"
        assert gens[0].n_tokens <= 10 and gens[0].finish_reason == ("length" if gens[0].n_tokens == 10 else "stop")
    assert got[-1][0].text.startswith(" + "), "the trained format"


def test_seeded_samples_are_the_same_alone_and_inside_any_batch(backend):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12)
    alone = backend.generate([PROMPTS[1]], params, progress=False, seeds=[1234])[0]
    mixed = backend.generate(PROMPTS, params, progress=False, seeds=[7, 1234, 8])[1]
    assert [g.text for g in alone] == [g.text for g in mixed]
    assert len({g.text for g in alone}) == 3
    assert all(g.n_tokens <= 12 for g in alone)


def test_max_new_tokens_and_stop_sequences(backend):
    [[short]] = backend.generate([PROMPTS[0]], SamplingParams(max_new_tokens=3), progress=False)
    assert (short.n_tokens, short.finish_reason) == (3, "length")
    [[full]] = backend.generate([PROMPTS[0]], SamplingParams(max_new_tokens=16), progress=False)
    stop = full.text[len(full.text) // 2 :][:2]
    [[stopped]] = backend.generate([PROMPTS[0]], SamplingParams(max_new_tokens=16, stop=[stop]), progress=False)
    assert stopped.text == full.text[: full.text.index(stop)] and stopped.finish_reason == "stop"
    assert stopped.n_tokens < full.n_tokens


def test_loglikelihood_is_the_decoders_log_probability_of_the_continuation(backend):
    tok, model = backend.tokenizer, backend.model
    pairs = [(ITEMS[0].prompt, ITEMS[0].completion), (PROMPTS[1], " sold 5"), (ITEMS[3].prompt + " ", "40 + 9")]
    got = backend.loglikelihood_greedy(pairs)
    for (ctx, cont), (lp, _) in zip(pairs, got):
        trailing = len(ctx) - len(ctx.rstrip())
        ctx, cont = ctx.rstrip(), ctx[len(ctx) - trailing :] + cont
        labels = tok(cont, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            mean_nll = model(input_ids=tok(ctx, return_tensors="pt").input_ids, labels=labels).loss
        assert lp == pytest.approx(-float(mean_nll) * labels.shape[1], rel=1e-4)
    assert backend.loglikelihood([pairs[1]]) == [got[1][0]]
    [[greedy]] = backend.generate([ITEMS[0].prompt], SamplingParams(max_new_tokens=6), progress=False)
    [(_, is_greedy)] = backend.loglikelihood_greedy([(ITEMS[0].prompt, greedy.text)])
    assert is_greedy, "what greedy decoding produced is greedy when scored"


# -------------------------------------------------------------------------------- evaluation


def test_in_process_evaluation_scores_the_student(host, data_dir, backend):
    from cotkit.harness.evaluate import evaluate
    from cotkit.harness.verify import make_verifier

    task = host.task("gsm8k", data_dir=data_dir)
    summary = evaluate(task, task.examples(task.heldout_split, limit=2), backend, make_verifier(None, task),
                       style="zeroshot", params=SamplingParams(max_new_tokens=8), progress=False)  # fmt: skip
    assert summary["n"] == 2 and summary["ci_low"] <= summary["accuracy"] <= summary["ci_high"]


def test_cotkit_sample_and_eval_run_on_a_t5_folder(cli, data_dir, trained_t5, tmp_path):
    out = tmp_path / "samples.jsonl"
    sampled = cli("--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", trained_t5, "--limit", "2",
                  "--style", "zeroshot", "--max-new-tokens", "8", "--output", out)  # fmt: skip
    assert sampled.exit_code == 0, sampled.stderr
    assert len(out.read_text().splitlines()) == 2 * 4  # cotkit sample's default -n is 4
    evaluated = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", trained_t5, "--limit", "3",
                    "--max-new-tokens", "8", "--json")  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.stderr
    summary = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert summary["n"] == 3 and summary["task"] == "gsm8k"
