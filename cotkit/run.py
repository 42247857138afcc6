"""The run directory and the run context a method's `run(ctx)` works in.

    runs/<name>/
      config.yaml      the resolved config, every default filled in
      manifest.json    package versions, model, data and config.yaml fingerprints, seeds, hardware, git revision
      state.json       completed phases with their results (rewritten atomically after each)
      metrics.jsonl    one row per completed phase (rebuilt from state.json, so never torn)
      iter_000/ ...    per-iteration files written by the method (samples, training set, checkpoint)
      report.md, accuracy.png
      run.lock         present while a process works in the directory (cotkit.runlock); a second
                       process is refused, a lock left by a killed one is taken over

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

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cotkit.config import TrainConfig, config_diff, dump_yaml, from_saved, load_yaml
from cotkit.errors import ConfigError, CotkitError
from cotkit.jsonl import atomic_write_json, atomic_write_jsonl, atomic_write_text

FAULT_AFTER_PHASE_ENV = "COTKIT_FAULT_AFTER_PHASE"
FAULT_AT_STEP_ENV = "COTKIT_FAULT_AT_STEP"
STATE_VERSION = 1


# -------------------------------------------------------------------------------- processes


def process_index() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 when run alone)."""
    return int(os.environ.get("RANK", os.environ.get("PROCESS_INDEX", "0")) or 0)


def world_size() -> int:
    """Number of processes in the launch (1 when run alone)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """True on rank 0: the process that samples, evaluates and writes the run directory."""
    return process_index() == 0


# ----------------------------------------------------------------------------- fingerprints


def default_output_dir(cfg: TrainConfig) -> Path:
    """runs/<method>-<task>-<model> with path-unfriendly characters replaced."""
    model = Path(cfg.run.model.rstrip("/")).name
    name = f"{cfg.run.method}-{cfg.run.task}-{model}"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def sha256_text(text: str) -> str:
    """Hex sha256 of a string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_fingerprint(examples_by_split: dict[str, list[Any]]) -> dict[str, Any]:
    """Per split: the number of examples and a sha256 of their content (ids, questions, answers)."""
    out: dict[str, Any] = {}
    for split, examples in examples_by_split.items():
        payload = json.dumps([e.to_dict() for e in examples], sort_keys=True, ensure_ascii=False, default=str)
        out[split] = {"n": len(examples), "sha256": sha256_text(payload)}
    return out


def model_fingerprint(path: str) -> dict[str, Any]:
    """What identifies a model: for a folder, sha256 of its config and of each weight file."""
    p = Path(path)
    if not p.is_dir():
        return {"source": path, "kind": "hub id"}
    files = {}
    for f in sorted(p.iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".bin", ".json", ".gguf") or f.name == "tokenizer.model"):
            files[f.name] = _sha256_file(f)
    return {"source": str(p.resolve()), "kind": "folder", "files": files}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages a run's numbers depend on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("cotkit", "torch", "transformers", "accelerate", "peft", "trl", "tokenizers", "vllm", "lm-eval", "sympy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def hardware() -> dict[str, Any]:
    """CPU, memory, threads and accelerators of this machine."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "processes": world_size(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if "torch" in sys.modules:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def git_revision() -> dict[str, Any] | None:
    """The git commit of the cotkit source tree and whether it has local changes, if it is a checkout."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


# ------------------------------------------------------------------------------------ state


class RunState:
    """Completed phases, in order, with their results and timings (state.json)."""

    def __init__(self, path: Path):
        self.path = path
        self.phases: dict[str, dict[str, Any]] = {}
        self.running: str | None = None
        self.status = "running"
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:  # cannot happen with atomic writes; say so if it does
                raise CotkitError(f"{path}: not valid JSON ({e.msg}); the run directory is damaged") from e
            self.phases = dict(data.get("phases", {}))
            self.status = data.get("status", "running")
            self.running = data.get("running")

    def done(self, name: str) -> bool:
        """True when the phase completed earlier."""
        return name in self.phases

    def save(self) -> None:
        """Write state.json atomically."""
        atomic_write_json(
            self.path,
            {"version": STATE_VERSION, "status": self.status, "running": self.running, "phases": self.phases},
        )


