"""Experiment tracking (`--report-to`): a run's config, metrics, step losses and accuracy plot in
TensorBoard, trackio, Weights & Biases or MLflow, through accelerate's tracker classes.

Why not `Accelerator(log_with=...)`: a run's trackers live on the main process from its first
phase to its last, while training makes a short-lived Accelerator per phase (in every process) and
sampling none at all; so the tracker objects are made and driven here, and `train()` never sees them.

TensorBoard logs go under the run directory (RUN/trackers/<run name>/); trackio, W&B and MLflow
write where their own environment tells them (TRACKIO_DIR, WANDB_MODE / WANDB_DIR,
MLFLOW_TRACKING_URI). RUN/trackers/runs.json keeps which tracker run a run directory logs to, so
`--resume` goes on logging to it; RUN/trackers/train_steps.json keeps where each training phase
starts on the one step axis every tracker shares.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cotkit.errors import ConfigError
from cotkit.jsonl import atomic_write_json
from cotkit.run.rank import is_main_process

#: The trackers `--report-to` names, with the modules each needs (any one of them) and how to get them.
TRACKER_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'cotkit[track]'"),
    "trackio": (("trackio",), "pip install 'cotkit[track]'"),
    "wandb": (("wandb",), "pip install wandb"),
    "mlflow": (("mlflow",), "pip install mlflow"),
}

RUNS_FILE = "runs.json"
STEPS_FILE = "train_steps.json"


def wanted(report_to: Sequence[str]) -> list[str]:
    """The trackers asked for, each once, in order (`none` asks for none)."""
    return list(dict.fromkeys(name for name in report_to if name != "none"))


def check_installed(report_to: Sequence[str]) -> None:
    """One line naming an unknown tracker, or the first whose library is missing, before any work is done."""
    for name in report_to:
        if name not in (*TRACKER_PACKAGES, "none"):
            raise ConfigError(f"--report-to {name!r} is not one of {', '.join(TRACKER_PACKAGES)}, none")
    for name in wanted(report_to):
        modules, install = TRACKER_PACKAGES[name]
        if not any(importlib.util.find_spec(m) is not None for m in modules):
            raise ConfigError(f"--report-to {name} needs the {modules[0]} package: {install}")


def flat_values(d: dict[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """A nested config or summary as one level of `a/b/c` keys (`sep` between); lists as comma-joined text."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_values(value, sep, name + sep))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(map(str, value))
        else:
            out[name] = value
    return out


