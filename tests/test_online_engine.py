"""Online objectives and soft prompts on the tiny model: live sampling, objective state across a SIGKILL, prompt tuning."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from cotkit import SamplingParams, load_backend  # noqa: E402
from cotkit.harness.train import SFTConfig, train  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "online_objective.py"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("online_objective_fixture", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toy = _fixture_module()
QUESTIONS = toy.QUESTIONS
PARAMS = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=0)
PROMPTS = [prompt for _, prompt, _ in QUESTIONS[:4]]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def cfg(**over) -> SFTConfig:
    base = dict(learning_rate=3e-3, warmup_steps=0, batch_size=2, grad_accum=2)
    return SFTConfig(**{**base, **over})


def weights_hash(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


class Probe(toy.MemoryObjective):
    """Samples PARAMS from the live model at the first step and checks the mode around sampling."""

    def __init__(self):
        super().__init__(checks=self.check_training_mode)
        self.first = None
        self.modes: list[tuple[bool, bool]] = []

    def sequences(self, step):
        if self.first is None:
            with step.live.backend() as backend:
                self.modes.append((backend.model.training, torch.is_grad_enabled()))
                self.first = backend.generate(PROMPTS, PARAMS, progress=False, seeds=[11, 22, 33, 44])
        return super().sequences(step)

    def check_training_mode(self):
        net = self._run.net
        trained = [p for p in net.parameters() if p.requires_grad]
        self.modes.append((net.training, torch.is_grad_enabled() and bool(trained)))


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_live_sampling_equals_the_hf_backend_on_the_same_weights(tiny_model, tmp_path, lora):
    probe = Probe()
    train(str(tiny_model), QUESTIONS, cfg(lora=lora, lora_r=4), 1, tmp_path / "out", seed=2, objective=probe)
    backend = load_backend("hf", model=str(tiny_model), device="cpu")
    try:  # before the first update the live weights are the base weights (LoRA's B starts at 0)
        expected = backend.generate(PROMPTS, PARAMS, progress=False, seeds=[11, 22, 33, 44])
    finally:
        backend.close()
    assert [[g.text for g in row] for row in probe.first] == [[g.text for g in row] for row in expected]
    assert any(g.text for row in expected for g in row)
    assert probe.modes[0] == (False, False)  # sampling: eval mode, no gradients
    assert probe.modes[1] == (True, True)  # then back to training with trainable weights


def test_an_online_objective_trains_and_logs_its_statistics(tiny_model, tmp_path):
    logs = []
    objective = toy.MemoryObjective()
    result = train(str(tiny_model), QUESTIONS, cfg(), 6, tmp_path / "out", seed=1, objective=objective, on_step=logs.append)
    assert result.losses[-1] < result.losses[0] - 0.5
    assert [log.stats["memory_size"] for log in logs][:3] == [4.0, 8.0, 12.0]  # 4 new questions per step
    assert all(log.stats["online_sequences"] == 4.0 and log.examples == 4 for log in logs)
    assert len(objective.memory) == len(QUESTIONS) and all(len(v) == 2 for v in objective.memory.values())
    assert (tmp_path / "out" / "model.safetensors").exists()


SIGKILL_SCRIPT = """
import importlib.util, json, sys
from cotkit.harness.train import SFTConfig, train
spec = importlib.util.spec_from_file_location("toy", sys.argv[1]); toy = importlib.util.module_from_spec(spec); spec.loader.exec_module(toy)
objective, logs = toy.MemoryObjective(), []
cfg = SFTConfig(learning_rate=3e-3, warmup_steps=1, lr_scheduler="linear", batch_size=2, grad_accum=1, save_every=2)
fault = int(sys.argv[4]) if len(sys.argv) > 4 else None
r = train(sys.argv[2], toy.QUESTIONS, cfg, 6, sys.argv[3] + "/checkpoint", seed=4, objective=objective,
          state_dir=sys.argv[3] + "/state", on_step=logs.append, fault_at_step=fault)
print("RESULT " + json.dumps({"losses": r.losses, "memory": objective.memory, "resumed": r.resumed_from_step,
                              "stats": {log.step: log.stats for log in logs}}))
