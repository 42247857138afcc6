"""cotkit-reasoning-gym: reasoning-gym's procedural generators as cotkit tasks, a third-party plugin package.

It registers the task `rg` (addressed `rg:<dataset>`, e.g. `rg:chain_sum`) and the verifier
`rg_score` (the generator's own scoring) through cotkit's entry-point group, using only cotkit's
public API. Nothing heavy is imported here: reasoning-gym loads when a task is built.
"""

from __future__ import annotations

from cotkit import hookimpl

from .task import ReasoningGym
from .verifier import RGScore


@hookimpl
def register_tasks(register):
    register(ReasoningGym)


@hookimpl
def register_verifiers(register):
    register(RGScore)
