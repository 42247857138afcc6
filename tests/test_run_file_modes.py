"""Every file of a run directory gets the mode the user's umask asks for (0666 & ~umask), as `open()` would give."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "fixtures" / "run_methods.py"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_run_files_follow_the_umask(data_dir, tiny_model, tmp_path, umask):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cotkit", "--plugin", str(PLUGIN), "--data-dir", str(data_dir), "train", "--method", "tally",
           "--task", "gsm8k", "--model", str(tiny_model), "--output-dir", str(out), "--rounds", "2"]  # fmt: skip
    env = {**os.environ, "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(umask))
    assert r.returncode == 0, r.stderr[-2000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.yaml", "manifest.json", "state.json", "metrics.jsonl", "report.md", "values.jsonl"}
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_atomic_writes_follow_the_umask(tmp_path):
    from cotkit.jsonl import atomic_write_json

    before = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
