"""Output captured into a file (a log, a CI job) holds whole numbers: rich does not squeeze tables to 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cotkit.run.report import fmt_acc, iteration_rows

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """The environment of a user who pipes cotkit into a file: no COLUMNS, no terminal."""
    e = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES") and not k.startswith("COTKIT_FAULT")}
    e.update({"OMP_NUM_THREADS": "1", "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    return e


def _cotkit_to_file(args: list[str], log: Path) -> str:
    with open(log, "w", encoding="utf-8") as f:
        done = subprocess.run([sys.executable, "-m", "cotkit", *args], cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT, timeout=900)
    text = log.read_text(encoding="utf-8")
    assert done.returncode == 0, text[-3000:]
    return text


def test_train_and_show_written_to_a_file_keep_every_number(data_dir, formatted_model, star_args, tmp_path):
    out = tmp_path / "run"
    args = ["--data-dir", str(data_dir), *star_args(formatted_model, out)]
    args[args.index("--iterations") + 1] = "1"
    train_log = _cotkit_to_file(args, tmp_path / "train.log")
    show_log = _cotkit_to_file(["show", str(out)], tmp_path / "show.log")

    rows = iteration_rows([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()])
    dev_cells = [fmt_acc(r["dev"]) for r in rows]
    assert len(dev_cells) == 2
    for log in (train_log, show_log):
        assert "…" not in log  # no cell, header or path cut short
        table_lines = [line for line in log.splitlines() if line.startswith("│")]
        for it, cell in enumerate(dev_cells):
            # the whole `41.0% [31.2, 51.6] (n=6)` on the iteration's row, not wrapped onto a second line
            assert any(line.split("│")[1].strip() == str(it) and cell in line for line in table_lines), (cell, log[-3000:])
        assert max(len(line) for line in table_lines) > 80