# ---------------------------------------------------------------------------------- display


class RunDisplay:
    """What a run shows live: a line per phase, a progress bar inside long phases, iteration tables."""

    def __init__(self, enabled: bool = True):
        from cotkit.console import err

        self.console = err
        self.enabled = enabled and is_main_process()

    def phase_start(self, name: str) -> None:
        if self.enabled:
            self.console.print(f"[bold cyan]▶ {name}[/bold cyan]")

    def phase_done(self, name: str, seconds: float, result: Any) -> None:
        if self.enabled:
            self.console.print(f"[green]✓ {name}[/green] [dim]{seconds:.1f}s[/dim] {_brief(result)}")

    def phase_skipped(self, name: str, result: Any) -> None:
        if self.enabled:
            self.console.print(f"[dim]↷ {name} (completed earlier) {_brief(result)}[/dim]")

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)

    def table(self, table: Any) -> None:
        if self.enabled:
            self.console.print(table)

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """A rich progress bar; yields `update(advance=1, **fields)`."""
        if not self.enabled:
            yield lambda advance=1, **kw: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        ) as bar:
            task_id = bar.add_task(description, total=total, info="")

            def update(advance: int = 1, **fields: Any) -> None:
                info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
                bar.update(task_id, advance=advance, info=info)

            yield update


def _brief(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    keys = [k for k, v in result.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)][:6]
    parts = []
    for k in keys:
        v = result[k]
        parts.append(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}")
    return "[dim]" + " ".join(parts) + "[/dim]" if parts else ""


# ---------------------------------------------------------------------------------- context


class RunContext:
    """What `Method.run(ctx)` gets: the config, the task, the run directory and resumable phases."""

    def __init__(self, config: TrainConfig, path: Path, *, display: RunDisplay | None = None, data_dir: Path | None = None):
        self.config = config
        self.run_config = config.run
        self.options = config.method
        self.path = path
        self.display = display or RunDisplay()
        self.data_dir = data_dir
        self.state = RunState(path / "state.json")
        self._task: Any = None
        self._base_model: str | None = None
        self.started = time.time()

    # -- identity ----------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        """The run seed."""
        return self.run_config.seed

    def seed_for(self, name: str) -> int:
        """A seed for one phase, derived from the run seed and the phase name (stable across resumes)."""
        return int(sha256_text(f"{self.seed}:{name}")[:8], 16)

    @property
    def task(self) -> Any:
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
            from cotkit.harness.train import resolve_model_path

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
        t0 = time.time()
        result = fn()
        seconds = round(time.time() - t0, 3)
        try:
            json.dumps(result)
        except (TypeError, ValueError) as e:
            raise CotkitError(f"phase {name} returned a result that is not JSON-serialisable: {e}") from e
        if is_main_process():
            self.state.phases[name] = {"result": result, "seconds": seconds, "finished": _now()}
            self.state.running = None
            self.state.save()
            self.write_metrics()
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
        """One row per completed phase: its name, iteration, seconds and scalar results."""
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
                    if v is None or isinstance(v, (int, float, str, bool)):
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
        from cotkit.report import write_report

        write_report(self.path, self.config.to_dict(), self.metrics_rows())

    def show_iterations(self) -> None:
        """Print the table of iterations (dev accuracy and funnel) recorded so far."""
        from cotkit.report import iteration_rows, iteration_table

        self.display.table(iteration_table(iteration_rows(self.metrics_rows()), title=f"{self.run_config.method}: {self.run_config.task}"))

    # -- helpers for methods -----------------------------------------------------------------

    def backend(self, model: str) -> Any:
        """A sampling backend for `model` (a folder or the base spec); call `close()` before training."""
        from cotkit.models import load_backend

        return load_backend(self.run_config.backend, model=model, **self.run_config.backend_options)

    def progress(self, description: str, total: int):
        """A progress bar for a method's own loop: `with ctx.progress("train", n) as update: ...`."""
        return self.display.progress(description, total)

    def log(self, text: str) -> None:
        """A line on the run's display (main process only)."""
        self.display.message(text)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ opening a run


