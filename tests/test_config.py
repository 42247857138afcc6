"""Config resolution: defaults < YAML < flags, typed values, and errors a user can act on."""

from __future__ import annotations

import pytest

from cotkit.config import config_diff, iter_options, resolve
from cotkit.errors import ConfigError, UnknownNameError


@pytest.fixture
def star(host):
    return host.get("method", "star")


def write(tmp_path, text, name="run.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_then_yaml_then_flags(tmp_path, star):
    cfg_file = write(
        tmp_path,
        "method: star\ntask: gsm8k\nseed: 7\nstar:\n  iterations: 2\n  steps: 10\n  sft:\n    learning_rate: 1e-5\n    grad_accum: 2\n",
    )
    cfg = resolve(["--iterations", "5", "--sft.grad-accum=4", "--no-rationalize"], cfg_file, method_cls=star)
    assert cfg.run.task == "gsm8k" and cfg.run.seed == 7 and cfg.run.model == "smollm2-135m"
    assert cfg.method.iterations == 5  # flag beats YAML
    assert cfg.method.steps == 10  # YAML beats default
    assert cfg.method.sft.learning_rate == 1e-5  # YAML 1.1 reads `1e-5` as a string: coerced
    assert cfg.method.sft.grad_accum == 4
    assert cfg.method.rationalize is False
    assert cfg.method.step_growth == 1.2  # default kept
    # a method option with the method's name as prefix, run options as flags, KEY=VALUE dicts
    cfg = resolve(
        ["--star.iterations", "1", "--seed", "3", "--backend-option", "batch_size=8", "--backend-option", "device=cpu"],
        cfg_file, method_cls=star,
    )
    assert cfg.method.iterations == 1 and cfg.run.seed == 3
    assert cfg.run.backend_options == {"batch_size": 8, "device": "cpu"}


def test_declared_cli_options_override_yaml(tmp_path, star):
    cfg_file = write(tmp_path, "method: star\ntask: gsm8k\nmodel: a-model\n")
    cfg = resolve([], cfg_file, {"task": "bbh:navigate", "model": None}, method_cls=star)
    assert cfg.run.task == "bbh:navigate" and cfg.run.model == "a-model"


def test_resolved_yaml_round_trips(tmp_path, star):
    cfg = resolve(["--task", "gsm8k", "--max-per-question", "2", "--sft.lora"], None, {"method": "star"}, method_cls=star)
    again = resolve([], write(tmp_path, cfg.to_yaml()), method_cls=star)
    assert again.to_dict() == cfg.to_dict()
    assert again.method.sft.lora is True and again.method.max_per_question == 2


def test_unknown_flag_suggests_the_closest(star):
    with pytest.raises(UnknownNameError, match=r"'--iteratons'.*did you mean '--iterations'"):
        resolve(["--task", "gsm8k", "--iteratons", "2"], None, {"method": "star"}, method_cls=star)
    with pytest.raises(UnknownNameError, match=r"did you mean '--sft.learning-rate'"):
        resolve(["--task", "gsm8k", "--sft.learnin-rate", "2"], None, {"method": "star"}, method_cls=star)


def test_unknown_yaml_key_names_the_file_and_suggests(tmp_path, star):
    f = write(tmp_path, "method: star\ntask: gsm8k\nstar:\n  sft:\n    learning_rat: 1\n")
    with pytest.raises(UnknownNameError, match=r"run\.yaml at star\.sft.*'learning_rat'.*did you mean 'learning_rate'"):
        resolve([], f, method_cls=star)


def test_bad_yaml_names_the_file_and_line(tmp_path, star):
    f = write(tmp_path, "method: star\ntask: gsm8k\nstar:\n  iterations: [2\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:\d+:\d+: invalid YAML"):
        resolve([], f, method_cls=star)
    with pytest.raises(ConfigError, match=r"no such file"):
        resolve([], tmp_path / "missing.yaml", method_cls=star)


def test_bad_values_name_the_option(tmp_path, star):
    with pytest.raises(ConfigError, match=r"--iterations: expected an integer, got 'many'"):
        resolve(["--task", "t", "--iterations", "many"], None, {"method": "star"}, method_cls=star)
    with pytest.raises(ConfigError, match=r"--style: 'poem' is not one of fewshot, zeroshot, chat"):
        resolve(["--task", "t", "--style", "poem"], None, {"method": "star"}, method_cls=star)
    f = write(tmp_path, "method: star\ntask: gsm8k\nstar:\n  rationalize: maybe\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: star\.rationalize: expected true or false"):
        resolve([], f, method_cls=star)
    with pytest.raises(ConfigError, match=r"temperature"):  # cross-field check of the method's Config
        resolve(["--task", "t", "--samples-per-question", "4"], None, {"method": "star"}, method_cls=star)
    with pytest.raises(ConfigError, match=r"missing required option --task"):
        resolve([], None, {"method": "star"}, method_cls=star)
    with pytest.raises(ConfigError, match=r"needs a value"):
        resolve(["--task", "t", "--steps"], None, {"method": "star"}, method_cls=star)


def test_options_of_another_method_in_yaml_are_refused(tmp_path, star):
    f = write(tmp_path, "method: star\ntask: gsm8k\nstarr:\n  iterations: 2\n")
    with pytest.raises(UnknownNameError, match=r"'starr'.*did you mean 'star'"):
        resolve([], f, method_cls=star)


def test_config_diff_is_readable():
    old = {"method": "star", "output_dir": "runs/a", "star": {"iterations": 3, "sft": {"learning_rate": 1e-6}}}
    new = {"method": "star", "output_dir": "runs/b", "star": {"iterations": 4, "sft": {"learning_rate": 1e-6}}}
    assert config_diff(old, new) == ["  star.iterations: 3 -> 4"]


def test_every_star_option_has_help(star):
    options = list(iter_options(star.Config))
    assert {o.dotted for o in options} >= {"iterations", "rationalize", "samples_per_question", "init", "sft.learning_rate"}
    assert all(o.help for o in options)


def test_cli_dry_run_prints_the_resolved_config(cli, tmp_path):
    f = write(tmp_path, "method: star\ntask: gsm8k\nstar:\n  iterations: 2\n")
    r = cli("train", "--config", f, "--steps", "12", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "iterations: 2" in r.stdout and "steps: 12" in r.stdout and "learning_rate: 1.0e-06" in r.stdout
    assert not (tmp_path / "runs").exists()
    r = cli("train", "--config", f, "--itrations", "2", "--dry-run")
    assert r.exit_code == 2 and "did you mean '--iterations'" in r.stderr


def test_cli_show_lists_every_option_with_default_and_help(cli):
    r = cli("show", "star")
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stdout.split())
    for flag in ("--iterations", "--no-rationalize", "--samples-per-question", "--sft.learning-rate", "--init", "--task"):
        assert flag.replace("--no-", "--") in text
    assert "Zelikman" in text
    r = cli("show", "stra")
    assert r.exit_code == 2 and "did you mean 'star'" in r.stderr


@pytest.mark.parametrize("method", ["star", "irpo", "finetune-cot", "pad"])
def test_every_method_config_refuses_a_split_limit_below_one_from_python(host, method):
    # The limits live in SplitLimits, which every method Config inherits with its checks.
    cls = host.get("method", method).Config
    for name in ("train_limit", "dev_limit", "heldout_limit"):
        with pytest.raises(ConfigError, match=f"{name} must be at least 1 \\(or none\\), got 0"):
            cls(**{name: 0})
    assert cls(train_limit=None, dev_limit=3).dev_limit == 3
