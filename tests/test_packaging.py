"""The wheel carries the core, the built-in plugins and the task data, and works when installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (whl,) = out.glob("cotkit-*.whl")
    return whl


def _tracked(folder: str, suffixes: tuple[str, ...]) -> list[str]:
    files = subprocess.run(["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    files += subprocess.run(["git", "ls-files", "--others", "--exclude-standard", folder], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    return [f for f in files if f.endswith(suffixes)]


def test_wheel_contains_plugins_and_task_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    mapping = {"plugins/": "cotkit_plugins/", "tasks/": "cotkit_tasks/", "cotkit/": "cotkit/"}
    expected = []
    for folder, package in mapping.items():
        for f in _tracked(folder, (".py", ".yaml", ".txt", ".json", ".jsonl", ".md")):
            expected.append(package + f[len(folder):])
    missing = sorted(set(expected) - names)
    assert not missing, f"missing from the wheel: {missing[:10]}"
    assert any(n.startswith("cotkit_plugins/tasks/") and n.endswith(".py") for n in names)
    assert any(n.startswith("cotkit_tasks/") and not n.endswith(".py") for n in names)


def test_installed_wheel_lists_plugins(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    # run from a folder without the source tree so only the installed copy can be imported
    res = subprocess.run([sys.executable, "-c", "import cotkit, cotkit_plugins; print(cotkit.__file__, cotkit_plugins.__file__)"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert all(p.startswith(str(target)) for p in res.stdout.split())
    res = subprocess.run([sys.executable, "-m", "cotkit", "plugins", "--json"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    kinds = {r["kind"] for r in json.loads(res.stdout)}
    assert {"task", "verifier", "backend", "method"} <= kinds
