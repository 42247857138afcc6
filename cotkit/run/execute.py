"""Running a method in its run directory, under the directory's lock, with a full disk said in one line."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotkit.config import TrainConfig
from cotkit.errors import CotkitError, RunInterrupted
from cotkit.run.context import RunContext
from cotkit.run.directory import finish, open_run_dir, remove_partial_writes, run_dir_path
from cotkit.run.display import RunDisplay
from cotkit.run.manifest import write_manifest
from cotkit.run.rank import is_main_process
from cotkit.run.state import RunState


def execute(
    config: TrainConfig,
    *,
    resume: bool = False,
    argv: list[str] | None = None,
    display: RunDisplay | None = None,
    data_dir: Path | None = None,
    plugin_files: Sequence[str] = (),
) -> RunContext:
    """Run a method in its run directory from start (or from the last completed phase) to the end.

    The main process holds the run directory's lock throughout, so a second run on the same
    directory is refused at once; a full disk ends the run with one line saying how to resume.
    `data_dir` is the data folder given outside the config (`cotkit --data-dir`), used when the
    config names none; it and `plugin_files` (`cotkit --plugin`) are repeated in that resume command.
    """
    from cotkit.data import resolve_data_dir
    from cotkit.plugins import host
    from cotkit.run.diskfull import is_disk_full
    from cotkit.run.lock import RunLock, describe_holder
    from cotkit.run.tracking import check_installed

    method_cls = host().get("method", config.run.method)
    check_installed(config.run.report_to)
    run_data_dir = resolve_data_dir(config.run.data_dir or data_dir)
    display = display or RunDisplay()
    path = run_dir_path(config)
    lock = RunLock(path)
    try:
        if is_main_process():  # the other ranks of a launch work under their main process's lock
            lock.acquire()
            if lock.taken_over:
                display.message(f"[dim]lock of {describe_holder(lock.taken_over)} taken over: that process is gone[/dim]")
        return _execute_locked(config, method_cls, resume, argv, display, run_data_dir)
    except BaseException as e:
        resume_data_dir = None if config.run.data_dir else data_dir
        if isinstance(e, RunInterrupted):
            from cotkit.run.diskfull import resume_command

            raise RunInterrupted(resume_command(path, plugin_files=list(plugin_files), data_dir=resume_data_dir)) from None
        if isinstance(e, Exception) and is_disk_full(e, path):
            raise _stopped_by_full_disk(
                e, path, holding_lock=lock.fd is not None, plugin_files=plugin_files, data_dir=resume_data_dir
            ) from None
        raise
    finally:
        lock.release()


def _execute_locked(
    config: TrainConfig, method_cls: Any, resume: bool, argv: list[str] | None, display: RunDisplay, data_dir: Path | None
) -> RunContext:
    from cotkit.run.diskfull import is_disk_full
    from cotkit.run.tracking import RunTracking

    ctx = open_run_dir(config, resume, data_dir=data_dir, display=display)
    task = ctx.task
    write_manifest(ctx, list(dict.fromkeys([task.train_split, task.heldout_split])), argv)
    with RunTracking.start(ctx) as ctx.tracking:  # closed however the run ends
        try:
            try:
                method_cls().run(ctx)
            finally:
                ctx.close_backends()
        except KeyboardInterrupt:
            finish(ctx, "interrupted")
            raise RunInterrupted() from None  # the caller adds the resume command
        except BaseException as e:
            if not (isinstance(e, Exception) and is_disk_full(e, ctx.path)):  # that case is marked by the caller
                finish(ctx, "failed")
            raise
        ctx.write_report()
    finish(ctx, "complete")
    return ctx


def _stopped_by_full_disk(
    exc: BaseException, path: Path, *, holding_lock: bool, plugin_files: Sequence[str], data_dir: Path | None
) -> CotkitError:
    """Mark the run failed if there is room to, free the space half-written files hold, and say how to resume."""
    from cotkit.run.diskfull import disk_full_error, resume_command

    if holding_lock and is_main_process():
        # Only under our lock: another process's temp files are never ours to delete.
        if (path / "state.json").exists():  # a run that never started stays one that --resume starts
            with contextlib.suppress(OSError, CotkitError):
                state = RunState(path / "state.json")
                state.status, state.running = "failed", None
                state.save()
        with contextlib.suppress(OSError):
            remove_partial_writes(path)
    return disk_full_error(exc, path, resume_command(path, plugin_files=list(plugin_files), data_dir=data_dir))