def numbers(values: dict[str, Any]) -> dict[str, float | int]:
    """The entries that are numbers (not true/false, not text): what a tracker plots."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # trackio announces itself on stdout, which carries cotkit's results (`cotkit eval --json`).
    with contextlib.redirect_stdout(sys.stderr):
        yield


class Trackers:
    """The trackers of one run or evaluation, on the main process: hyperparameters, numbers, images.

    `folder` holds TensorBoard's event files and runs.json; `project` names the experiment
    (the run directory's name) in every tracker.
    """

    def __init__(self, names: Sequence[str], folder: Path, project: str):
        self.names = wanted(names)
        self.folder = folder
        self.project = project
        self.trackers: dict[str, Any] = {}

    def start(self, hyperparameters: dict[str, Any]) -> None:
        """Open each tracker (continuing the tracker run recorded in runs.json) and log the hyperparameters."""
        from accelerate import PartialState

        # accelerate's tracker classes log through accelerate's logger, which needs the process state.
        PartialState()
        self.folder.mkdir(parents=True, exist_ok=True)
        runs = _read_json(self.folder / RUNS_FILE)
        for name in self.names:
            try:
                with _stdout_to_stderr():
                    self.trackers[name] = tracker = _OPEN[name](self, runs)
                    tracker.start()
                    if name == "mlflow":  # its run id exists only once started
                        runs["mlflow"] = tracker.active_run.info.run_id
                    tracker.store_init_configuration(hyperparameters)
            except Exception as e:  # a tracker's own set-up (a login, a tracking URI): one line, the others closed
                self.trackers.pop(name, None)
                self.finish()
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ConfigError(f"--report-to {name}: {first_line}") from e
        atomic_write_json(self.folder / RUNS_FILE, runs)

    def log(self, values: dict[str, Any], step: int) -> None:
        """Log the numbers among `values` at `step` to every tracker."""
        values = numbers(values)
        if values:
            for tracker in self.trackers.values():
                tracker.log(values, step=step)

    def log_image(self, key: str, png: Path, step: int) -> None:
        """Log a PNG file (the accuracy plot) to every tracker, in the form each shows images."""
        for name, tracker in self.trackers.items():
            _IMAGE[name](tracker, key, png, step)

    def finish(self) -> None:
        """Close every tracker (flushing what it holds)."""
        with _stdout_to_stderr():
            for name, tracker in self.trackers.items():
                _FINISH.get(name, lambda t: t.finish())(tracker)
        self.trackers = {}


# -- each tracker: how it opens (continuing a recorded run), shows an image, closes -------------


def _open_tensorboard(t: Trackers, runs: dict[str, Any]) -> Any:
    from accelerate.tracking import TensorBoardTracker

    return TensorBoardTracker(t.project, t.folder)  # a resumed run adds event files to the same folder


def _open_trackio(t: Trackers, runs: dict[str, Any]) -> Any:
    from accelerate.tracking import TrackioTracker

    name = runs.setdefault("trackio", f"{t.project}-{time.strftime('%Y%m%d-%H%M%S')}")
    return TrackioTracker(t.project, name=name, resume="allow")


def _open_wandb(t: Trackers, runs: dict[str, Any]) -> Any:
    import os

    from accelerate.tracking import WandBTracker

    run_id = runs.setdefault("wandb", uuid.uuid4().hex[:12])
    where = {} if os.environ.get("WANDB_DIR") else {"dir": str(t.folder)}
    return WandBTracker(t.project, id=run_id, name=t.project, resume="allow", **where)


def _open_mlflow(t: Trackers, runs: dict[str, Any]) -> Any:
    from accelerate.tracking import MLflowTracker

    return MLflowTracker(experiment_name=t.project, run_id=runs.get("mlflow"), run_name=t.project)


_OPEN: dict[str, Callable[[Trackers, dict[str, Any]], Any]] = {
    "tensorboard": _open_tensorboard,
    "trackio": _open_trackio,
    "wandb": _open_wandb,
    "mlflow": _open_mlflow,
}


def _rgb(png: Path) -> Any:
    from PIL import Image

    with Image.open(png) as im:
        return im.convert("RGB")


def _image_tensorboard(tracker: Any, key: str, png: Path, step: int) -> None:
    import numpy as np

    tracker.log_images({key: np.asarray(_rgb(png))[None]}, step=step, dataformats="NHWC")
    tracker.writer.flush()


def _image_trackio(tracker: Any, key: str, png: Path, step: int) -> None:
    import trackio

    tracker.log({key: trackio.Image(str(png))}, step=step)


def _image_wandb(tracker: Any, key: str, png: Path, step: int) -> None:
    tracker.log_images({key: [_rgb(png)]}, step=step)


def _image_mlflow(tracker: Any, key: str, png: Path, step: int) -> None:
    tracker.log_artifact(str(png))  # MLflow keeps files, not images per step: the latest plot


_IMAGE: dict[str, Callable[[Any, str, Path, int], None]] = {
    "tensorboard": _image_tensorboard,
    "trackio": _image_trackio,
    "wandb": _image_wandb,
    "mlflow": _image_mlflow,
}


def _finish_trackio(tracker: Any) -> None:
    import trackio

    # trackio.finish() also forgets the run, so its exit hook does not finish it again (on stdout).
    trackio.finish()


_FINISH: dict[str, Callable[[Any], None]] = {"trackio": _finish_trackio}


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


# -- a training run ------------------------------------------------------------------------------


def run_hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as `star.sft.learning_rate`-style keys, less the keys a resume may change.

    Where the run and its data live, and where it reports, are not hyperparameters; and MLflow
    refuses a parameter whose value changes when a resumed run logs them again.
    """
    from cotkit.config import RESUME_FREE_KEYS

    return {k: v for k, v in flat_values(config, ".").items() if k.split(".")[0] not in RESUME_FREE_KEYS}


class RunTracking:
    """What a run sends its trackers: hyperparameters, each completed phase's numbers, every
    optimizer step's loss and learning rate, and the accuracy plot whenever the report is rewritten.

    Every value is logged at the run's global training step: the optimizer steps of all training
    phases so far, one axis across iterations (and across `--resume`). With no tracker asked for,
    or on a process other than the main one, every method does nothing.
    """

    def __init__(self, trackers: Trackers | None = None):
        self.trackers = trackers
        self.step = 0
        self._offsets: dict[str, list[int]] = {}

    @classmethod
    def start(cls, ctx: Any) -> RunTracking:
        """The tracking of the run in `ctx` (its `run_config.report_to`), started on the main process."""
        names = wanted(ctx.run_config.report_to)
        if not names:
            return cls()
        from accelerate import PartialState

        # Every process makes the process state here, together: made by the main process alone
        # (for its trackers), it would wait in the process-group rendezvous for ranks that are
        # waiting for its phases.
        PartialState()
        if not is_main_process():
            return cls()
        trackers = Trackers(names, ctx.path / "trackers", ctx.path.resolve().name)
        tracking = cls(trackers)
        tracking._offsets = _read_json(trackers.folder / STEPS_FILE)
        tracking.step = max((start + total for start, total in tracking._offsets.values()), default=0)
        trackers.start(run_hyperparameters(ctx.config.to_dict()))
        return tracking

    def phase_done(self, name: str, result: Any, seconds: float) -> None:
        """Log a completed phase's numbers as `<phase>/<key>` (e.g. `iter_001/eval_dev/accuracy`)."""
        if self.trackers is None or not isinstance(result, dict):
            return
        values = {f"{name}/{k}": v for k, v in result.items()}
        self.trackers.log({**values, f"{name}/seconds": seconds}, step=self.step)

    def train_step(self, phase: str, log: Any) -> None:
        """Log one optimizer step (a StepLog) as `train/loss`, `train/lr` and `<phase>/loss`, `<phase>/lr`."""
        if self.trackers is None:
            return
        self.step = self._phase_start(phase, log.total) + log.step
        values = {"train/loss": log.loss, "train/lr": log.lr, f"{phase}/loss": log.loss, f"{phase}/lr": log.lr}
        values.update({f"train/{k}": v for k, v in (log.stats or {}).items()})
        self.trackers.log(values, step=self.step)

    def _phase_start(self, phase: str, total: int) -> int:
        """The global step before this training phase's first step (recorded, so a resume agrees)."""
        if phase not in self._offsets:
            start = max((s + n for s, n in self._offsets.values()), default=0)
            self._offsets[phase] = [start, total]
            atomic_write_json(self.trackers.folder / STEPS_FILE, self._offsets)  # type: ignore[union-attr]
        return self._offsets[phase][0]

    def report_written(self, plot: Path) -> None:
        """Log the accuracy plot just written beside report.md, as image `accuracy`."""
        if self.trackers is not None and plot.exists():
            self.trackers.log_image("accuracy", plot, step=self.step)

    def __enter__(self) -> RunTracking:
        return self

    def __exit__(self, *exc: object) -> None:
        # Closed whether the run ended, failed or was interrupted: the trackers flush what they hold.
        if self.trackers is not None:
            self.trackers.finish()
            self.trackers = None


# -- an evaluation -------------------------------------------------------------------------------


def log_evaluation(report_to: Sequence[str], output_dir: Path, summary: dict[str, Any], settings: dict[str, Any]) -> None:
    """Log `cotkit eval`'s settings (as hyperparameters) and its summary's numbers as `eval/<key>`,
    with the accuracy's 95% interval, to trackers in OUTPUT_DIR/trackers (main process)."""
    from cotkit.stats import wilson_interval

    trackers = Trackers(report_to, output_dir / "trackers", output_dir.resolve().name)
    values = flat_values(summary)
    n, accuracy = summary.get("n"), summary.get("accuracy")
    if isinstance(n, int) and n > 0 and isinstance(accuracy, (int, float)):
        # accuracy is the mean over n questions of each one's share of correct completions
        values["ci_low"], values["ci_high"] = wilson_interval(accuracy * n, n)
    trackers.start(flat_values(settings, "."))
    try:
        trackers.log({f"eval/{k}": v for k, v in values.items()}, step=0)
    finally:
        trackers.finish()
