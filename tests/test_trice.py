"""TRICE as a method (`cotkit train --method trice`): options, templates, one step of the online objective, a killed and resumed run.

The estimator's arithmetic is tested in test_trice_estimator.py; here a step of the objective is
driven with scripted proposals (a stand-in for the live model, the task's real verifier), and one
real run on the tiny model is SIGKILLed inside training and resumed to the same files.
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

from cotkit import ConfigError, Sample, load_task, make_verifier
from cotkit.harness.online import OnlineStep
from plugins.methods.trice import (
    GUIDE_TEMPLATE,
    TriceConfig,
    TriceObjective,
    TricePrompts,
    TriceSFTConfig,
    fewshot_demonstrations,
)
from plugins.methods.trice_estimator import (
    MemoryEntry,
    TriceMemory,
    control_variate_weights,
)

REPO = Path(__file__).resolve().parents[1]
TASK = "bbh:logical_deduction_three_objects"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 6, "sft": TriceSFTConfig(batch_size=4)}, "batch_size=6 must be a multiple of sft.batch_size=4"),
        ({"subsample": 0}, "subsample must be at least 1"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"batch_size": 1, "sft": TriceSFTConfig(batch_size=1)}, "control variate needs batch_size of at least 2"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"init_retries": -1}, "init_retries must be 0 or more"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        TriceConfig(**options)


def test_a_bad_option_on_the_command_line_is_one_line_and_exit_code_2(cli, data_dir, tmp_path):
    r = cli("--data-dir", str(data_dir), "train", "--method", "trice", "--task", TASK, "--output-dir", str(tmp_path / "run"), "--batch-size", "10")
    assert r.exit_code == 2
    assert "batch_size=10 must be a multiple of sft.batch_size=8" in r.stderr


@pytest.fixture(scope="module")
def task(data_dir):
    return load_task(TASK, data_dir=str(data_dir))


def test_the_notebook_templates_over_the_task(task):
    ex = task.examples("fit")[0]
    view = TricePrompts(task)
    assert view.prompt(ex) == f"Question: {ex.question}\nAnswer: Let's think step by step.\n"
    assert view.prompt(ex, hint=True) == GUIDE_TEMPLATE.format(q=ex.question, a=f"({ex.answer})")
    assert "\nQuestion:" in view.stop_sequences()
    demos = fewshot_demonstrations(task, ex)
    assert demos.count("Question: ") == 3 and demos.count("\nAnswer: Let's think step by step.\n") == 3
    assert "\nQ: " not in demos and "\nA: " not in demos and demos.endswith("So the answer is (C).\n\n")
    assert TricePrompts(task, demos).prompt(ex) == demos + view.prompt(ex)  # the untrained soft prompt as text


class ScriptedLive:
    """Stands in for `step.live`: `sample` returns the scripted completion(s) of each question, in order."""

    num_processes, process_index = 1, 0

    def __init__(self, script: dict[str, list[str]]):
        self.script = script
        self.asked: list = []

    def all_sum(self, values):
        return [float(v) for v in values]

    def all_gather(self, rows):
        return list(rows)

    def sample(self, view, examples, params, style="fewshot", hint=False):
        self.asked.append((params.n, params.temperature, hint))
        out = []
        for ex in examples:
            for text in self.script[ex.id][: params.n]:
                out.append(Sample(example=ex, completion=text, prompt=view.prompt(ex, style, hint), stop=view.stop_sequences(), meta={"n_tokens": 10}))
        return out


def right(ex) -> str:
    return f"(1) ordering. So the answer is ({ex.answer}).\nQuestion: next"


def wrong(ex) -> str:
    other = next(c.label for c in ex.choices if c.label != ex.answer)
    return f"(1) ordering. So the answer is ({other})."


def test_one_trice_step_updates_the_memory_and_weights_memory_and_proposals(task):
    examples = task.examples("fit")[:4]
    a, b, c, d = examples
    # Memory: a and b correct from initialization, c and d wrong (masked).
    memory = TriceMemory(
        [MemoryEntry(a.id, "old a", True, 0), MemoryEntry(b.id, "old b", True, 0), MemoryEntry(c.id, "old c", False, 0), MemoryEntry(d.id, "old d", False, 0)]
    )
    # Proposals: a right, b wrong, c right (accepted: c becomes covered), d wrong (stays masked).
    live = ScriptedLive({a.id: [right(a)], b.id: [wrong(b)], c.id: [right(c)], d.id: [wrong(d)]})
    cfg = TriceConfig(batch_size=4, subsample=None, sft=TriceSFTConfig(batch_size=2))
    verifier = make_verifier(None, task)
    try:
        objective = TriceObjective(TricePrompts(task), memory, cfg, verifier, [], lambda *_: None)
        chosen, stats = objective.sequences(OnlineStep(0, examples, 7, live))
    finally:
        verifier.close()
    assert live.asked == [(1, 1.0, False)]  # one un-hinted proposal per question at T=1
    assert objective.memory[c.id].correct and objective.memory[c.id].step == 1
    assert objective.memory[c.id].text == f"(1) ordering. So the answer is ({c.answer})."  # trimmed after the answer
    assert objective.memory[b.id].text == "old b" and not objective.memory[d.id].correct
    memory_w, proposal_w = control_variate_weights([True, False, True, False], [True, True, True, False])
    terms = {(t.meta["id"], t.meta["kind"]): t for t in chosen}
    n, big_m = len(chosen), 3
    for ex, w in zip(examples, memory_w):
        if w:
            assert terms[(ex.id, "memory")].weight == pytest.approx(w * n / big_m)
    assert terms[(b.id, "proposal")].weight == pytest.approx(proposal_w[1] * n / big_m) and proposal_w[1] < 0
    assert terms[(b.id, "proposal")].completion == wrong(b)  # a wrong proposal is pushed down as sampled
    assert all(t.prompt == TricePrompts(task).prompt(next(e for e in examples if e.id == t.meta["id"])) for t in chosen)  # un-hinted
    assert (d.id, "memory") not in terms and (d.id, "proposal") not in terms  # masked
    assert stats["proposal_accuracy"] == 0.5 and stats["memory_coverage"] == 0.75 and stats["sampled_tokens"] == 40.0
    assert stats["nonzero_weights"] == float(len(chosen))

    restored = TriceObjective(TricePrompts(task), TriceMemory([]), cfg, None, [], lambda *_: None)
    restored.load_state_dict(json.loads(json.dumps(objective.state_dict())))
    assert restored.memory.to_rows() == objective.memory.to_rows() and restored.sampled_tokens == 40


def test_the_rejection_baseline_trains_on_every_correct_sample_of_several(task):
    examples = task.examples("fit")[:2]
    a, b = examples
    live = ScriptedLive({a.id: [right(a), wrong(a), right(a)], b.id: [wrong(b)] * 3})
    cfg = TriceConfig(estimator="rejection", proposals_per_question=3, batch_size=2, sft=TriceSFTConfig(batch_size=2))
    memory = TriceMemory(MemoryEntry(e.id, "", False, 0) for e in examples)
    verifier = make_verifier(None, task)
    try:
        chosen, stats = TriceObjective(TricePrompts(task), memory, cfg, verifier, [], lambda *_: None).sequences(OnlineStep(0, examples, 7, live))
    finally:
        verifier.close()
    assert live.asked == [(3, 1.0, False)]
    assert [(t.meta["id"], t.weight) for t in chosen] == [(a.id, 1.0), (a.id, 1.0)]
    assert stats["proposal_accuracy"] == pytest.approx(2 / 6) and stats["memory_coverage"] == 0.5


class ProcessOfTwo(ScriptedLive):
    """One of two data-parallel processes, as threads: all_sum and all_gather meet at a barrier, as the collectives do."""

    num_processes = 2

    def __init__(self, script, index, meeting):
        super().__init__(script)
        self.process_index, self.meeting = index, meeting

    def _exchange(self, value):
        board, barrier = self.meeting
        barrier.wait()
        board[self.process_index] = value
        barrier.wait()
        both = [board[0], board[1]]
        barrier.wait()
        return both

    def all_sum(self, values):
        a, b = self._exchange([float(v) for v in values])
        return [x + y for x, y in zip(a, b)]

    def all_gather(self, rows):
        a, b = self._exchange(list(rows))
        return a + b


def coefficients(chosen) -> dict:
    """Each term's share of the step's gradient: weight / number of terms (the engine's mean over every process's terms)."""
    out: dict = {}
    for t in chosen:
        out[(t.meta["id"], t.meta["kind"])] = out.get((t.meta["id"], t.meta["kind"]), 0.0) + t.weight / len(chosen)
    return out


@pytest.mark.parametrize("estimator", ["trice", "rejection"])
def test_two_data_parallel_processes_compute_what_one_process_does_on_the_whole_minibatch(task, estimator):
    import threading

    examples = task.examples("fit")[:8]
    k = 2 if estimator == "rejection" else 1
    script = {e.id: ([right(e)] * (1 + i % 2) + [wrong(e)] * 2)[:k] if i % 3 else [wrong(e)] * k for i, e in enumerate(examples)}
    start = [MemoryEntry(e.id, f"old {i}", i % 2 == 0, 0) for i, e in enumerate(examples)]
    cfg = TriceConfig(estimator=estimator, proposals_per_question=k, batch_size=8, subsample=None, sft=TriceSFTConfig(batch_size=4))
    verifier = make_verifier(None, task)
    try:
        one = TriceObjective(TricePrompts(task), TriceMemory(start), cfg, verifier, [], lambda *_: None)
        whole, whole_stats = one.sequences(OnlineStep(0, examples, 7, ScriptedLive(script)))
        meeting = ({}, threading.Barrier(2))
        halves = [TriceObjective(TricePrompts(task), TriceMemory(start), cfg, verifier, [], lambda *_: None) for _ in range(2)]
        results: list = [None, None]

        def process(i):
            results[i] = halves[i].sequences(OnlineStep(0, examples[4 * i : 4 * i + 4], 7, ProcessOfTwo(script, i, meeting)))

        threads = [threading.Thread(target=process, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        verifier.close()
    both = results[0][0] + results[1][0]
    assert len(whole) > 2 and coefficients(both) == pytest.approx(coefficients(whole))
    for objective, (_, stats) in zip(halves, results):
        assert objective.memory.to_rows() == one.memory.to_rows()  # every process holds the whole memory
        assert {k: v for k, v in stats.items() if k != "online_sequences"} == pytest.approx(whole_stats)


# ------------------------------------------------------------------------------ a real run


def cmd(data_dir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cotkit", "--data-dir", str(data_dir), "train", "--method", "trice", "--task", "bbh:sports_understanding",
        "--model", str(model), "--output-dir", str(out), "--train-limit", "8", "--dev-limit", "4", "--heldout-limit", "4",
        "--steps", "4", "--batch-size", "4", "--subsample", "6", "--max-new-tokens", "12", "--eval-every", "2",
        "--sft.batch-size", "2", "--sft.learning-rate", "0.05", "--sft.save-every", "1", "--backend-option", "batch_size=8", *extra,
    ]  # fmt: skip


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """`args` in its own process group, killed whole on a timeout (torchrun's workers would outlive their launcher)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("COTKIT_FAULT")}
    e.update({"OMP_NUM_THREADS": "1", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}, **env)
    proc = subprocess.Popen(args, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_seconds(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rs]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_killed_inside_training_resumes_to_the_same_memory_weights_and_metrics(data_dir, formatted_model, tmp_path):
    ref, cut = tmp_path / "reference", tmp_path / "cut"
    r = run(cmd(data_dir, formatted_model, ref))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(cmd(data_dir, formatted_model, cut), COTKIT_FAULT_AT_STEP="iter_001/train:2")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert len(rows(cut / "iter_001" / "train_log.jsonl")) == 2 and not (cut / "iter_001" / "memory.jsonl").exists()
    r = run(cmd(data_dir, formatted_model, cut, "--resume"))
    assert r.returncode == 0, r.stderr[-3000:]

    for d in (ref, cut):  # what the run leaves to inspect
        init = rows(d / "iter_001" / "memory_init.jsonl")
        assert len(init) == 8 and all(row["step"] == 0 for row in init)
        assert len(rows(d / "iter_001" / "memory_init_samples.jsonl")) == 8
        assert (d / "iter_001" / "checkpoint" / "soft_prompt" / "adapter_model.safetensors").is_file()
    log = rows(ref / "iter_001" / "train_log.jsonl")
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    assert ["dev_accuracy" in row for row in log] == [False, True, False, True]
    for key in ("memory_coverage", "proposal_accuracy", "nonzero_weights", "sum_squared_weights", "loss", "sampled_tokens"):
        assert all(key in row for row in log), key
    init_covered = sum(row["correct"] for row in rows(ref / "iter_001" / "memory_init.jsonl"))
    final = rows(ref / "iter_001" / "memory.jsonl")
    assert sum(row["correct"] for row in final) >= init_covered  # coverage never falls

    assert rows(cut / "iter_001" / "memory.jsonl") == final
    assert rows(cut / "iter_001" / "train_log.jsonl") == log
    weights = Path("iter_001") / "checkpoint" / "soft_prompt" / "adapter_model.safetensors"
    assert digest(cut / weights) == digest(ref / weights)
    metrics = {row["phase"]: row for row in without_seconds(rows(ref / "metrics.jsonl"))}
    resumed = {row["phase"]: row for row in without_seconds(rows(cut / "metrics.jsonl"))}
    assert resumed.keys() == metrics.keys() and "iter_001/summary" in metrics
    for phase in ("iter_001/memory_init", "iter_001/eval_dev", "iter_001/eval_heldout"):
        assert resumed[phase] == metrics[phase], phase
    summary = metrics["iter_001/summary"]
    assert summary["steps"] == 4 and summary["questions"] == 8 and summary["dev_n"] == 4
    assert summary["sampled_tokens"] == resumed["iter_001/summary"]["sampled_tokens"] > 0


def test_a_two_process_torchrun_shares_the_minibatch_and_the_memory(data_dir, formatted_model, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # Full fine-tuning at T=0.1: the tiny formatted model then proposes parseable, sometimes right answers.
    args = ["--steps", "2", "--subsample", "none", "--eval-every", "0", "--sft.save-every", "0", "--no-sft.soft-prompt", "--temperature", "0.1"]
    r = run(cmd(data_dir, formatted_model, one, *args))
    assert r.returncode == 0, r.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    r = run([*torchrun, *cmd(data_dir, formatted_model, two, *args, "--batch-size", "2", "--sft.batch-size", "1")[1:]])  # 2 questions per process
    assert r.returncode == 0, r.stderr[-3000:]
    # Step 1 samples from the same base model: the same proposals, memory and weights, split over two processes.
    first_one, first_two = (rows(d / "iter_001" / "train_log.jsonl")[0] for d in (one, two))
    for key in ("memory_coverage", "batch_coverage", "proposal_accuracy", "nonzero_weights", "sum_squared_weights", "terms", "sampled_tokens"):
        assert first_two[key] == pytest.approx(first_one[key]), key
    assert first_one["proposal_accuracy"] > 0 and first_one["terms"] > 0  # the step had something to weigh
    assert len(rows(two / "iter_001" / "train_log.jsonl")) == 2
    assert len(rows(two / "iter_001" / "memory.jsonl")) == 8  # the whole memory, written once
