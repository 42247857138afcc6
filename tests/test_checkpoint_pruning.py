"""`keep_checkpoints: last` never deletes the checkpoint a method still uses.

When an iteration yields nothing to train on, the method goes on with the previous iteration's
model. The IRPO and STaR tests make iteration 1 train, iteration 2 train nothing, and iteration 3
sample from the iteration-1 model again; before the shared pruning helper, IRPO deleted that model
at the end of iteration 2 and iteration 3 failed to load it.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_pad import pad_argv, run_cli, teacher_files  # noqa: F401  (a fixture)

from cotkit.harness.iterate import prune_checkpoints

REPO = Path(__file__).resolve().parents[1]
ANSWER_BACKEND = REPO / "tests" / "fixtures" / "answer_backend.py"


class _Ctx:
    """What prune_checkpoints reads of a RunContext: the run folder and which phases are done."""

    def __init__(self, path: Path, done: set[str]):
        self.path = path
        self._done = done

    def done(self, phase: str) -> bool:
        return phase in self._done


def test_the_helper_keeps_the_model_in_use_and_waits_for_the_summary(tmp_path):
    for it in (1, 2, 3):
        (tmp_path / f"iter_{it:03d}" / "checkpoint").mkdir(parents=True)
    assert prune_checkpoints(_Ctx(tmp_path, set()), 3, keep="iter_003/checkpoint") == []  # summary not recorded yet
    (tmp_path / "iter_002" / "refine" / "checkpoint").mkdir(parents=True)  # a method's second model of an iteration
    ctx = _Ctx(tmp_path, {"iter_003/summary"})
    assert prune_checkpoints(ctx, 3, keep="iter_001/checkpoint") == ["iter_002/checkpoint", "iter_002/refine/checkpoint"]
    assert (tmp_path / "iter_001" / "checkpoint").is_dir() and (tmp_path / "iter_003" / "checkpoint").is_dir()


def _states(out: Path) -> dict:
    return json.loads((out / "state.json").read_text())


def _check_skipped_middle_iteration(out: Path, skipped_key: str) -> None:
    state = _states(out)
    assert state["status"] == "complete"
    phases = state["phases"]
    assert phases["iter_001/train"]["result"]["checkpoint"] == "iter_001/checkpoint"
    assert phases["iter_002/train"]["result"] == {"checkpoint": "iter_001/checkpoint", "steps": 0, "skipped": True, skipped_key: 0}
    assert (out / "iter_001" / "checkpoint" / "config.json").exists()  # still used by iteration 3, so kept until then
    final = phases["iter_003/train"]["result"]["checkpoint"]
    assert (out / final / "config.json").exists()


def _answer_args(method: str, model: Path, data_dir: Path, answers: Path, out: Path, override: str) -> list[str]:
    return [
        "--plugin", str(ANSWER_BACKEND), "--data-dir", str(data_dir), "train", "--method", method, "--task", "gsm8k",
        "--model", str(model), "--output-dir", str(out), "--backend", "answers",
        "--backend-option", f"answers={answers}", "--backend-option", f"override={override}",
        "--style", "zeroshot", "--iterations", "3", "--train-limit", "4", "--dev-limit", "1", "--no-final-eval",
        "--max-new-tokens", "8", "--keep-checkpoints", "last",
    ]  # fmt: skip


def test_irpo_keeps_the_model_an_iteration_without_pairs_goes_on_with(cli, tiny_model, data_dir, gsm8k_answers, tmp_path):
    out = tmp_path / "irpo"
    # iteration 2 samples from the iteration-1 model, whose answers are all right: no loser, no pair
    argv = _answer_args("irpo", tiny_model, data_dir, gsm8k_answers, out, "iter_001=right")
    r = cli(*argv, "--samples-per-question", "2", "--sft.grad-accum", "2", "--max-steps", "1")
    assert r.exit_code == 0, r.stderr[-2000:]
    _check_skipped_middle_iteration(out, "pairs")


def test_star_keeps_the_model_an_iteration_without_rationales_goes_on_with(cli, tiny_model, data_dir, gsm8k_answers, tmp_path):
    out = tmp_path / "star"
    # iteration 2's model answers everything wrong, with or without the hint: nothing to train on
    argv = _answer_args("star", tiny_model, data_dir, gsm8k_answers, out, "iter_001=wrong")
    r = cli(*argv, "--steps", "1", "--sft.grad-accum", "2")
    assert r.exit_code == 0, r.stderr[-2000:]
    _check_skipped_middle_iteration(out, "examples")


def test_pad_prunes_earlier_students_and_keeps_the_final_one(tiny_model, data_dir, teacher_files, tmp_path):
    # PaD trains on the verified data of every round so far, so after a round that trained, no
    # round is skipped; its pruning goes through the same helper, checked here on its normal path.
    out = tmp_path / "pad"
    argv = [*pad_argv(tiny_model, out, teacher_files, data_dir), "--iterations", "3", "--keep-checkpoints", "last", "--no-final-eval"]
    assert run_cli(argv) == 0
    state = _states(out)
    assert state["status"] == "complete"
    assert state["phases"]["iter_003/train"]["result"]["checkpoint"] == "iter_003/checkpoint"
    assert (out / "iter_003" / "checkpoint" / "config.json").exists()
    assert not (out / "iter_001" / "checkpoint").exists() and not (out / "iter_002" / "checkpoint").exists()
