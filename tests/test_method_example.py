"""examples/best_of_k.py, the method DEVELOPERS.md walks through, loads as a plugin file and trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]


def test_the_example_method_samples_filters_and_fine_tunes(cli, tiny_model, data_dir, gsm8k_answers, tmp_path):
    run = tmp_path / "run"
    result = cli(
        "--plugin", str(REPO / "examples" / "best_of_k.py"), "--plugin", str(REPO / "tests" / "fixtures" / "answer_backend.py"),
        "--data-dir", str(data_dir), "train", "--method", "best-of-k", "--task", "gsm8k", "--model", str(tiny_model),
        "--backend", "answers", "--backend-options", f"answers={gsm8k_answers}",
        "--train-limit", "4", "--dev-limit", "2", "--samples-per-question", "2", "--max-new-tokens", "8", "--steps", "2",
        "--sft.batch-size", "2", "--sft.grad-accum", "1", "--sft.warmup-steps", "0", "--output-dir", str(run),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    phases = json.loads((run / "state.json").read_text())["phases"]
    kept = phases["iter_001/sample"]["result"]["train_examples"]
    assert 0 < kept < 8  # the backend answers about half right: some kept, some filtered out
    assert phases["iter_001/train"]["result"]["steps"] == 2
    assert (run / "iter_001" / "checkpoint" / "model.safetensors").exists()
    assert phases["iter_001/eval_dev"]["result"]["model"] == "iter_001/checkpoint"
