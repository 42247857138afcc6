"""The list of built-in command modules; each has `register(app)`."""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "cotkit.cli.plugins_cmd",
    "cotkit.cli.score_cmd",
    "cotkit.cli.sample_cmd",
    "cotkit.cli.eval_cmd",
    "cotkit.cli.models_cmd",
    "cotkit.cli.train_cmd",
    "cotkit.cli.show_cmd",
    "cotkit.cli.compare_cmd",
)


def register_all(app: typer.Typer) -> None:
    """Add every built-in command to the app."""
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
