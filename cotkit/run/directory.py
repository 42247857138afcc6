"""The run directory: where it is, creating it or reopening it for `--resume`, and marking it finished."""

from __future__ import annotations

import re
import shutil
import time
from functools import partial
from pathlib import Path

from cotkit.config import TrainConfig, config_diff, from_saved, load_yaml
from cotkit.errors import ConfigError, CotkitError
from cotkit.jsonl import atomic_write_text
from cotkit.run.context import RunContext
from cotkit.run.display import RunDisplay
from cotkit.run.manifest import check_config_unedited
from cotkit.run.rank import is_main_process
from cotkit.run.state import RunState


def default_output_dir(cfg: TrainConfig) -> Path:
    """runs/<method>-<task>-<model> with path-unfriendly characters replaced."""
    model = Path(cfg.run.model.rstrip("/")).name
    name = f"{cfg.run.method}-{cfg.run.task}-{model}"
    return Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def run_dir_path(config: TrainConfig) -> Path:
    """The run directory of a config: --output-dir, else runs/<method>-<task>-<model>."""
    return Path(config.run.output_dir) if config.run.output_dir else default_output_dir(config)


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


def _is_empty_run_dir(path: Path) -> bool:
    """True when `path` holds nothing but a lock file and temp files of interrupted writes."""
    from cotkit.run.lock import LOCK_NAME

    return all(p.name == LOCK_NAME or (p.name.startswith(".") and p.name.endswith(".tmp")) for p in path.iterdir())


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


def finish(ctx: RunContext, status: str = "complete") -> None:
    """Mark the run complete (or failed) in state.json."""
    if is_main_process():
        ctx.state.status = status
        ctx.state.running = None
        ctx.state.save()


def load_run(path: str | Path) -> tuple[TrainConfig, RunState]:
    """A finished or partial run's config and state (for `cotkit show RUN_DIR` and reports)."""
    from cotkit.plugins import host

    path = Path(path)
    cfg_path = path / "config.yaml"
    if not cfg_path.exists():
        raise CotkitError(f"{path}: not a cotkit run directory (no config.yaml)")
    config = from_saved(load_yaml(cfg_path), str(cfg_path), find_method=partial(host().get, "method"))
    return config, RunState(path / "state.json")
