"""The public API: plugins and examples are written against `from cotkit import ...` only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cotkit

ROOT = Path(__file__).resolve().parents[1]
#: Code written the way a third party writes a plugin: it may use nothing but the public API.
PLUGIN_SOURCES = [ROOT / "plugins", ROOT / "examples", ROOT / "tests/fixtures/cotkit-example-plugin/cotkit_example"]


def _plugin_files() -> list[Path]:
    return sorted(p for root in PLUGIN_SOURCES for p in root.rglob("*.py") if "build" not in p.relative_to(root).parts)


def internal_imports(source: str) -> list[str]:
    """`line: what` for every import that reaches past the public API (`cotkit.<module>`, or a name not in __all__)."""
    public = set(cotkit.__all__)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("cotkit.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("cotkit."):
                found.append(f"{node.lineno}: from {node.module} import ...")
            elif node.module == "cotkit":
                found += [f"{node.lineno}: from cotkit import {a.name}" for a in node.names if a.name not in public]
    return found


def test_the_check_finds_internal_imports():
    src = "from cotkit import Task, answers\nimport cotkit.run\ndef f():\n    from cotkit.harness.train import SFTConfig\n"
    assert internal_imports(src) == ["1: from cotkit import answers", "2: import cotkit.run", "4: from cotkit.harness.train import ..."]
    assert internal_imports("from cotkit import Task, option, hookimpl\nfrom .common import x\n") == []


@pytest.mark.parametrize("path", _plugin_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_and_examples_import_only_the_public_api(path):
    assert internal_imports(path.read_text(encoding="utf-8")) == []


def test_every_public_name_resolves():
    for name in cotkit.__all__:
        assert getattr(cotkit, name) is not None, name
    with pytest.raises(AttributeError):
        cotkit.not_a_public_name  # noqa: B018


def test_importing_cotkit_stays_light():
    code = "import cotkit, sys; print(sorted(m for m in ('torch', 'transformers', 'rich', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_readme_lists_exactly_the_public_api():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Writing a plugin", 1)[1].split("\n## ", 1)[0]
    table = section.split("| group | names |", 1)[1].split("\n\n", 1)[0]
    import re

    listed = {name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[2])}
    assert listed == set(cotkit.__all__) - {"__version__"}
