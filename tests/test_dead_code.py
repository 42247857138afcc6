"""No dead code: vulture, configured in pyproject.toml ([tool.vulture]), finds nothing unused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_vulture_finds_no_unused_code():
    res = subprocess.run([sys.executable, "-m", "vulture"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_vulture_would_report_an_unused_function(tmp_path):
    (tmp_path / "mod.py").write_text("def used():\n    return 1\n\n\ndef never_called():\n    return 2\n\n\nused()\n")
    res = subprocess.run([sys.executable, "-m", "vulture", "--min-confidence", "60", str(tmp_path)], capture_output=True, text=True)
    assert "never_called" in res.stdout and "used'" not in res.stdout
