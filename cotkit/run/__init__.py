"""A training run: its directory, the context a method's `run(ctx)` works in, and running it.

    runs/<name>/
      config.yaml      the resolved config, every default filled in
      manifest.json    package versions, model, data and config.yaml fingerprints, seeds, hardware, git revision
      state.json       completed phases with their results (rewritten atomically after each)
      metrics.jsonl    one row per completed phase (rebuilt from state.json, so never torn)
      iter_000/ ...    per-iteration files written by the method (samples, training set, checkpoint)
      report.md, accuracy.png
      trackers/        experiment tracker logs and run ids (--report-to)
      run.lock         present while a process works in the directory (cotkit.run.lock); a second
                       process is refused, a lock left by a killed one is taken over

One module per job, each importing only those listed before it:

    rank          which process of a launch this is (only the main one writes the directory)
    fingerprint   what identifies the data, model, packages, machine and source of a run
    state         state.json: the completed phases and their results
    display       the live phase lines, progress bars and tables
    tracking      the experiment trackers of --report-to (TensorBoard, trackio, W&B, MLflow)
    context       RunContext: config, task, run directory and resumable phases for `Method.run`
    manifest      manifest.json, and the check that config.yaml was not edited before a resume
    directory     where the run directory is; creating it, reopening it for --resume, finishing it
    execute       running a method there under the directory's lock (`cotkit train`)
"""

from cotkit.run.context import RunContext
from cotkit.run.directory import (
    check_resume_target,
    default_output_dir,
    finish,
    load_run,
    open_run_dir,
    remove_partial_writes,
    run_dir_path,
)
from cotkit.run.display import RunDisplay
from cotkit.run.execute import execute
from cotkit.run.manifest import write_manifest
from cotkit.run.rank import is_main_process, process_index, world_size
from cotkit.run.state import RunState

__all__ = [
    "RunContext",
    "RunDisplay",
    "RunState",
    "check_resume_target",
    "default_output_dir",
    "execute",
    "finish",
    "is_main_process",
    "load_run",
    "open_run_dir",
    "process_index",
    "remove_partial_writes",
    "run_dir_path",
    "world_size",
    "write_manifest",
]
