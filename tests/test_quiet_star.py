"""Quiet-STaR (`--method quiet-star`): the thinking wrapper on tiny models of several architectures, its loss, the method.

The parallel rollout is checked against the definition: the logits of every pass of the thought at
position t equal those of one plain run of prefix + thought + true tokens, on Llama, Qwen2 and
GPT-2 (absolute position embeddings) built from configs, and on the fallback that runs thoughts as
ordinary rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cotkit import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]

torch = pytest.importorskip("torch")


def tiny(arch: str, tokenizer, seed: int = 0):
    """A 2-layer random model of `arch` over the tiny tokenizer's vocabulary."""
    from transformers import (
        AutoModelForCausalLM,
        Gemma2Config,
        GPT2Config,
        LlamaConfig,
        Qwen2Config,
    )

    vocab = len(tokenizer)
    common = {"vocab_size": vocab, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    configs = {
        "llama": lambda: LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **common),
        "qwen2": lambda: Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **common),
        "gpt2": lambda: GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common),
        "gemma2": lambda: Gemma2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, **common),
    }
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(configs[arch]()).float()


@pytest.fixture(scope="module")
def tokenizer():
    from cotkit.testing import build_tiny_tokenizer

    return build_tiny_tokenizer()


def wrap(arch, tokenizer, logs=None, **settings):
    from cotkit_plugins.methods.quiet_star_model import ThoughtSettings, add_thoughts

    s = ThoughtSettings(**{"n_ahead": 5, "n_ahead_talk": 3, "n_passes": 2, **settings})
    model = add_thoughts(tiny(arch, tokenizer), tokenizer, s, log=(logs.append if logs is not None else lambda _: None))
    return model.eval()  # GPT-2's dropout would make two runs differ


def batch(tokenizer, texts):
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


TEXTS = ["Natalia sold 48 clips in April.", "Weng earns 12 dollars an hour for babysitting today."]


def plain_thought_logits(model, ids, row, t, thought, talk):
    """Logits of prefix x[:t+1] + START + thought + END + x[t+1 : t+talk] run as one ordinary sequence."""
    s = model.settings
    parts = [
        model.embed(ids[row : row + 1, : t + 1]),
        model.marker("start", (1, 1), torch.float32),
        model.embed(thought[None]),
        model.marker("end", (1, 1), torch.float32),
        model.embed(ids[row : row + 1, t + 1 : t + talk]),
    ]
    out = model.base(inputs_embeds=torch.cat(parts, 1), use_cache=False).logits[0]
    return out[t : t + s.n_ahead + talk - 1]  # the output of pass j sits at t + j


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_parallel_thoughts_equal_a_plain_run_of_prefix_and_thought(arch, tokenizer, one_thread):
    model = wrap(arch, tokenizer)
    assert model.settings.parallel, "the 4-D path works on this architecture"
    ids, mask = batch(tokenizer, TEXTS)
    with torch.no_grad():
        r = model.rollout(ids, mask, keep_logits=True)
    s = model.settings
    assert len(r.pass_logits) == s.n_ahead + s.n_ahead_talk - 1
    assert r.thought_tokens.shape == (*ids.shape, s.thought_tokens)
    short = int(mask[0].sum())  # row 0 is right-padded
    for row, t in [(0, 0), (0, short - 4), (1, 3), (1, ids.shape[1] - 4)]:
        talk = s.n_ahead_talk
        plain = plain_thought_logits(model, ids, row, t, r.thought_tokens[row, t], talk)
        parallel = torch.stack([p[row, t] for p in r.pass_logits])
        assert torch.allclose(parallel, plain, atol=1e-5), (row, t, (parallel - plain).abs().max())


