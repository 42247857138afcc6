"""The shared fine-tuning step on the tiny model: masking, weighted-loss numerics, determinism, resume."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cotkit.harness.train import (  # noqa: E402
    LossFnObjective,
    SFTConfig,
    TrainExample,
    WeightedSFT,
    pad_batch,
    render_prompt_ids,
    sequence_nll,
    step_indices,
    train,
)

ITEMS = [TrainExample(f"Q: What is {a} plus {b}?\nA:", f" {a} + {b} = {a + b}. The answer is {a + b}.") for a in range(4) for b in range(3)]


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model trains faster on one thread, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights_hash(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def loaded(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)


def test_prompt_tokens_are_masked_and_completion_ends_with_eos(loaded):
    _, tok = loaded
    for item in (ITEMS[0], TrainExample([{"role": "user", "content": "What is 2 plus 2?"}], "2 + 2 = 4. The answer is 4.")):
        (f,) = WeightedSFT().features(tok, [item], max_length=512)
        n_prompt = len(render_prompt_ids(tok, item.prompt))
        assert f["labels"][:n_prompt] == [-100] * n_prompt
        assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:]
        assert f["input_ids"][-1] == tok.eos_token_id
        assert tok.decode(f["input_ids"][n_prompt:-1]) == item.completion
    chat_ids = WeightedSFT().features(tok, [TrainExample([{"role": "user", "content": "hi"}], "yo")], 512)[0]["input_ids"]
    assert tok.decode(chat_ids).startswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_sequences_longer_than_max_length_are_cut_or_dropped(loaded):
    _, tok = loaded
    feats = WeightedSFT().features(tok, ITEMS[:2], max_length=12)
    assert all(len(f["input_ids"]) <= 12 for f in feats)
    assert WeightedSFT().features(tok, [TrainExample("word " * 50, " x")], max_length=8) == []


def test_unit_weights_equal_the_standard_completion_only_loss(loaded):
    model, tok = loaded
    feats = WeightedSFT().features(tok, ITEMS[:3], 512)
    batch = pad_batch(feats, tok.pad_token_id)
    with torch.no_grad():
        ours, _ = WeightedSFT().loss(model, batch, normalizer=sum(f["n_label"] for f in feats))
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_signed_weights_scale_each_sequence(loaded):
    model, tok = loaded
    feats = WeightedSFT().features(tok, ITEMS[:2], 512)
    feats[0]["weight"], feats[1]["weight"] = 2.0, -0.5
    batch = pad_batch(feats, tok.pad_token_id)
    with torch.no_grad():
        nll, n_tok = sequence_nll(model, batch)
        got, _ = WeightedSFT().loss(model, batch, normalizer=10.0)
        per_seq, _ = WeightedSFT("sequences").loss(model, batch, normalizer=2.0)
    assert float(got) == pytest.approx(float(2.0 * nll[0] - 0.5 * nll[1]) / 10.0, rel=1e-5)
    assert float(per_seq) == pytest.approx(float(2.0 * nll[0] - 0.5 * nll[1]) / 2.0, rel=1e-5)
    assert WeightedSFT("sequences").size(feats[0]) == 1.0 and WeightedSFT().size(feats[0]) == float(n_tok[0])


def _nll_of(folder: Path, item: TrainExample) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    batch = pad_batch(WeightedSFT().features(tok, [item], 512), tok.pad_token_id)
    with torch.no_grad():
        nll, n = sequence_nll(model, batch)
    return float(nll[0] / n[0])


def test_a_negative_weight_pushes_the_sequence_likelihood_down(tiny_model, tmp_path):
    target = ITEMS[5]
    cfg = SFTConfig(learning_rate=3e-3, warmup_steps=0, batch_size=1, grad_accum=1)
    before = _nll_of(tiny_model, target)
    up = train(str(tiny_model), [TrainExample(target.prompt, target.completion, 1.0)], cfg, 5, tmp_path / "up")
    down = train(str(tiny_model), [TrainExample(target.prompt, target.completion, -1.0)], cfg, 5, tmp_path / "down")
    assert _nll_of(tmp_path / "up", target) < before - 0.1
    assert _nll_of(tmp_path / "down", target) > before + 0.1
    assert up.losses[-1] < up.losses[0] and down.losses[-1] < down.losses[0]  # both minimise their objective


def test_same_seed_same_weights_and_micro_batching_does_not_change_the_loss(tiny_model, tmp_path):
    a = SFTConfig(learning_rate=1e-3, warmup_steps=2, batch_size=2, grad_accum=2)
    b = SFTConfig(learning_rate=1e-3, warmup_steps=2, batch_size=4, grad_accum=1)
    r1 = train(str(tiny_model), ITEMS, a, 4, tmp_path / "a1", seed=3)
    r2 = train(str(tiny_model), ITEMS, a, 4, tmp_path / "a2", seed=3)
    r3 = train(str(tiny_model), ITEMS, b, 4, tmp_path / "b", seed=3)
    assert weights_hash(tmp_path / "a1") == weights_hash(tmp_path / "a2")
    assert r1.losses == r2.losses
    assert r3.losses == pytest.approx(r1.losses, rel=1e-4)
    assert (tmp_path / "a1" / "training.json").exists() and not list(tmp_path.glob(".*tmp*"))


def test_data_order_is_a_pure_function_of_seed_and_step():
    seen = [i for s in range(3) for i in step_indices(10, s, 4, seed=1)]
    assert sorted(seen[:10]) == list(range(10))  # the first epoch is a permutation
    assert step_indices(10, 2, 4, seed=1) == step_indices(10, 2, 4, seed=1)
    assert step_indices(10, 0, 4, seed=1) != step_indices(10, 0, 4, seed=2)


@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
def test_interrupted_training_resumes_to_the_same_weights(tiny_model, tmp_path, packing):
    cfg = SFTConfig(learning_rate=1e-3, warmup_steps=1, lr_scheduler="linear", batch_size=2, grad_accum=1, save_every=2,
                    max_length=96 if packing else 1024, packing=packing)  # fmt: skip
    full = train(str(tiny_model), ITEMS, cfg, 5, tmp_path / "full", seed=1, state_dir=tmp_path / "s1")

    class Crash(Exception):
        pass

    def crash_at_3(log):
        if log.step == 3:
            raise Crash

    with pytest.raises(Crash):
        train(str(tiny_model), ITEMS, cfg, 5, tmp_path / "cut", seed=1, state_dir=tmp_path / "s2", on_step=crash_at_3)
    assert not (tmp_path / "cut").exists()
    resumed = train(str(tiny_model), ITEMS, cfg, 5, tmp_path / "cut", seed=1, state_dir=tmp_path / "s2")
    assert resumed.resumed_from_step == 2
    assert resumed.losses == full.losses and resumed.examples_trained == full.examples_trained
    assert weights_hash(tmp_path / "cut") == weights_hash(tmp_path / "full")
    assert not (tmp_path / "s2").exists()  # resumable state is removed once the checkpoint is written


def test_lora_trains_adapters_and_saves_a_merged_model(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = SFTConfig(learning_rate=1e-2, warmup_steps=0, batch_size=4, grad_accum=1, lora=True, lora_r=4)
    r = train(str(tiny_model), ITEMS, cfg, 4, tmp_path / "lora")
    assert r.losses[-1] < r.losses[0]
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert not any("lora" in k for k in merged.state_dict())
    diff = [k for k, v in merged.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert diff and all("proj" in k for k in diff)  # only adapted linear layers changed


def test_a_custom_loss_function_plugs_in(tiny_model, tmp_path):
    calls = []

    def summed_nll(model, batch):
        nll, _ = sequence_nll(model, batch)
        calls.append(len(nll))
        return nll.sum(), {"custom": 1.0}

    cfg = SFTConfig(learning_rate=1e-3, warmup_steps=0, batch_size=2, grad_accum=1)
    custom = train(str(tiny_model), ITEMS, cfg, 3, tmp_path / "c", seed=5, objective=LossFnObjective(summed_nll))
    plain = train(str(tiny_model), ITEMS, cfg, 3, tmp_path / "p", seed=5)
    assert calls == [2, 2, 2]
    assert custom.losses == pytest.approx(plain.losses, rel=1e-5)


def test_an_earlier_accelerator_with_other_precision_does_not_block_training(tiny_model, tmp_path):
    """A TRL trainer built first in the process (bf16 where the CPU has it) must not break train()."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # as in a fresh process whose first Accelerator is TRL's
    Accelerator(mixed_precision="bf16", cpu=True)
    cfg = SFTConfig(learning_rate=1e-3, warmup_steps=0, batch_size=2, grad_accum=1)
    result = train(str(tiny_model), ITEMS, cfg, 1, tmp_path / "after-bf16", seed=0)
    assert result.steps == 1 and (tmp_path / "after-bf16" / "model.safetensors").exists()


