"""RunContext: what a method's `run(ctx)` works with (config, task, run directory, resumable phases).

A method calls `ctx.phase("iter_001/sample", fn)`: on a fresh run `fn()` runs and its JSON result
is recorded; on `--resume` a recorded phase is skipped and its result returned as it was, so the
method's loop reads top to bottom with no resume logic of its own. A phase must write its files
atomically (`cotkit.jsonl`, or a temp folder renamed) and take its randomness from
`ctx.seed_for(name)`, so a phase run again after a kill produces the same files.

Fault injection for tests and drills: COTKIT_FAULT_AFTER_PHASE=<phase> makes the process SIGKILL
itself right after recording that phase; COTKIT_FAULT_AT_STEP=<phase>:<step> right after that
optimizer step of a training phase.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from cotkit.budget import totals
from cotkit.config import RunConfig, TrainConfig
from cotkit.contracts import Backend, Task
from cotkit.errors import CotkitError
from cotkit.jsonl import atomic_write_jsonl
from cotkit.run.display import RunDisplay
from cotkit.run.fingerprint import sha256_text
from cotkit.run.rank import is_main_process
from cotkit.run.state import RunState, timestamp
from cotkit.run.tracking import RunTracking

FAULT_AFTER_PHASE_ENV = "COTKIT_FAULT_AFTER_PHASE"
FAULT_AT_STEP_ENV = "COTKIT_FAULT_AT_STEP"

ConfigT = TypeVar("ConfigT")


class RunContext(Generic[ConfigT]):
    """What `Method.run(ctx)` gets: the config, the task, the run directory and resumable phases.

    Annotate a method's parameter as `RunContext[MyConfig]` and `ctx.options` is typed as the
    method's Config dataclass.
    """

    config: TrainConfig
    """The resolved config, every default filled in (what config.yaml holds)."""
    run_config: RunConfig
    """The run-level options: method, task, model, backend, seeds, output directory."""
    options: ConfigT
    """The method's own options: an instance of its `Config` dataclass."""
    path: Path
    """The run directory (runs/<method>-<task>-<model> unless --output-dir)."""
    display: RunDisplay
    """Where phase lines, progress bars and tables are shown (silent on non-main processes)."""
    data_dir: Path | None
    """The folder the task reads its data files from (None: the task's own default)."""
    state: RunState
    """The completed phases and their results (state.json)."""
    started: float
    """When this process opened the run (time.time())."""
    tracking: RunTracking
    """The experiment trackers of `--report-to` (does nothing when none are asked for)."""

    def __init__(self, config: TrainConfig, path: Path, *, display: RunDisplay | None = None, data_dir: Path | None = None):
        self.config = config
        self.run_config = config.run
        self.options = config.method
        self.path = path
        self.display = display or RunDisplay()
        self.data_dir = data_dir
        self.state = RunState(path / "state.json")
        self._task: Task | None = None
        self._base_model: str | None = None
        self.started = time.time()
        self.tracking = RunTracking()
        self._made_backends: weakref.WeakSet[Backend] = weakref.WeakSet()
        self._kept_backend: Backend | None = None

    # -- identity ----------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        """The run seed."""
        return self.run_config.seed

    def seed_for(self, name: str) -> int:
        """A seed for one phase, derived from the run seed and the phase name (stable across resumes)."""
        return int(sha256_text(f"{self.seed}:{name}")[:8], 16)

    @property
    def task(self) -> Task:
        """The task object (built once)."""
        if self._task is None:
            from cotkit.plugins import host

            rc = self.run_config
            self._task = host().task(
                rc.task, data_dir=self.data_dir, split_seed=rc.split_seed, dev_size=rc.dev_size, **rc.task_options
            )
        return self._task

    @property
    def base_model(self) -> str:
        """The starting model as a local folder or hub id (aliases and GGUF files resolved)."""
        if self._base_model is None:
            from cotkit.models import resolve_model_path

            self._base_model = resolve_model_path(self.run_config.model)
        return self._base_model

    def model_path(self, ref: str) -> str:
        """A model reference as recorded in results: "base" or a folder relative to the run directory."""
        return self.base_model if ref == "base" else str(self.path / ref)

    def iter_dir(self, iteration: int) -> Path:
        """The folder of one iteration (iter_000 is the base model's)."""
        d = self.path / f"iter_{iteration:03d}"
        if is_main_process():
            d.mkdir(parents=True, exist_ok=True)
        return d

    # -- phases ------------------------------------------------------------------------------

    def done(self, name: str) -> bool:
        """True when the phase completed (in this or an earlier process)."""
        return self.state.done(name)

    def result(self, name: str) -> Any:
        """The recorded result of a completed phase."""
        return self.state.phases[name]["result"]

    def phase(self, name: str, fn: Callable[[], Any], *, all_processes: bool = False) -> Any:
        """Run `fn` once for this run: a completed phase is skipped and its recorded result returned.

        `fn` returns a JSON-serialisable result; its scalar entries become the phase's row in
        metrics.jsonl. Under a multi-process launch, only the main process runs a phase unless
        `all_processes` (training), and the others wait for it to be recorded.
        """
        if self.state.done(name):
            result = self.state.phases[name]["result"]
            self.display.phase_skipped(name, result)
            return result
        if not is_main_process() and not all_processes:
            return self._wait_for(name)
        self.display.phase_start(name)
        if is_main_process():
            self.state.running = name
            self.state.save()
        t0, spent_before = time.time(), totals()
        result = fn()
        seconds = round(time.time() - t0, 3)
        spent = {k: v - spent_before[k] for k, v in totals().items()}
        try:
            json.dumps(result)
        except (TypeError, ValueError) as e:
            raise CotkitError(f"phase {name} returned a result that is not JSON-serialisable: {e}") from e
        if is_main_process():
            self.state.phases[name] = {"result": result, "seconds": seconds, "finished": timestamp(), **spent}
            self.state.running = None
            self.state.save()
            self.write_metrics()
            self.tracking.phase_done(name, result, seconds)
        self.display.phase_done(name, seconds, result)
        if os.environ.get(FAULT_AFTER_PHASE_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def _wait_for(self, name: str, poll: float = 2.0) -> Any:
        while True:
            state = RunState(self.state.path)
            if state.done(name):
                self.state = state
                return state.phases[name]["result"]
            if state.status == "failed":
                raise CotkitError(f"the main process failed during phase {name}")
            time.sleep(poll)

    def fault_step(self, phase: str) -> int | None:
        """The optimizer step at which COTKIT_FAULT_AT_STEP kills this phase, if any."""
        spec = os.environ.get(FAULT_AT_STEP_ENV, "")
        target, _, step = spec.rpartition(":")
        return int(step) if target == phase and step.isdigit() else None

    # -- metrics -----------------------------------------------------------------------------

    def metrics_rows(self) -> list[dict[str, Any]]:
        """One row per completed phase: its name, iteration, seconds, scalar results and its `rates` (see cotkit.run.report)."""
        rows = []
        for name, rec in self.state.phases.items():
            row: dict[str, Any] = {"phase": name}
            m = re.match(r"iter_(\d+)/", name)
            if m:
                row["iteration"] = int(m.group(1))
            row["seconds"] = rec.get("seconds")
            result = rec.get("result")
            if isinstance(result, dict):
                for k, v in result.items():
                    if v is None or isinstance(v, (int, float, str, bool)) or (k == "rates" and isinstance(v, dict)):
                        row[k] = v
            rows.append(row)
        return rows

    def write_metrics(self) -> None:
        """Rewrite metrics.jsonl from the recorded phases (atomic, so never torn)."""
        atomic_write_jsonl(self.path / "metrics.jsonl", self.metrics_rows())

    # -- reports -----------------------------------------------------------------------------

    def write_report(self) -> None:
        """Write report.md and accuracy.png from the phases recorded so far (main process)."""
        if not is_main_process():
            return
        from cotkit.run.report import write_report

        write_report(self.path, self.config.to_dict(), self.metrics_rows())
        self.tracking.report_written(self.path / "accuracy.png")

    def show_iterations(self) -> None:
        """Print the table of iterations (dev accuracy and funnel) recorded so far."""
        from cotkit.run.report import iteration_rows, iteration_table

        self.display.table(iteration_table(iteration_rows(self.metrics_rows()), title=f"{self.run_config.method}: {self.run_config.task}"))

    # -- helpers for methods -----------------------------------------------------------------

    def backend(self, model: str) -> Backend:
        """A sampling backend for `model` (a folder or the base spec); `release_backend` or `close()` it before training.

        The backend kept by `release_backend` is handed out again with `model`'s weights loaded into
        it when it can take them, so an engine such as vLLM starts once per run, not once per phase.
        """
        kept, self._kept_backend = self._kept_backend, None
        if kept is not None:
            try:
                if kept.load_weights(model):
                    return kept
            except BaseException:
                kept.close()  # an engine that failed half-way through loading is no use to anyone
                raise
            kept.close()
        from cotkit.models import load_backend

        backend = load_backend(self.run_config.backend, model=model, **self.run_config.backend_options)
        self._made_backends.add(backend)
        return backend

    def release_backend(self, backend: Backend) -> None:
        """Free `backend`'s memory before training: one this context made and that can sleep is kept for the next `backend()`, any other is closed."""
        if backend in self._made_backends and self._kept_backend is None and backend.sleep():
            self._kept_backend = backend
        else:
            backend.close()

    def close_backends(self) -> None:
        """Close the backend kept between phases (when the run ends)."""
        kept, self._kept_backend = self._kept_backend, None
        if kept is not None:
            kept.close()

    def progress(self, description: str, total: int):
        """A progress bar for a method's own loop: `with ctx.progress("train", n) as update: ...`."""
        return self.display.progress(description, total)

    def log(self, text: str) -> None:
        """A line on the run's display (main process only)."""
        self.display.message(text)
