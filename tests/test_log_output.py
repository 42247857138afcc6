"""What `cotkit train` and `cotkit show RUN...` print: whole numbers in a log file (no table squeezed to 80
columns), the run as JSON, and several runs side by side."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cotkit.run.report import accuracy_of, fmt_acc, iteration_rows

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


@pytest.fixture(scope="module")
def logged_run(data_dir, formatted_model, star_args, tmp_path_factory) -> tuple[Path, str]:
    """A one-iteration STaR run whose `cotkit train` output went to a file: (run directory, that output)."""
    tmp = tmp_path_factory.mktemp("logged")
    out = tmp / "run"
    args = ["--data-dir", str(data_dir), *star_args(formatted_model, out)]
    args[args.index("--iterations") + 1] = "1"
    return out, _cotkit_to_file(args, tmp / "train.log")


def _iterations(run: Path) -> list[dict]:
    return iteration_rows([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()])


def test_train_and_show_written_to_a_file_keep_every_number(logged_run, tmp_path):
    out, train_log = logged_run
    show_log = _cotkit_to_file(["show", str(out)], tmp_path / "show.log")

    rows = _iterations(out)
    dev_cells = [fmt_acc(r["dev"]) for r in rows]
    assert len(dev_cells) == 2
    for log in (train_log, show_log):
        assert "…" not in log  # no cell, header or path cut short
        table_lines = [line for line in log.splitlines() if line.startswith("│")]
        for it, cell in enumerate(dev_cells):
            # the whole `41.0% [31.2, 51.6] (n=6)` on the iteration's row, not wrapped onto a second line
            assert any(line.split("│")[1].strip() == str(it) and cell in line for line in table_lines), (cell, log[-3000:])
        assert max(len(line) for line in table_lines) > 80


def test_show_json_is_the_run_and_several_runs_are_compared(cli, logged_run, tmp_path):
    out, _ = logged_run
    rows = _iterations(out)
    r = cli("show", out, "--json")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["method"], got["status"], got["config"]["method"]) == ("star", "complete", "star")
    assert [i["iteration"] for i in got["iterations"]] == [0, 1]
    acc, low, high, n = accuracy_of(rows[1]["heldout"])
    assert got["final_heldout"] == {"accuracy": acc, "ci_low": low, "ci_high": high, "n": n}
    assert got["base_heldout"]["n"] == n and "iter_001/train" in got["phases"]

    other = tmp_path / "copy"
    shutil.copytree(out, other)
    r = cli("show", out, other)
    assert r.exit_code == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if fmt_acc(rows[1]["heldout"]) in line]
    assert len(lines) == 2 and all(fmt_acc(rows[0]["heldout"]) in line and fmt_acc(rows[1]["dev"]) in line for line in lines)
    both = json.loads(cli("show", out, other, "--json").stdout)
    assert [x["path"] for x in both["runs"]] == [str(out), str(other)]

    r = cli("show", out, "star")
    assert r.exit_code == 2 and "not a run directory" in r.stderr