def test_the_fallback_rows_equal_a_plain_run_at_their_random_positions(tokenizer, one_thread):
    model = wrap("llama", tokenizer, parallel=False, fallback_positions=3)
    ids, mask = batch(tokenizer, TEXTS)
    with torch.no_grad():
        r = model.rollout(ids, mask, keep_logits=True)
    where = r.thought_valid.nonzero()
    assert [int((where[:, 0] == row).sum()) for row in range(2)] == [3, 3]
    order = sorted(range(len(where)), key=lambda i: tuple(where[i].tolist()))  # rows come in nonzero() order
    for i in order:
        row, t = where[i].tolist()
        plain = plain_thought_logits(model, ids, row, t, r.thought_tokens[row, t], model.settings.n_ahead_talk)
        rows = torch.stack([p[i] for p in r.pass_logits])
        assert torch.allclose(rows, plain[1:], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_the_mixing_head_at_init_reproduces_the_base_logits_exactly(arch, tokenizer, one_thread):
    logs: list[str] = []
    model = wrap(arch, tokenizer, logs)
    # Gemma-2 soft-caps its logits after the LM head, so its mixing head mixes logits (and says so).
    assert model.settings.mix == ("logits" if arch == "gemma2" else "hidden")
    assert any("mixes logits" in line for line in logs) == (arch == "gemma2")
    ids, mask = batch(tokenizer, TEXTS)
    with torch.no_grad():
        r = model.rollout(ids, mask)
        base = torch.log_softmax(model.base(input_ids=ids, attention_mask=mask).logits.float(), -1)
    for k in range(model.settings.n_ahead_talk):
        target = torch.cat([ids[:, k + 1 :], ids.new_zeros(2, k + 1)], 1)
        expected = torch.cat([base[:, k:], base[:, :k]], 1).gather(-1, target[..., None]).squeeze(-1)
        valid = r.talk_valid[..., k]
        assert torch.equal(r.talk_mix_logp[..., k][valid], r.talk_base_logp[..., k][valid])
        assert torch.allclose(r.talk_mix_logp[..., k][valid], expected[valid], atol=1e-5)
    assert torch.count_nonzero(r.mixing_weight) == 0


def test_gradients_reach_the_thought_markers_the_head_and_the_model(tokenizer, one_thread):
    from cotkit_plugins.methods.quiet_star_loss import LossWeights, sequence_losses

    model = wrap("llama", tokenizer)
    with torch.no_grad():  # a head past its first step (its zero last layer would stop the gradient to the layers before)
        model.mixing_head[-1].weight.normal_(0, 0.1)
        model.mixing_head[-1].bias.fill_(0.3)
    ids, mask = batch(tokenizer, TEXTS)
    rows = ids.repeat(2, 1), mask.repeat(2, 1)
    losses, stats = sequence_losses(model.rollout(*rows), 2, LossWeights())
    assert losses.shape == (2,) and torch.isfinite(losses).all()
    losses.sum().backward()
    for name in ("start_embedding", "end_embedding", "mixing_head.0.weight", "mixing_head.4.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    layer = model.base.model.layers[0].self_attn.q_proj.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0
    assert set(stats) >= {"nll_base", "nll_mix", "policy_loss", "reward_mean", "mixing_weight"}


def test_reinforce_advantages_on_a_hand_built_batch():
    from cotkit_plugins.methods.quiet_star_loss import reinforce_advantages

    # 2 passes x 2 sequences, 3 positions; rows are pass-major: rows 0,1 pass 0; rows 2,3 pass 1.
    rewards = torch.tensor([[1.0, 0.0, -2.0], [0.5, 0.5, 3.0], [3.0, 0.0, 2.0], [0.5, -0.5, 1.0]])
    got = reinforce_advantages(rewards, n_passes=2)
    # position means: seq 0 -> [2, 0, 0]; seq 1 -> [0.5, 0, 2]
    assert torch.equal(got, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 2.0], [0.0, 0.0, 0.0]]))
    unclipped = reinforce_advantages(rewards, n_passes=2, clip=False)
    assert torch.equal(unclipped[0], torch.tensor([-1.0, 0.0, -2.0]))


def test_the_policy_term_weights_each_sampled_token_by_its_advantage(tokenizer, one_thread):
    from cotkit_plugins.methods.quiet_star_loss import (
        LossWeights,
        sequence_losses,
        thought_rewards,
    )

    model = wrap("llama", tokenizer)
    ids, mask = batch(tokenizer, TEXTS)
    r = model.rollout(ids.repeat(2, 1), mask.repeat(2, 1))
    # Hand-set gains: pass 0 gains 1 nat at every position, pass 1 nothing: pass 0's tokens get advantage 0.5.
    r.talk_base_logp = r.talk_base_logp.detach() * 0
    r.talk_mix_logp = r.talk_mix_logp.detach() * 0 + torch.tensor([1.0, 1.0, 0.0, 0.0])[:, None, None] / r.talk_valid.sum(-1, keepdim=True).clamp(min=1)
    assert torch.allclose(thought_rewards(r)[:2][r.thought_valid[:2]], torch.tensor(1.0))
    only_policy = LossWeights(base=0.0, mix=0.0, policy=1.0)
    losses, _ = sequence_losses(r, 2, only_policy)
    valid = r.thought_valid[..., None].expand_as(r.thought_logp).float()
    expected_rows = (-0.5 * r.thought_logp * valid).sum((1, 2)) / valid.sum((1, 2))
    expected = torch.stack([expected_rows[0], expected_rows[1]]) / 2  # pass 1 has advantage 0: half of the mean over passes
    assert torch.allclose(losses, expected.detach(), atol=1e-6)


