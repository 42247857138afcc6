"""Dependencies point down: `lint-imports` checks the contracts of pyproject.toml ([tool.importlinter]).

The layers, top to bottom, and why each module sits where it does, are listed there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: install the test tools (pip install -e '.[test]')"
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


def test_imports_keep_the_contracts():
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_each_contract_catches_an_import_hidden_in_a_function(tmp_path):
    # A copy of cotkit with one breach per contract, each inside a function as upward imports hide.
    shutil.copytree(ROOT / "cotkit", tmp_path / "cotkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    breaches = {
        "errors.py": "from cotkit.cli import main",
        "jsonl.py": "import cotkit_plugins.methods",
        "run/report.py": "from cotkit import RunContext",
    }
    for name, statement in breaches.items():
        path = tmp_path / "cotkit" / name
        path.write_text(path.read_text() + f"\n\ndef _breach():\n    {statement}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # the copy is found before the installed cotkit
    res = lint_imports(tmp_path, env)
    assert res.returncode != 0
    for line in (
        "cotkit.errors is not allowed to import cotkit.cli",
        "cotkit.jsonl -> cotkit_plugins.methods",
        "cotkit.run.report -> cotkit (l.",
    ):
        assert line in res.stdout, res.stdout
