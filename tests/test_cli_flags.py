"""Flags read the same in every command, and `--help` pages show no value type beside a switch."""

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


def test_train_takes_the_short_flags_sample_and_eval_take(cli):
    r = cli("train", "--method", "star", "--task", "gsm8k", "-m", "tiny/model", "-b", "hf", "-B", "batch_size=4", "-O",
            "carve_seed=3", "--dry-run")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    for line in ("model: tiny/model", "backend: hf", "  batch_size: 4", "  carve_seed: 3"):
        assert line in r.stdout.splitlines()


def test_key_value_mappings_are_shown_singular_and_accepted_either_way(cli):
    shown = cli("show", "star").stdout
    assert "--backend-option " in shown and "--backend-options" not in shown
    for spelling in ("--backend-option", "--backend-options"):
        r = cli("train", "--method", "star", "--task", "gsm8k", spelling, "batch_size=2", "--dry-run")
        assert r.exit_code == 0 and "  batch_size: 2" in r.stdout.splitlines(), r.stderr


def test_shell_completion_completes_commands_and_options():
    """What `cotkit --install-completion` installs: the shell asks cotkit itself for candidates."""
    import os
    import subprocess
    import sys

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_COTKIT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        done = subprocess.run([sys.executable, "-m", "cotkit"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("cotkit tr") == ["train"]
    assert "--method" in complete("cotkit train --me")
    assert "--install-completion" in complete("cotkit --inst")


def test_json_on_the_commands_that_print_tables(cli, tiny_model, data_dir, tmp_path):
    """sample and train print one JSON object on stdout with --json, and nothing else there."""
    import json
    from pathlib import Path

    plugin = Path(__file__).parent / "fixtures" / "run_methods.py"
    r = cli("--plugin", plugin, "--data-dir", data_dir, "train", "--method", "tally", "--task", "gsm8k", "--model", tiny_model,
            "-o", tmp_path / "run", "--rounds", "2", "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    run = json.loads(r.stdout)
    assert (run["method"], run["status"], list(run["phases"])) == ("tally", "complete", ["iter_001/step", "iter_002/step"])

    r = cli("--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", tiny_model, "-n", "2", "--limit", "1",
            "--max-new-tokens", "3", "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["summary"]["n"] == 2 and len(got["samples"]) == 2 and {"completion", "verdict"} <= set(got["samples"][0])


@pytest.mark.parametrize("command", [["sample", "--task", "gsm8k"], ["score", "--task", "gsm8k", "-i", "x.jsonl"]])
@pytest.mark.parametrize("flag", ["--debug", "-v"])
def test_a_global_option_after_any_command_says_where_it_goes(cli, command, flag):
    r = cli(*command, flag)
    assert r.exit_code == 2
    assert r.stderr.strip() == f"error: {flag} is a global option: put it before the command (`cotkit {flag} ... {command[0]} ...`)"


def test_unknown_train_option_suggests_each_option_once_by_its_own_flag(cli):
    r = cli("train", "--method", "finetune-cot", "--task", "gsm8k", "--teacher-backend-optio", "x=1", "--dry-run")
    assert r.exit_code == 2
    assert "'--teacher-backend-option'" in r.stderr and "options'" not in r.stderr and "--finetune-cot." not in r.stderr
