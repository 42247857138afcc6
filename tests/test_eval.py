"""`cotkit eval` through lm-eval: summary, output files, self-consistency, groups, YAMLs, parity."""

from __future__ import annotations

import json

import pytest

from cotkit.lmeval import bridge
from cotkit.types import Status, Verdict


def test_yamls_are_generated_from_the_current_tasks(tmp_path):
    from cotkit.lmeval import yamls
    from cotkit.lmeval.runner import yaml_dir

    rendered = yamls.render_all()
    on_disk = {p.name: p.read_text() for p in yaml_dir().glob("cotkit_*.yaml")}
    assert rendered == on_disk, "tasks/lm_eval is stale: run `python -m cotkit.lmeval.yamls`"
    assert "cotkit_bbh_date_understanding.yaml" in on_disk and "cotkit_bbh.yaml" in on_disk


def test_majority_vote_uses_normalized_answers():
    v = lambda n: Verdict(Status.CORRECT if n == "18" else Status.INCORRECT, extracted=n, normalized=n)  # noqa: E731
    assert bridge.majority([v("7"), v("18"), v("18")]) == 1
    assert bridge.majority([v("7"), v("18")]) == 0  # a tie goes to the first
    assert bridge.majority([Verdict(Status.UNPARSEABLE), v("5")]) == 1
    assert bridge.majority([Verdict(Status.UNPARSEABLE)]) is None


def test_process_results_scores_with_the_cotkit_verifier(data_dir):
    docs = bridge.build_docs("gsm8k", cotkit_data_dir=str(data_dir), cotkit_limit=1)
    doc = docs[0]
    assert doc["target"] == "18" and doc["prompt"].rstrip().endswith("A:")
    try:
        res = bridge.process_results(doc, ["She sells 16 - 3 - 4 = 9 eggs, 9 * 2 = $18. The answer is $18.00.",
                                           "The answer is 17.\n\nQ: 18", "no idea"])
    finally:
        bridge.close_all()
    assert res == {"acc": pytest.approx(1 / 3), "maj": 1.0, "unparseable": pytest.approx(1 / 3)}


@pytest.fixture
def tiny_eval(cli, tiny_model, data_dir, tmp_path):
    def run(*args: str):
        out = tmp_path / "out"
        res = cli("--data-dir", data_dir, "eval", "--model", tiny_model, "--max-new-tokens", "12",
                  "--output-dir", out, "--json", *args)
        assert res.exit_code == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1]), out

    return run


def test_eval_json_summary_and_files(tiny_eval):
    summary, out = tiny_eval("--task", "gsm8k", "--limit", "3")
    assert {"task", "n", "accuracy", "stderr", "unparseable"} <= set(summary)
    assert summary["task"] == "gsm8k" and summary["n"] == 3
    results = json.loads((out / "results.json").read_text())
    assert results["lm_eval"]["results"]["cotkit_gsm8k"]["acc,none"] == summary["accuracy"]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert {"prompt", "completion", "extracted", "verdict", "question", "answer"} <= set(rows[0])


def test_self_consistency_reports_maj_at_k(tiny_eval):
    summary, out = tiny_eval("--task", "arc:challenge", "--limit", "2", "--n", "3", "--vote", "majority", "--style", "chat")
    assert summary["samples_per_question"] == 3 and "maj@3" in summary and summary["accuracy"] == summary["maj@3"]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    # three samples at temperature 0.7 with distinct seeds are not all identical for every question
    assert len({r["completion"] for r in rows}) > 2


def test_group_task_reports_subtasks(tiny_eval):
    summary, _ = tiny_eval("--task", "bbh", "--limit", "1", "--max-new-tokens", "4")
    assert summary["n"] == 27 and len(summary["subtasks"]) == 27


def test_eval_errors_are_one_line(cli, data_dir, tiny_model):
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", "/no/such/model", "--limit", "1")
    assert res.exit_code == 2 and "/no/such/model" in res.stderr and "Traceback" not in res.stderr
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", tiny_model, "--vote", "plurality")
    assert res.exit_code == 2 and "--vote" in res.stderr
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", tiny_model, "--style", "fewshots")
    assert res.exit_code == 2 and "'fewshot'" in res.stderr
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", tiny_model, "-B", "temprature=1", "--limit", "1")
    assert res.exit_code == 2 and "temprature" in res.stderr and "batch_size" in res.stderr  # the backend's own options listed


def test_parity_with_lm_eval_builtin_task(tiny_eval):
    summary, out = tiny_eval("--task", "gsm8k", "--limit", "2", "--lm-eval-task", "gsm8k_cot")
    parity = summary["parity"]
    assert parity["n"] == 2 and set(parity["filters"]) == {"strict-match", "flexible-extract"}
    rows = [json.loads(line) for line in (out / "parity.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("lm_eval" in r and "verdict" in r for r in rows)
