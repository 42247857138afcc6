"""`--resume` continues only what it can: not a hand-edited config.yaml, not a folder that is no run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "fixtures" / "run_methods.py"


@pytest.fixture
def train(cli, data_dir, tiny_model):
    """`cotkit --plugin run_methods.py --data-dir DATA train ARGS...` in this process."""

    def run(*args):
        return cli("--plugin", PLUGIN, "--data-dir", data_dir, "train", *args)

    return run


def start(train, tiny_model, out: Path, rounds: int = 2):
    r = train("--method", "tally", "--task", "gsm8k", "--model", tiny_model, "-o", out, "--rounds", rounds)
    assert r.exit_code == 0, r.stderr
    return r


def one_line_error(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_resume_refuses_a_hand_edited_config(train, tiny_model, tmp_path):
    out = tmp_path / "run"
    start(train, tiny_model, out)
    cfg = out / "config.yaml"
    original = cfg.read_text()
    state_before = (out / "state.json").read_text()
    cfg.write_text(original.replace("rounds: 2", "rounds: 5"))

    line = one_line_error(train("--resume", "-o", out))
    assert f"cannot resume {out}: {cfg} was edited after the run started (tally.rounds: 2 -> 5)" in line
    assert f"cotkit train --config {cfg} --output-dir NEW_DIR" in line  # how to proceed
    assert (out / "state.json").read_text() == state_before  # nothing ran
    assert not (out / "iter_003").exists()

    # the suggested way forward works: a new run from the edited file
    r = train("--config", cfg, "--output-dir", tmp_path / "new", "--model", tiny_model)
    assert r.exit_code == 0, r.stderr
    assert len(json.loads((tmp_path / "new" / "state.json").read_text())["phases"]) == 5
    # and putting the file back as it was resumes the original run
    cfg.write_text(original)
    assert train("--resume", "-o", out).exit_code == 0


def test_a_config_edit_that_changes_no_option_still_resumes(train, tiny_model, tmp_path):
    out = tmp_path / "run"
    start(train, tiny_model, out)
    cfg = out / "config.yaml"
    cfg.write_text("# checked by hand, nothing changed\n" + cfg.read_text())
    r = train("--resume", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "completed earlier" in r.stderr


def test_resume_refuses_an_edit_even_when_the_flags_match_it(train, tiny_model, tmp_path):
    """Giving the edited values as flags too does not launder the edit."""
    out = tmp_path / "run"
    start(train, tiny_model, out)
    cfg = out / "config.yaml"
    cfg.write_text(cfg.read_text().replace("rounds: 2", "rounds: 3"))
    line = one_line_error(train("--method", "tally", "--task", "gsm8k", "--model", tiny_model, "-o", out, "--rounds", "3", "--resume"))
    assert "was edited after the run started (tally.rounds: 2 -> 3)" in line


@pytest.mark.parametrize("with_options", [False, True], ids=["only-output-dir", "full-command"])
def test_resume_on_a_folder_that_is_not_a_run_says_so(train, tiny_model, tmp_path, with_options):
    folder = tmp_path / "my-results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    options = ["--method", "tally", "--task", "gsm8k", "--model", tiny_model] if with_options else []
    line = one_line_error(train(*options, "--resume", "-o", folder))
    assert f"--resume: {folder} is not a cotkit run (it has files but no config.yaml)" in line
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # nothing started there


def test_resume_of_a_run_not_started_yet_starts_it(train, tiny_model, tmp_path):
    """A retry loop that always passes --resume still starts a run the first time (or after a kill before config.yaml)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.lock").write_text('{"pid": 1}')  # what a run killed at its very start leaves
    r = train("--method", "tally", "--task", "gsm8k", "--model", tiny_model, "-o", out, "--resume")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