"""


def test_a_killed_online_run_resumes_to_the_same_memory_weights_and_losses(tiny_model, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SIGKILL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(out: str, *fault: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(script), str(FIXTURE), str(tiny_model), str(tmp_path / out), *fault]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    def result(proc: subprocess.CompletedProcess) -> dict:
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.split("RESULT ", 1)[1])

    full = result(run("full"))
    killed = run("cut", "3")  # SIGKILL right after step 3; the state of step 2 is on disk
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved = json.loads((tmp_path / "cut" / "state" / "step_000002" / "objective_0.json").read_text())
    assert len(saved["memory"]) == 4  # two steps of two questions
    resumed = result(run("cut"))
    assert resumed["resumed"] == 2
    assert resumed["memory"] == full["memory"] and len(full["memory"]) == len(QUESTIONS)
    assert resumed["losses"] == full["losses"]
    assert resumed["stats"] == {k: v for k, v in full["stats"].items() if int(k) > 2}
    assert weights_hash(tmp_path / "cut" / "checkpoint") == weights_hash(tmp_path / "full" / "checkpoint")
    assert not (tmp_path / "cut" / "state").exists()


def test_dev_accuracy_every_n_steps_from_the_live_model(tiny_model, data_dir, tmp_path):
    from cotkit import greedy_accuracy, load_task, make_verifier

    task = load_task("bbh:sports_understanding", data_dir=str(data_dir))
    dev = task.examples("dev", limit=3)
    verifier = make_verifier(None, task)
    logs = []
    objective = toy.MemoryObjective(eval_every=2, on_evaluate=lambda live: live.accuracy(task, dev, verifier, max_new_tokens=12))
    try:
        train(str(tiny_model), QUESTIONS, cfg(), 4, tmp_path / "out", seed=1, objective=objective, on_step=logs.append)
    finally:
        verifier.close()
    assert ["dev_accuracy" in log.stats for log in logs] == [False, True, False, True]
    last = logs[-1].stats
    assert last["dev_n"] == 3 and last["dev_ci_low"] <= last["dev_accuracy"] <= last["dev_ci_high"]

    class Ctx:  # greedy_accuracy reads only the task from the run context
        pass

    ctx = Ctx()
    ctx.task = task
    backend = load_backend("hf", model=str(tmp_path / "out"), device="cpu")
    try:
        saved = greedy_accuracy(ctx, backend, "out", dev, tmp_path / "dev.jsonl", "dev", style="fewshot", max_new_tokens=12)
    finally:
        backend.close()
    assert saved["n"] == 3 and saved["accuracy"] == pytest.approx(last["dev_accuracy"])  # the same ruler


INIT_TEXT = "Q: What is 2 plus 2?\nA: 2 + 2 = 4. The answer is 4."


def test_a_soft_prompt_starts_from_a_texts_embeddings_trains_alone_and_reloads(tiny_model, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotkit.harness.softprompt import add_soft_prompt

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    wrapped = add_soft_prompt(base, 5, INIT_TEXT, str(tiny_model))
    text_ids = tok(INIT_TEXT)["input_ids"][:5]
    assert torch.equal(wrapped.prompt.detach(), base.get_input_embeddings().weight[text_ids].detach())
    assert [n for n, p in wrapped.named_parameters() if p.requires_grad] == ["prompt"]

    pairs = [(prompt, gold) for _, prompt, gold in QUESTIONS[:4]]
    live = {}

    def outputs(backend) -> tuple:
        greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=10, seed=0)
        texts = [[g.text for g in row] for row in backend.generate(PROMPTS, greedy, progress=False)]
        texts += [[g.text for g in row] for row in backend.generate(PROMPTS, PARAMS, progress=False, seeds=[5, 6, 7, 8])]
        return texts, backend.loglikelihood(pairs)

    def capture(live_model):
        with live_model.backend() as backend:
            live["texts"], live["scores"] = outputs(backend)
        return {}

    objective = toy.MemoryObjective(eval_every=6, on_evaluate=capture)
    out = tmp_path / "prompted"
    sft = cfg(learning_rate=3e-2, soft_prompt=True, soft_prompt_tokens=5, soft_prompt_init_text=INIT_TEXT)
    result = train(str(tiny_model), QUESTIONS, sft, 6, out, seed=3, objective=objective)
    assert result.losses[-1] < result.losses[0]

    saved, original = load_file(out / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)  # the model is frozen
    prompt = load_file(out / "soft_prompt" / "adapter_model.safetensors")["prompt_embeddings"]
    assert prompt.shape == (5, base.config.hidden_size) and not torch.equal(prompt, wrapped.prompt.detach())

    results = {}
    for name, folder in (("reloaded", out), ("plain", tiny_model)):  # `cotkit sample/eval --model RUN/checkpoint` loads the first
        backend = load_backend("hf", model=str(folder), device="cpu")
        try:
            results[name] = outputs(backend)
        finally:
            backend.close()
    texts, scores = results["reloaded"]
    assert texts == live["texts"] and scores == pytest.approx(live["scores"], abs=1e-4)
    assert scores[0] > results["plain"][1][0] + 0.5 and texts != results["plain"][0]  # the trained prompt is applied on load

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "soft_prompt")
    assert torch.equal(peft_model.prompt_encoder["default"].embedding.weight.detach(), prompt)  # a standard peft adapter


def test_soft_prompt_options_that_cannot_combine_are_refused():
    from cotkit.errors import ConfigError

    with pytest.raises(ConfigError, match="sft.soft_prompt.*sft.lora"):
        SFTConfig(soft_prompt=True, lora=True)
    with pytest.raises(ConfigError, match="sft.soft_prompt.*sft.packing"):
        SFTConfig(soft_prompt=True, packing=True)
    with pytest.raises(ConfigError, match="sft.soft_prompt_tokens"):
        SFTConfig(soft_prompt=True, soft_prompt_tokens=0)
