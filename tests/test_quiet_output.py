"""`cotkit eval` shows cotkit's own output only: no lm-eval bars, no git error text; `-v` shows lm-eval's output again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _eval(tiny_model: Path, data_dir: Path, cwd: Path, *flags: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COTKIT_FAULT")}
    env.update({"OMP_NUM_THREADS": "1", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "GIT_CEILING_DIRECTORIES": str(cwd.parent)})
    args = [*flags, "--data-dir", str(data_dir), "eval", "--task", "gsm8k", "--model", str(tiny_model), "--limit", "2",
            "--max-new-tokens", "4", "--output-dir", str(cwd / f"out{len(flags)}")]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "cotkit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_eval_outside_a_git_checkout_prints_no_third_party_noise(tiny_model, data_dir, tmp_path):
    quiet = _eval(tiny_model, data_dir, tmp_path)
    assert "fatal" not in quiet and "not a git repository" not in quiet
    assert "it/s" not in quiet  # lm-eval's tqdm bar while it builds requests
    verbose = _eval(tiny_model, data_dir, tmp_path, "-v")
    assert "it/s" in verbose


def test_transformers_bars_are_off_unless_verbose(monkeypatch):
    from transformers.utils import logging as hf_logging

    from cotkit.console import VERBOSE_ENV, quiet_transformers

    hf_logging.enable_progress_bar()
    monkeypatch.setenv(VERBOSE_ENV, "1")  # what `cotkit -v` sets
    quiet_transformers()
    assert hf_logging.is_progress_bar_enabled()
    monkeypatch.delenv(VERBOSE_ENV)
    quiet_transformers()
    assert not hf_logging.is_progress_bar_enabled()