def test_save_and_load_give_identical_logits_and_thoughts(tokenizer, tmp_path, one_thread):
    from cotkit_plugins.methods.quiet_star_model import load_thoughts
    from transformers import AutoModelForCausalLM

    model = wrap("qwen2", tokenizer)
    with torch.no_grad():  # trained-looking thoughts: markers and head away from their start
        model.start_embedding.add_(0.01)
        model.mixing_head[-1].weight.normal_(0, 0.1)
    model.save_pretrained(tmp_path, state_dict=None, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "quiet_star" / "thoughts.safetensors").is_file()
    loaded = load_thoughts(AutoModelForCausalLM.from_pretrained(tmp_path), tmp_path).eval()
    assert loaded.settings == model.settings
    ids, mask = batch(tokenizer, TEXTS)
    for m in (model, loaded):
        torch.manual_seed(3)  # the same thought tokens
        with torch.no_grad():
            m.result = m.rollout(ids, mask, keep_logits=True)
    for a, b in zip(model.result.pass_logits, loaded.result.pass_logits, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(model.result.talk_mix_logp, loaded.result.talk_mix_logp)
    assert load_thoughts(AutoModelForCausalLM.from_pretrained(tmp_path), tmp_path / "nowhere") is None


# ------------------------------------------------------------------------------ the method


def quiet_star_cmd(data_dir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cotkit", "--data-dir", str(data_dir), "train", "--method", "quiet-star", "--task", "gsm8k",
        "--model", str(model), "--output-dir", str(out), "--train-limit", "8", "--dev-limit", "3", "--no-final-eval",
        "--steps", "4", "--seq-len", "24", "--n-ahead", "4", "--n-ahead-talk", "2", "--sft.grad-accum", "2",
        "--sft.learning-rate", "1e-3", "--sft.warmup-steps", "1", "--policy-weight", "10", "--sft.save-every", "1", *extra,
    ]  # fmt: skip


def run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("COTKIT_FAULT")}
    e.update({"OMP_NUM_THREADS": "1", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}, **env)
    return subprocess.run(args, cwd=REPO, env=e, capture_output=True, text=True, timeout=300, check=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_killed_inside_training_resumes_to_the_same_weights_thoughts_and_log(data_dir, tiny_model, tmp_path):
    ref, cut = tmp_path / "reference", tmp_path / "cut"
    r = run_cli(quiet_star_cmd(data_dir, tiny_model, ref))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli(quiet_star_cmd(data_dir, tiny_model, cut), COTKIT_FAULT_AT_STEP="iter_001/train:2")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    r = run_cli(quiet_star_cmd(data_dir, tiny_model, cut, "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]

    checkpoint = Path("iter_001") / "checkpoint"
    for f in ("model.safetensors", "quiet_star/thoughts.safetensors", "quiet_star/config.json"):
        assert digest(cut / checkpoint / f) == digest(ref / checkpoint / f), f
    log = [json.loads(line) for line in (ref / "iter_001" / "train_log.jsonl").read_text().splitlines()]
    assert (cut / "iter_001" / "train_log.jsonl").read_text() == (ref / "iter_001" / "train_log.jsonl").read_text()
    assert [row["step"] for row in log] == [1, 2, 3, 4] and log[-1]["mixing_weight"] != 0  # the head learned to mix
    metrics = {json.loads(line)["phase"]: json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()}
    before, after = metrics["iter_000/perplexity"], metrics["iter_001/perplexity"]
    assert before["thought_ppl"] == before["base_ppl"]  # the untrained head gives the thought no say
    assert after["tokens"] == before["tokens"] > 0 and after["base_hard_ppl"] > after["base_ppl"]
    assert metrics["iter_001/summary"]["base_ppl_before"] == before["base_ppl"]


def test_lora_training_saves_a_merged_model_beside_the_thoughts(data_dir, tiny_model, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    r = run_cli(quiet_star_cmd(data_dir, tiny_model, out, "--steps", "2", "--sft.lora", "--sft.lora-r", "4"))
    assert r.returncode == 0, r.stderr[-3000:]
    weights = load_file(str(out / "iter_001" / "checkpoint" / "model.safetensors"))
    assert weights and not any("lora" in k for k in weights)
    thoughts = load_file(str(out / "iter_001" / "checkpoint" / "quiet_star" / "thoughts.safetensors"))
    assert set(thoughts) == {"start_embedding", "end_embedding", *(f"mixing_head.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias"))}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_ahead": 3}, "n_ahead must be at least 4"),
        ({"n_passes": 0}, "n_passes must be at least 1"),
        ({"seq_len": 1}, "seq_len must be at least"),
        ({"policy_temperature": 0.0}, "policy_temperature must be positive"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options, message):
    from cotkit_plugins.methods.quiet_star import QuietStarConfig

    with pytest.raises(ConfigError, match=message):
        QuietStarConfig(**options)


def test_text_corpora_from_files_folders_and_jsonl(tmp_path):
    from cotkit_plugins.methods.quiet_star_data import read_documents, split_heldout

    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.jsonl").write_text('{"text": "second"}\n\n{"text": "third"}\n')
    (tmp_path / "ignored.csv").write_text("x")
    assert read_documents(str(tmp_path), "text") == ["first document", "second", "third"]
    assert read_documents(str(tmp_path / "b.jsonl"), "text") == ["second", "third"]
    with pytest.raises(DataError, match=r"b.jsonl:1: no string field 'body'"):
        read_documents(str(tmp_path / "b.jsonl"), "body")
    with pytest.raises(DataError, match="no such file"):
        read_documents(str(tmp_path / "missing.txt"), "text")
    with pytest.raises(ConfigError, match="heldout-documents 3"):
        split_heldout(["a", "b", "c"], 3)


def test_documents_are_cropped_or_packed_to_the_sequence_length(tokenizer):
    from cotkit_plugins.methods.quiet_star_data import token_sequences

    docs = ["Natalia sold 48 clips in April and 24 more in May.", "Weng earns 12 dollars."]
    cropped = token_sequences(tokenizer, docs, 5, "crop")
    assert [len(s) for s in cropped] == [5, 5]
    packed = token_sequences(tokenizer, docs, 5, "pack")
    stream = [t for d in docs for t in [*tokenizer(d)["input_ids"], tokenizer.eos_token_id]]
    assert [t for s in packed for t in s] == stream[: sum(len(s) for s in packed)] and all(len(s) == 5 for s in packed[:-1])


# ------------------------------------------------------------------------------ decoding with thoughts


@pytest.fixture(scope="module")
def thinking_checkpoint(tokenizer, tmp_path_factory):
    """A saved Quiet-STaR checkpoint whose mixing head has a say (a Llama over the tiny tokenizer)."""
    model = wrap("llama", tokenizer)
    with torch.no_grad():
        model.mixing_head[-1].weight.normal_(0, 0.5)
        model.mixing_head[-1].bias.fill_(0.5)
    path = tmp_path_factory.mktemp("thinking")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_decoding_with_thoughts_equals_thinking_before_each_token_by_hand(thinking_checkpoint, one_thread):
    from cotkit_plugins.methods.quiet_star_decode import QuietStarBackend, _Row

    from cotkit import SamplingParams

    backend = QuietStarBackend(str(thinking_checkpoint), device="cpu")
    model, tok = backend.model, backend.tokenizer
    prompts = [tok("Q: Natalia sold 48 clips in April.")["input_ids"], tok("Q: Weng earns")["input_ids"]]
    rows = [_Row(p, seed=7 + i, targets=[]) for i, p in enumerate(prompts)]
    backend._decode(rows, SamplingParams(temperature=0.0, max_new_tokens=4), [])
    for row in rows:
        assert len(row.thoughts) == len(row.tokens) and all(len(t) == model.settings.thought_tokens for t in row.thoughts)
        for i, (token, thought) in enumerate(zip(row.tokens, row.thoughts, strict=True)):
            with torch.no_grad():
                context = torch.tensor([row.ids + row.tokens[:i]])
                base = model.base(input_ids=context, output_hidden_states=True)
                parts = [model.embed(context), model.marker("start", (1, 1), torch.float32), model.embed(torch.tensor([thought])), model.marker("end", (1, 1), torch.float32)]
                after = model.base(inputs_embeds=torch.cat(parts, 1), output_hidden_states=True)
                mixed, w = model.mix(base.hidden_states[-1][:, -1], after.hidden_states[-1][:, -1], base.logits[:, -1], after.logits[:, -1])
            assert float(w.abs()) > 0 and int(mixed.argmax()) == token, (i, token)


def test_sampled_completions_hold_no_thought_tokens_and_record_them_in_meta(thinking_checkpoint, data_dir, one_thread):
    from cotkit import SamplingParams, load_backend, load_task, sample

    task = load_task("gsm8k", data_dir=data_dir)
    examples = task.examples(task.heldout_split)[:2]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    thinking = load_backend("quiet-star", model=str(thinking_checkpoint), device="cpu")
    samples = sample(task, examples, thinking, params, style="zeroshot", progress=False)
    again = sample(task, examples, thinking, params, style="zeroshot", progress=False)
    assert [s.completion for s in samples] == [s.completion for s in again]  # seeded, thoughts included
    assert [s.meta["thoughts"] for s in samples] == [s.meta["thoughts"] for s in again]
    assert all(len(s.meta["thoughts"]) == s.meta["n_tokens"] for s in samples)  # one thought per real token
    base_path = load_backend("quiet-star", model=str(thinking_checkpoint), device="cpu", thoughts=False)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=6)
    hf = load_backend("hf", model=str(thinking_checkpoint), device="cpu")
    no_thoughts = sample(task, examples, base_path, greedy, style="zeroshot", progress=False)
    assert [s.completion for s in no_thoughts] == [s.completion for s in sample(task, examples, hf, greedy, style="zeroshot", progress=False)]
    assert all("thoughts" not in s.meta for s in no_thoughts)


def test_a_model_without_saved_thoughts_thinks_with_fresh_ones_and_decodes_as_the_base(tiny_model, capsys, one_thread):
    from cotkit import SamplingParams, load_backend

    thinking = load_backend("quiet-star", model=str(tiny_model), device="cpu", n_ahead=5)
    assert "holds no Quiet-STaR thoughts" in capsys.readouterr().err
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=5)
    prompts = ["Q: Natalia sold 48 clips.", "Q: Weng earns"]
    fresh = thinking.generate(prompts, greedy, progress=False)
    plain = load_backend("hf", model=str(tiny_model), device="cpu").generate(prompts, greedy, progress=False)
    assert [g[0].text for g in fresh] == [g[0].text for g in plain]
    assert all(len(g[0].meta["thoughts"]) == g[0].n_tokens for g in fresh)


def test_sample_decodes_a_checkpoint_with_thoughts_by_default_and_its_base_path_with_no_thoughts(thinking_checkpoint, data_dir, tiny_model):
    assert json.loads((thinking_checkpoint / "cotkit_backend.json").read_text()) == {"backend": "quiet-star"}

    def sample_cli(model: Path, *extra: str) -> subprocess.CompletedProcess:
        args = [sys.executable, "-m", "cotkit", "--data-dir", str(data_dir), "sample", "--task", "gsm8k", "--model", str(model)]
        return run_cli([*args, "--limit", "2", "--n", "1", "--temperature", "0", "--max-new-tokens", "5", "--style", "zeroshot", "--json", *extra])

    thinking = sample_cli(thinking_checkpoint)
    assert thinking.returncode == 0, thinking.stderr
    rows = json.loads(thinking.stdout)["samples"]
    assert all(len(r["meta"]["thoughts"]) == r["meta"]["n_tokens"] for r in rows)  # the checkpoint named its backend
    base_path = sample_cli(thinking_checkpoint, "--no-thoughts")
    plain = sample_cli(thinking_checkpoint, "--backend", "hf")
    assert base_path.returncode == 0 and plain.returncode == 0, base_path.stderr + plain.stderr
    no_thoughts = json.loads(base_path.stdout)["samples"]
    assert [r["completion"] for r in no_thoughts] == [r["completion"] for r in json.loads(plain.stdout)["samples"]]
    assert all("thoughts" not in r["meta"] for r in no_thoughts)
    refused = sample_cli(tiny_model, "--no-thoughts")
    assert refused.returncode == 2 and "--no-thoughts: backend hf" in refused.stderr


def test_eval_of_a_checkpoint_records_each_completions_thoughts_in_its_row(thinking_checkpoint, data_dir, tmp_path):
    out = tmp_path / "eval"
    args = [sys.executable, "-m", "cotkit", "--data-dir", str(data_dir), "eval", "--task", "gsm8k", "--model", str(thinking_checkpoint)]
    r = run_cli([*args, "--limit", "2", "--max-new-tokens", "4", "--style", "zeroshot", "--output-dir", str(out)])
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(1 <= len(row["meta"]["thoughts"]) <= 4 for row in rows)  # one thought per generated token
