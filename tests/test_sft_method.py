"""`--method sft`: training sets built from the datasets' own targets, read back by the verifiers; an end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def built(host, data_dir, task_name: str, target: str, context: str, limit: int = 50, examples=None):
    from cotkit_plugins.methods.sft import build_examples

    from cotkit import make_verifier

    task = host.task(task_name, data_dir=data_dir)
    examples = examples if examples is not None else task.examples("fit", limit=limit)
    verifier = make_verifier("program") if target == "program" else make_verifier(None, task)
    return task, examples, build_examples(task, examples, target, context, verifier)


@pytest.mark.parametrize("task_name", ["gsm8k", "math"])
def test_rationale_target_ends_in_the_answer_sentence_the_verifier_reads(host, data_dir, task_name):
    task, examples, (items, rejected, counts) = built(host, data_dir, task_name, "rationale", "qa")
    assert counts == {"questions": 50, "train_examples": 50, "no_target": 0, "rejected": 0} and rejected == []
    for ex, item in zip(examples, items):
        assert item.prompt == f"Q: {ex.question}\nA:"
        assert item.completion == " " + ex.rationale.strip() + ("\n" if "\n" in ex.rationale.strip() else " ") + task.answer_sentence(ex)
    if task_name == "gsm8k":  # the worked solution without calculator annotations or the `#### N` line
        assert not any("<<" in i.completion or "####" in i.completion for i in items)
        assert items[0].completion.endswith("72 clips altogether in April and May.\nThe answer is 72.")


def test_answer_target_is_the_answer_sentence_alone(host, data_dir):
    task, examples, (items, _, counts) = built(host, data_dir, "bbh:sports_understanding", "answer", "qa")
    assert counts["train_examples"] == 50
    assert [i.completion for i in items] == [" " + task.answer_sentence(ex) for ex in examples]
    assert items[0].completion in (" So the answer is yes.", " So the answer is no.")
    # In the chat context the answer is the assistant's turn: no leading space, the task's chat prompt.
    _, _, (chat, _, _) = built(host, data_dir, "gsm8k", "answer", "chat", limit=3)
    assert chat[0].completion == "The answer is 72." and chat[0].prompt[0]["role"] == "user"


def test_program_target_runs_every_gold_program_and_counts_the_failures(host, data_dir, require_bwrap):
    from dataclasses import replace

    _, examples, (items, rejected, counts) = built(host, data_dir, "svamp", "program", "program")
    assert counts == {"questions": 50, "train_examples": 50, "no_target": 0, "rejected": 0}
    first = examples[0]
    assert items[0].prompt.startswith(f"Q: {first.question}\n\n# solution in Python:")
    assert items[0].completion == f"def solution():\n    result = {' '.join(first.meta['equation'].split())}\n    return result\n"

    broken = [
        replace(first, id="div0", meta={**first.meta, "equation": "( 3.0 / 0.0 )"}),  # raises in the sandbox
        replace(first, id="wrong", meta={**first.meta, "equation": "( 1.0 + 1.0 )"}),  # runs, wrong result
        replace(first, id="none", meta={**first.meta, "equation": None}),  # no gold program at all
    ]
    _, _, (items, rejected, counts) = built(host, data_dir, "svamp", "program", "program", examples=[first, *broken])
    assert counts == {"questions": 4, "train_examples": 1, "no_target": 1, "rejected": 2}
    assert [r["id"] for r in rejected] == ["div0", "wrong"] and all(not r["correct"] for r in rejected)


@pytest.mark.usefixtures("one_thread")
def test_sft_run_from_the_cli_reports_base_and_final_accuracy(cli, data_dir, tiny_model, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    r = cli("--data-dir", data_dir, *train_args(tiny_model, out))
    assert r.exit_code == 0, r.stderr

    train = rows(out / "iter_001" / "train.jsonl")
    assert len(train) == 6 and all(t["completion"].startswith(" The answer is ") for t in train)
    phases = json.loads((out / "state.json").read_text())["phases"]
    assert phases["iter_001/build"]["result"]["train_examples"] == 6
    assert phases["iter_001/train"]["result"]["steps"] == 2
    assert (out / "iter_001" / "checkpoint" / "model.safetensors").exists()
    for it, model in ((0, "base"), (1, "iter_001/checkpoint")):
        for split, n in (("dev", 3), ("heldout", 2)):
            ev = phases[f"iter_{it:03d}/eval_{split}"]["result"]
            assert ev["model"] == model and ev["n"] == n and 0 <= ev["ci_low"] <= ev["accuracy"] <= ev["ci_high"] <= 1
            assert len(rows(out / f"iter_{it:03d}" / f"eval_{split}.jsonl")) == n
    summary = phases["iter_001/summary"]["result"]
    assert summary["questions"] == 6 and summary["train_examples"] == 6 and summary["dev_n"] == 3
    report = (out / "report.md").read_text()
    assert "base model" in report and "| 1 |" in report


def train_args(model: Path, out: Path) -> list[str]:
    return [
        "train", "--method", "sft", "--task", "gsm8k", "--target", "answer", "--model", str(model), "--output-dir", str(out),
        "--train-limit", "6", "--dev-limit", "3", "--heldout-limit", "2", "--max-new-tokens", "6", "--max-steps", "2",
        "--sft.batch-size", "2", "--sft.grad-accum", "1", "--sft.learning-rate", "1e-3",
    ]  # fmt: skip


class Killed(BaseException):
    """Stands for the SIGKILL of COTKIT_FAULT_AFTER_PHASE: nothing in the run catches it."""


@pytest.mark.usefixtures("one_thread")
def test_killed_sft_run_resumes_to_the_same_result(cli, data_dir, tiny_model, tmp_path, monkeypatch):
    """Killed right after a phase is recorded (in this process: a subprocess per run costs a torch import each), then resumed."""
    pytest.importorskip("torch")
    from cotkit.run import context

    def kill(pid, sig):
        raise Killed

    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert cli("--data-dir", data_dir, *train_args(tiny_model, ref)).exit_code == 0
    with monkeypatch.context() as m:
        m.setattr(context.os, "kill", kill)
        m.setenv(context.FAULT_AFTER_PHASE_ENV, "iter_000/eval_heldout")
        with pytest.raises(Killed):
            cli("--data-dir", data_dir, *train_args(tiny_model, cut))
    assert not (cut / "iter_001" / "checkpoint").exists()
    resumed = cli("--data-dir", data_dir, *train_args(tiny_model, cut), "--resume")
    assert resumed.exit_code == 0, resumed.stderr

    def results(out: Path) -> dict:
        phases = json.loads((out / "state.json").read_text())["phases"]
        return {name: {k: v for k, v in p["result"].items() if not k.startswith("seconds")} for name, p in phases.items()}

    assert results(cut) == results(ref)
    assert rows(cut / "iter_001" / "train.jsonl") == rows(ref / "iter_001" / "train.jsonl")
    assert rows(cut / "iter_001" / "eval_dev.jsonl") == rows(ref / "iter_001" / "eval_dev.jsonl")


def test_rationale_target_on_a_task_without_rationales_is_one_line_error(cli, data_dir, tiny_model, tmp_path):
    r = cli(
        "--data-dir", data_dir, "train", "--method", "sft", "--task", "bbh:sports_understanding", "--target", "rationale",
        "--model", str(tiny_model), "--output-dir", str(tmp_path / "run"), "--train-limit", "5", "--dev-limit", "2",
    )  # fmt: skip
    assert r.exit_code == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bbh:sports_understanding has no rationales" in errors[0] and "--target answer" in errors[0]
    assert "Traceback" not in r.stderr


def test_program_target_takes_no_prompt_style(cli, data_dir, tiny_model, tmp_path):
    r = cli("--data-dir", data_dir, "train", "--method", "sft", "--task", "svamp", "--target", "program", "--style", "fewshot",
            "--model", str(tiny_model), "--output-dir", str(tmp_path / "run"))  # fmt: skip
    assert r.exit_code == 2 and "PaD's student prompt" in r.stderr


def test_show_sft_lists_its_options(cli):
    r = cli("show", "sft")
    assert r.exit_code == 0, r.stderr
    for flag in ("--target", "--style", "--epochs", "--max-steps", "--max-new-tokens", "--verifier", "--verifier-option",
                 "--sft.learning-rate", "--train-limit"):  # fmt: skip
        assert flag in r.stdout, flag
    assert "rationale, answer, program" in r.stdout and "1e-05" in r.stdout
