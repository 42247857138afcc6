"""A wrong command line is one line on stderr and exit 2: usage errors, and sampling values checked before any model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COTKIT = Path(sys.executable).parent / "cotkit"


def run_cotkit(*args: str) -> subprocess.CompletedProcess:
    """The installed `cotkit` script, as a user's shell runs it."""
    return subprocess.run([str(COTKIT), *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_one_line_usage_error(stdout: str, stderr: str, code: int, *expected: str) -> str:
    assert code == 2, stderr
    assert "Traceback" not in stderr and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], ["missing command", "score", "cotkit --help"]),
        (["scroe"], ["No such command 'scroe'", "Did you mean 'score'?"]),
        (["score", "--input", "x.jsonl"], ["cotkit score", "--task"]),
        (["sample", "--task", "gsm8k", "--limit", "abc"], ["--limit", "integer"]),
        (["score", "--task", "gsm8k", "--bogus"], ["No such option: --bogus"]),
        (["--bogus", "plugins"], ["No such option: --bogus"]),
    ],
    ids=["bare", "unknown-command", "missing-option", "bad-int", "unknown-flag", "unknown-global-flag"],
)
def test_usage_errors_are_one_line_exit_2(argv, expected):
    res = run_cotkit(*argv)
    assert_one_line_usage_error(res.stdout, res.stderr, res.returncode, *expected)


def test_usage_errors_in_process_too(cli):
    """The same through `main()` (what `python -m cotkit` and `accelerate launch -m cotkit` run)."""
    res = cli("eval", "--task", "gsm8k", "--n", "two")
    assert_one_line_usage_error(res.stdout, res.stderr, res.exit_code, "--n")


def test_help_and_version_still_exit_0():
    assert run_cotkit("--version").returncode == 0
    res = run_cotkit("score", "--help")
    assert res.returncode == 0 and "--task" in res.stdout and res.stderr == ""


# A model path that does not exist: if the value check came after the model load, the error
# would be about the model instead of the option.
NO_MODEL = "/no/such/model"


@pytest.mark.parametrize(
    "args, option",
    [
        (["--temperature", "-1"], "--temperature"),
        (["--temperature", "nan"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["-n", "0"], "--n"),
        (["--limit", "-3"], "--limit"),
        (["--limit", "0"], "--limit"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
    ],
)
def test_sample_checks_sampling_values_before_loading_the_model(cli, data_dir, args, option):
    res = cli("--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", NO_MODEL, *args)
    line = assert_one_line_usage_error(res.stdout, res.stderr, res.exit_code, option)
    assert NO_MODEL not in line


@pytest.mark.parametrize(
    "args, option",
    [
        (["--temperature", "-0.5"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "2"], "--top-p"),
        (["--n", "0"], "--n"),
        (["--limit", "0"], "--limit"),
        (["--limit", "-1"], "--limit"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
    ],
)
def test_eval_checks_sampling_values_before_loading_the_model(cli, data_dir, args, option):
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", NO_MODEL, *args)
    line = assert_one_line_usage_error(res.stdout, res.stderr, res.exit_code, option)
    assert NO_MODEL not in line


@pytest.mark.parametrize(
    "method, args, option",
    [
        ("star", ["--temperature", "-1"], "--temperature"),
        ("irpo", ["--top-p", "0"], "--top-p"),
        ("finetune-cot", ["--top-p", "1.5"], "--top-p"),
        ("pad", ["--max-new-tokens", "0"], "--max-new-tokens"),
        ("pad", ["--temperature", "-1"], "--temperature"),
        ("star", ["--train-limit", "0"], "--train-limit"),
    ],
)
def test_train_checks_sampling_values_of_the_method_before_the_run(cli, data_dir, tmp_path, method, args, option):
    res = cli("--data-dir", data_dir, "train", "--method", method, "--task", "gsm8k", "--model", NO_MODEL,
              "--output-dir", tmp_path / "run", "--dry-run", *args)  # fmt: skip
    assert_one_line_usage_error(res.stdout, res.stderr, res.exit_code, option, "must be")
    assert not (tmp_path / "run").exists()


def test_train_names_the_config_file_key_for_a_bad_value_from_yaml(cli, data_dir, tmp_path):
    config = tmp_path / "star.yaml"
    config.write_text("method: star\ntask: gsm8k\nstar:\n  temperature: -2\n", encoding="utf-8")
    res = cli("--data-dir", data_dir, "train", "--config", config, "--dry-run")
    assert_one_line_usage_error(res.stdout, res.stderr, res.exit_code, "--temperature", "temperature:", "star:")


def test_good_sampling_values_pass(cli, data_dir, tmp_path):
    res = cli("--data-dir", data_dir, "train", "--method", "star", "--task", "gsm8k", "--temperature", "0",
              "--output-dir", tmp_path / "run", "--dry-run")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "temperature: 0" in res.stdout