DDP_SCRIPT = """
import sys
from cotkit.harness.train import SFTConfig, TrainExample, train
items = [TrainExample(f"Q: What is {a} plus {b}?\\nA:", f" {a} + {b} = {a + b}.") for a in range(4) for b in range(4)]
cfg = SFTConfig(learning_rate=1e-3, warmup_steps=0, batch_size=int(sys.argv[3]), grad_accum=1)
r = train(sys.argv[1], items, cfg, 3, sys.argv[2], seed=0)
print("RESULT", r.processes, r.losses, flush=True)
"""


@pytest.mark.slow
def test_two_processes_train_data_parallel_like_one(tiny_model, tmp_path):
    """`torchrun --nproc_per_node 2` (gloo on CPU): the same steps as one process with twice the batch."""
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    two = subprocess.run([*torchrun, str(script), str(tiny_model), str(tmp_path / "two"), "2"], capture_output=True, text=True, env=env, timeout=600)
    one = subprocess.run([sys.executable, str(script), str(tiny_model), str(tmp_path / "one"), "4"], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-2000:] + one.stderr[-2000:]
    assert "RESULT 2 " in two.stdout and "RESULT 1 " in one.stdout
    two_losses = eval(two.stdout.split("RESULT 2 ")[1].splitlines()[0])
    one_losses = eval(one.stdout.split("RESULT 1 ")[1].splitlines()[0])
    assert two_losses == pytest.approx(one_losses, rel=1e-5)  # normalised over the whole step, not per process
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "two" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_decay_ends_at_the_floor():
    from cotkit.harness.train import lr_factor

    assert lr_factor(0, "cosine", 0, 100, floor=0.1) == pytest.approx(1.0)
    assert lr_factor(100, "cosine", 0, 100, floor=0.1) == pytest.approx(0.1)  # TRICE's notebook: cosine to 0.1x
    assert lr_factor(50, "linear", 0, 100, floor=0.2) == pytest.approx(0.6)
    assert lr_factor(100, "cosine", 0, 100) == pytest.approx(0.0) and lr_factor(7, "constant", 0, 100, floor=0.5) == 1.0


def test_the_step_log_of_a_resumed_run_drops_the_steps_after_its_saved_state(tmp_path):
    """A run killed after logging steps 1-3 but saving its state at step 2 logs steps 3.. again: one row per step, the new ones."""
    import json
    from types import SimpleNamespace

    from cotkit.harness.iterate import TrainLog

    path = tmp_path / "train_log.jsonl"
    first = TrainLog(path)
    for step in (1, 2, 3):
        first(SimpleNamespace(step=step, loss=float(step), lr=0.1, stats={"x": 1.0}))
    with path.open("a") as f:
        f.write('{"step": 4, "lo')  # torn by the kill
    resumed = TrainLog(path)
    for step in (3, 4):
        resumed(SimpleNamespace(step=step, loss=10.0 * step, lr=0.1, stats={}))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert rows[0]["x"] == 1.0
