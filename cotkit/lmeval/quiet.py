"""lm-eval without the output a cotkit user cannot act on (`cotkit -v eval ...` shows it again).

Three sources, each silenced where it starts rather than by filtering stderr: lm-eval's loggers
(their levels); the tqdm bar lm-eval draws while it builds requests (lm-eval has no setting for it,
and tqdm reads TQDM_DISABLE only when it is imported, so the bar is created with tqdm's own
`disable=True`); and the "fatal: not a git repository" line git prints when lm-eval records the
commit of the working directory (lm-eval runs `git describe` with our stderr, so the same probe is
run here with git's stderr captured, and its result recorded as lm-eval would record it).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
from collections.abc import Iterator
from unittest import mock

LOGGERS = ("lm-eval", "lm_eval", "lm_eval.api.task", "lm_eval.evaluator")


def git_commit_hash() -> str | None:
    """lm-eval's `get_git_commit_hash`, with git's error text kept off the terminal."""
    from lm_eval.loggers.utils import get_commit_from_path

    try:
        done = subprocess.run(["git", "describe", "--always"], capture_output=True, check=True, timeout=10)  # noqa: S607
        return done.stdout.decode().strip()
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        return get_commit_from_path(os.getcwd())


@contextlib.contextmanager
def quiet_lm_eval(verbose: bool = False) -> Iterator[None]:
    """Inside: lm-eval logs only errors, draws no tqdm bars and lets no git error through (unless `verbose`)."""
    if verbose:
        yield
        return
    from tqdm import tqdm

    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            mock.patch("lm_eval.evaluator.get_git_commit_hash", git_commit_hash),
            mock.patch("lm_eval.api.task.tqdm", functools.partial(tqdm, disable=True)),
        ):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
