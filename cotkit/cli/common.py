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


def choose_backend(backend: str | None, model: str, options: dict[str, Any], no_thoughts: bool) -> str:
    """--backend, else the backend the checkpoint names (`cotkit_backend.json`), else hf; --no-thoughts sets thoughts=false."""
    from cotkit.models import default_backend

    name = backend or default_backend(model)
    if no_thoughts:
        from cotkit.errors import ConfigError
        from cotkit.plugins import host

        config = getattr(host().get("backend", name), "Config", None)
        if "thoughts" not in getattr(config, "__dataclass_fields__", {}):
            raise ConfigError(f"--no-thoughts: backend {name} decodes without thoughts already (only a thinking checkpoint's backend has them)")
        options["thoughts"] = False
    return name
