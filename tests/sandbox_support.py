"""What the sandbox tests share: full isolation is required in CI and skipped elsewhere when missing."""

from __future__ import annotations

import os

import pytest

from cotkit.sandbox import bwrap_problem


def require_bwrap() -> None:
    """Skip where bubblewrap cannot run, unless COTKIT_SANDBOX_REQUIRE_BWRAP=1 (CI) makes it a failure."""
    problem = bwrap_problem()
    if problem:
        if os.environ.get("COTKIT_SANDBOX_REQUIRE_BWRAP") == "1":
            pytest.fail(f"bubblewrap is required here: {problem}")
        pytest.skip(f"bubblewrap cannot run here: {problem}")
