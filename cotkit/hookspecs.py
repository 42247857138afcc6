"""The hooks a cotkit plugin implements (pluggy project name `cotkit`).

Each `register_*` hook receives a `register` callback and calls it with plugin classes, so the
host knows which plugin provided which name (the shape of simonw/llm's hooks).
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("cotkit")
hookimpl = pluggy.HookimplMarker("cotkit")

Register = Callable[[type], None]


@hookspec
def register_tasks(register: Register) -> None:
    """Register Task subclasses: `register(MyTask)`."""


@hookspec
def register_verifiers(register: Register) -> None:
    """Register Verifier subclasses."""


@hookspec
def register_step_scorers(register: Register) -> None:
    """Register StepScorer subclasses."""


@hookspec
def register_backends(register: Register) -> None:
    """Register Backend subclasses."""


@hookspec
def register_methods(register: Register) -> None:
    """Register Method subclasses."""


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the `cotkit` Typer app: `@app.command() def mycmd(...)`."""
