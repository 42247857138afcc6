"""Helpers shared by commands: building tasks from CLI strings, parsing KEY=VALUE options.

The options themselves are declared in `cotkit.cli.options`.
"""

from __future__ import annotations

from typing import Any, Optional

from cotkit.contracts import Task
from cotkit.options import parse_key_values


def make_task(spec: str, task_options: Optional[list[str]] = None, **kwargs: Any) -> Task:
    """A task from `name[:subset]` and `--task-option` strings, with the global data directory."""
    from cotkit.cli.state import options
    from cotkit.data import resolve_data_dir
    from cotkit.plugins import host

    opts = parse_key_values(task_options, "--task-option")
    return host().task(spec, data_dir=resolve_data_dir(options.data_dir), **opts, **kwargs)
