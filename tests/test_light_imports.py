"""`cotkit --help`, the commands' --help and `cotkit plugins` stay fast: no torch, transformers, lm_eval, vllm or datasets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "lm_eval", "vllm", "datasets", "accelerate", "peft", "trl", "sympy")

PROBE = """
import json, sys
from cotkit.cli.main import main
try:
    main({argv!r})
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["plugins"], ["plugins", "--json"], ["score", "--help"], ["sample", "--help"], ["eval", "--help"], ["train", "--help"]],
)
def test_no_heavy_imports(argv):
    res = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True)
    loaded = json.loads(res.stderr.strip().splitlines()[-1])
    assert loaded == [], f"cotkit {' '.join(argv)} imported {loaded}"