def remove_partial_writes(path: Path) -> int:
    """Delete the temp files and folders (`.NAME.*tmp`) a killed process left mid-write; how many."""
    # Every file of a run is written as `.NAME.<random>.tmp` (or a `.NAME.tmp` folder) and renamed:
    # a leftover one belongs to a write that never finished, so it is never read and safe to drop.
    removed = 0
    for p in sorted(path.rglob(".*.tmp"), key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


def run_dir_path(config: TrainConfig) -> Path:
    """The run directory of a config: --output-dir, else runs/<method>-<task>-<model>."""
    return Path(config.run.output_dir) if config.run.output_dir else default_output_dir(config)


def _is_empty_run_dir(path: Path) -> bool:
    """True when `path` holds nothing but a lock file and temp files of interrupted writes."""
    from cotkit.runlock import LOCK_NAME

    return all(p.name == LOCK_NAME or (p.name.startswith(".") and p.name.endswith(".tmp")) for p in path.iterdir())


def check_config_unedited(path: Path) -> None:
    """Refuse to resume a run whose config.yaml no longer matches the fingerprint in its manifest."""
    cfg_path, manifest_path = path / "config.yaml", path / "manifest.json"
    if not cfg_path.exists() or not manifest_path.exists():
        return  # killed before its manifest was written: config.yaml is as the run wrote it
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CotkitError(f"{manifest_path}: not valid JSON ({e}); the run directory is damaged") from None
    expected = manifest.get("config_sha256") if isinstance(manifest, dict) else None
    if not expected or _sha256_file(cfg_path) == expected:
        return  # runs from before fingerprints have none to compare with
    original = manifest.get("config")
    try:
        current = load_yaml(cfg_path)
    except ConfigError:
        current = None
    if isinstance(original, dict) and isinstance(current, dict):
        changes = config_diff(original, current)
        if not changes:
            return  # comments, layout, or where the data and the run live: nothing the run computes with
        what = "; ".join(line.strip() for line in changes[:4]) + ("; ..." if len(changes) > 4 else "")
    else:
        what = "its sha256 no longer matches the one in manifest.json"
    raise ConfigError(
        f"cannot resume {path}: {cfg_path} was edited after the run started ({what}); put it back as it was "
        f"to resume, or start a new run with the edited options: cotkit train --config {cfg_path} --output-dir NEW_DIR"
    )


def check_resume_target(path: Path) -> None:
    """What `--resume` needs of a folder: a run with an unedited config.yaml, or nothing there yet."""
    if (path / "config.yaml").exists():
        check_config_unedited(path)
    elif path.is_dir() and not _is_empty_run_dir(path):
        raise CotkitError(
            f"--resume: {path} is not a cotkit run (it has files but no config.yaml); give the run "
            "directory of an earlier `cotkit train`, or start a new run with another --output-dir"
        )
    elif path.exists() and not path.is_dir():
        raise CotkitError(f"--resume: {path} is a file, not a run directory")


def open_run_dir(config: TrainConfig, resume: bool, *, data_dir: Path | None = None, display: RunDisplay | None = None) -> RunContext:
    """Create the run directory, or reopen it for `--resume` after checking the config is unchanged."""
    path = run_dir_path(config)
    config.run.output_dir = str(path)
    cfg_path = path / "config.yaml"
    display = display or RunDisplay()
    if not is_main_process():
        # The main process checks and creates the directory; the others wait for it. (If the main
        # process refuses, the launcher stops every process.)
        while not cfg_path.exists():
            time.sleep(0.5)
        return RunContext(config, path, display=display, data_dir=data_dir)
    if resume:
        check_resume_target(path)
    if cfg_path.exists():
        if not resume:
            raise CotkitError(
                f"run directory {path} already exists; pass --resume to continue it, or choose another --output-dir"
            )
        saved = load_yaml(cfg_path)
        diff = config_diff(saved, config.to_dict())
        if diff:
            raise ConfigError(
                f"cannot resume {path}: the config differs from the one it started with "
                "(start a new --output-dir, or resume with the same options):\n" + "\n".join(diff)
            )
        removed = remove_partial_writes(path)
        display.message(f"[bold]resuming[/bold] {path}" + (f" ({removed} partial file(s) of the killed run removed)" if removed else ""))
    elif resume:
        display.message(f"--resume: no run at {path} yet; starting it")
    if is_main_process():
        path.mkdir(parents=True, exist_ok=True)
        if not cfg_path.exists():
            atomic_write_text(cfg_path, config.to_yaml())
    ctx = RunContext(config, path, display=display, data_dir=data_dir)
    if is_main_process():
        ctx.state.status = "running"
        ctx.state.running = None  # a phase a killed process left running starts again
        ctx.state.save()
        ctx.write_metrics()  # a kill between state and metrics writes leaves metrics one phase behind
    return ctx


def write_manifest(ctx: RunContext, splits: list[str], argv: list[str] | None = None) -> dict[str, Any]:
    """Write manifest.json (first start) or check it and record a resume; refuse changed data or model."""
    path = ctx.path / "manifest.json"
    task = ctx.task
    examples = {s: task.examples(s) for s in splits}
    data_fp = data_fingerprint(examples)
    model_fp = model_fingerprint(ctx.base_model)
    now = _now()
    if path.exists():
        manifest = json.loads(path.read_text(encoding="utf-8"))
        changed = [s for s in data_fp if manifest.get("data", {}).get(s, {}).get("sha256") != data_fp[s]["sha256"]]
        if changed:
            raise CotkitError(
                f"cannot resume {ctx.path}: the task data changed since the run started (splits {', '.join(changed)})"
            )
        old_files = manifest.get("model", {}).get("files")
        if old_files is not None and old_files != model_fp.get("files"):
            raise CotkitError(f"cannot resume {ctx.path}: the model files of {ctx.run_config.model!r} changed since the run started")
        manifest.setdefault("resumes", []).append({"at": now, "completed_phases": len(ctx.state.phases), "argv": argv})
        if "config_sha256" not in manifest:  # a run from before fingerprints: guard it from now on
            manifest.update(_config_fingerprint(ctx.path))
    else:
        manifest = {
            "cotkit_run": 1,
            "created": now,
            "method": ctx.run_config.method,
            "task": task.full_name,
            "model_spec": ctx.run_config.model,
            "model": model_fp,
            "data": data_fp,
            "data_dir": str(ctx.data_dir) if ctx.data_dir else None,
            "seeds": {"seed": ctx.seed, "split_seed": ctx.run_config.split_seed},
            "packages": package_versions(),
            "hardware": hardware(),
            "git": git_revision(),
            "argv": argv,
            "resumes": [],
            **_config_fingerprint(ctx.path),
        }
    if is_main_process():
        atomic_write_json(path, manifest)
    return manifest


def _config_fingerprint(path: Path) -> dict[str, Any]:
    """config.yaml as the run started with it: its sha256 (what `--resume` checks) and its content (for the message)."""
    cfg_path = path / "config.yaml"
    return {"config_sha256": _sha256_file(cfg_path), "config": load_yaml(cfg_path)}


def finish(ctx: RunContext, status: str = "complete") -> None:
    """Mark the run complete (or failed) in state.json."""
    if is_main_process():
        ctx.state.status = status
        ctx.state.running = None
        ctx.state.save()


def load_run(path: str | Path) -> tuple[TrainConfig, RunState]:
    """A finished or partial run's config and state (for `cotkit show RUN_DIR` and reports)."""
    path = Path(path)
    cfg_path = path / "config.yaml"
    if not cfg_path.exists():
        raise CotkitError(f"{path}: not a cotkit run directory (no config.yaml)")
    return from_saved(load_yaml(cfg_path), str(cfg_path)), RunState(path / "state.json")


__all__ = [
    "RunContext",
    "RunDisplay",
    "RunState",
    "default_output_dir",
    "dump_yaml",
    "finish",
    "load_run",
    "open_run_dir",
    "check_resume_target",
    "run_dir_path",
    "write_manifest",
]


def execute(config: TrainConfig, *, resume: bool = False, argv: list[str] | None = None, display: RunDisplay | None = None) -> RunContext:
    """Run a method in its run directory from start (or from the last completed phase) to the end.

    The main process holds the run directory's lock throughout, so a second run on the same
    directory is refused at once; a full disk ends the run with one line saying how to resume.
    """
    from cotkit.data import resolve_data_dir
    from cotkit.diskfull import is_disk_full
    from cotkit.plugins import host
    from cotkit.runlock import RunLock, describe_holder

    method_cls = host().get("method", config.run.method)
    data_dir = resolve_data_dir(config.run.data_dir or _global_data_dir())
    display = display or RunDisplay()
    path = run_dir_path(config)
    lock = RunLock(path)
    try:
        if is_main_process():  # the other ranks of a launch work under their main process's lock
            lock.acquire()
            if lock.taken_over:
                display.message(f"[dim]lock of {describe_holder(lock.taken_over)} taken over: that process is gone[/dim]")
        return _execute_locked(config, method_cls, resume, argv, display, data_dir)
    except BaseException as e:
        if isinstance(e, Exception) and is_disk_full(e, path):
            raise _stopped_by_full_disk(e, path, config, holding_lock=lock.fd is not None) from None
        raise
    finally:
        lock.release()


def _execute_locked(
    config: TrainConfig, method_cls: Any, resume: bool, argv: list[str] | None, display: RunDisplay, data_dir: Path | None
) -> RunContext:
    from cotkit.diskfull import is_disk_full

    ctx = open_run_dir(config, resume, data_dir=data_dir, display=display)
    task = ctx.task
    write_manifest(ctx, list(dict.fromkeys([task.train_split, task.heldout_split])), argv)
    try:
        method_cls().run(ctx)
    except KeyboardInterrupt:
        finish(ctx, "interrupted")
        raise
    except BaseException as e:
        if not (isinstance(e, Exception) and is_disk_full(e, ctx.path)):  # that case is marked by the caller
            finish(ctx, "failed")
        raise
    ctx.write_report()
    finish(ctx, "complete")
    return ctx


def _stopped_by_full_disk(exc: BaseException, path: Path, config: TrainConfig, *, holding_lock: bool) -> CotkitError:
    """Mark the run failed if there is room to, free the space half-written files hold, and say how to resume."""
    from cotkit.diskfull import disk_full_error, resume_command

    if holding_lock and is_main_process():
        # Only under our lock: another process's temp files are never ours to delete.
        if (path / "state.json").exists():  # a run that never started stays one that --resume starts
            with contextlib.suppress(OSError, CotkitError):
                state = RunState(path / "state.json")
                state.status, state.running = "failed", None
                state.save()
        with contextlib.suppress(OSError):
            remove_partial_writes(path)
    try:
        from cotkit.cli.state import options

        plugin_files = list(options.plugin_files)
    except ImportError:
        plugin_files = []
    global_data_dir = None if config.run.data_dir else _global_data_dir()
    return disk_full_error(exc, path, resume_command(path, plugin_files=plugin_files, data_dir=global_data_dir))


def _global_data_dir() -> Path | None:
    try:
        from cotkit.cli.state import options
    except ImportError:
        return None
    return options.data_dir
