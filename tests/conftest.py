"""Shared fixtures: the real data in ../shared/data, a tiny real model, and a CLI runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COTKIT_TEST_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The publishers' files (../shared/data); the tests need them."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test data not found at {SHARED_DATA}: clone with ../shared beside the repo or set COTKIT_TEST_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama with a trained byte-level BPE tokenizer, saved as a HF folder."""
    from cotkit.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def host(monkeypatch):
    """A fresh plugin host with installed-plugin autoload off (built-ins only)."""
    from cotkit import plugins

    monkeypatch.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
    plugins.reset()
    yield plugins.host()
    plugins.reset()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `cotkit ARGS...` in this process; returns exit code, stdout and stderr."""
    from cotkit import plugins
    from cotkit.cli import state

    monkeypatch.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> CliResult:
        from cotkit.cli.main import main

        plugins.reset()
        state.options = state.GlobalOptions()
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        plugins.reset()
        return CliResult(code, captured.out, captured.err)

    return run
