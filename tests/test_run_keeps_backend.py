"""A run keeps a backend that can sleep between phases and loads each checkpoint into it (ModelSlot, RunContext).

The vllm backend does this with one engine per run (`-m vllm` in tests/test_backend_vllm.py); here
the hooks are a test plugin's, so the run context's part is checked in every test run.
"""

from __future__ import annotations

import json
from pathlib import Path

KEEPABLE_BACKEND = Path(__file__).resolve().parent / "fixtures" / "keepable_backend.py"


def test_a_star_run_keeps_one_backend_and_loads_each_checkpoint_into_it(cli, data_dir, formatted_model, star_args, tmp_path):
    out, log = tmp_path / "run", tmp_path / "backend.log"
    args = [*star_args(formatted_model, out), "--backend", "keepable", "-B", f"log={log}", "-B", "refuse=iter_002"]
    r = cli("--plugin", KEEPABLE_BACKEND, "--data-dir", data_dir, *args)
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "state.json").read_text())["status"] == "complete"

    checkpoint = {it: str(out / f"iter_00{it}" / "checkpoint") for it in (1, 2)}
    assert log.read_text().splitlines() == [
        f"start {formatted_model}",  # evaluates, samples and rationalizes with the base model
        "sleep",  # kept while iteration 1 fine-tunes
        f"load {checkpoint[1]}",  # evaluates, samples and rationalizes with iteration 1's weights
        "sleep",
        f"refuse {checkpoint[2]}",  # a backend that cannot take a checkpoint is closed, a new one started
        "close",
        f"start {checkpoint[2]}",
        "sleep",  # the method's own close at the end keeps it once more...
        "close",  # ...and the run closes it when it ends
    ]
