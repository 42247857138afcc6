"""`--help` pages: a switch shows no value type, since it takes no value."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["models", "list"], ["show"]])
def test_switches_show_no_value_type(cli, command):
    r = cli(*command, "--help")
    assert r.exit_code == 0
    assert "<bool>" not in r.stdout
    assert "--help" in r.stdout and "--debug" in cli("--help").stdout


def test_options_that_take_a_value_still_show_their_type(cli):
    page = cli("train", "--help").stdout
    line = next(x for x in page.splitlines() if "--output-dir" in x)
    assert "<" in line or "PATH" in line.upper()
