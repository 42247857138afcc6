"""Typed options of every plugin kind: one coercion path, the same one-line errors, `cotkit show` for each kind."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cotkit.contracts import Verifier
from cotkit.errors import ConfigError, UnknownNameError
from cotkit.options import NoOptions, UnknownOptionError, option, parse_key_values, plugin_config, to_dict

# ------------------------------------------------------------------------------ the coercion


@dataclass
class Knobs:
    """A plugin Config with one option of each shape."""

    count: int = option(2, minimum=1, help="how many")
    share: float = option(0.5, minimum=0.0, maximum=1.0, help="a fraction")
    loud: bool = option(False, help="say more")
    name: str | None = option(None, help="a name")
    mode: str = option("fast", choices=("fast", "slow"), help="how")
    tags: list[str] = option(default_factory=list, help="comma-separated")


def test_text_yaml_and_python_values_become_the_declared_types():
    from_text = plugin_config(Knobs, parse_key_values(["count=3", "share=0.25", "loud=yes", "name=none", "tags=a, b"], "-B"), "x")
    from_yaml = plugin_config(Knobs, {"count": 3, "share": 0.25, "loud": True, "name": None, "tags": ["a", "b"]}, "x")
    assert from_text == from_yaml
    assert (from_text.count, from_text.share, from_text.loud, from_text.name, from_text.mode, from_text.tags) == (
        3, 0.25, True, None, "fast", ["a", "b"],
    )  # fmt: skip
    assert plugin_config(Knobs, {}, "x") == Knobs()  # nothing given: the defaults


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"count": "many"}, "backend demo option count: expected an integer, got 'many'"),
        ({"count": "0"}, "backend demo option count: must be at least 1, got 0"),
        ({"share": "2"}, "backend demo option share: must be between 0 and 1, got 2.0"),
        ({"share": "nan"}, "backend demo option share: must be a finite number"),
        ({"loud": "maybe"}, "backend demo option loud: expected true or false, got 'maybe'"),
        ({"mode": "medium"}, "backend demo option mode: 'medium' is not one of fast, slow"),
        ({"cuont": "3"}, "unknown option 'cuont': backend demo has no option 'cuont'; did you mean 'count'?"),
        ({"zzz": "3"}, "backend demo has no option 'zzz' (known: count, loud, mode, name, share, tags)"),
    ],
)
def test_bad_values_and_unknown_keys_are_one_line_config_errors(values, message):
    with pytest.raises(ConfigError) as e:
        plugin_config(Knobs, values, "backend demo")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_key_is_also_an_unknown_name():
    with pytest.raises(UnknownNameError):
        plugin_config(Knobs, {"cuont": 1}, "task demo")
    assert issubclass(UnknownOptionError, ConfigError) and issubclass(UnknownOptionError, UnknownNameError)


def test_keys_may_be_written_with_hyphens(host):
    assert parse_key_values(["max-stops=2"], "-B") == {"max_stops": "2"}
    assert plugin_config(host.get("backend", "openai").Config, {"max-stops": 2}, "backend openai").max_stops == 2


@pytest.mark.parametrize("item", ["novalue", "=3", " =3"])
def test_a_malformed_key_value_names_the_flag(item):
    with pytest.raises(ConfigError, match=rf"-O {item!r}: expected KEY=VALUE"):
        parse_key_values([item], "-O")


def test_extra_keys_take_what_the_config_does_not_declare():
    @dataclass
    class Engine:
        dtype: str = option("auto", help="dtype")
        engine_args: dict = option(default_factory=dict, extra_keys=True, help="passed on")

    got = plugin_config(Engine, {"dtype": "float32", "max_model_len": "4096", "enforce_eager": "true", "name": "x"}, "backend e")
    assert got.dtype == "float32" and got.engine_args == {"max_model_len": 4096, "enforce_eager": True, "name": "x"}
    again = plugin_config(Engine, to_dict(got), "backend e")  # a saved config reads back the same
    assert again == got


def test_a_plugin_without_a_config_takes_no_options():
    class Plain(Verifier):
        name = "plain"

        def verify(self, samples):
            return []

    assert Plain.Config is NoOptions and Plain().config == NoOptions()
    with pytest.raises(ConfigError, match=r"unknown option 'rel': verifier plain has no option 'rel' \(it takes no options\)"):
        Plain(rel=0.1)


# --------------------------------------------------------------------- every built-in plugin


def test_plugins_get_typed_values_from_text(host, data_dir):
    svamp = host.task("svamp", data_dir=data_dir, carve_seed="7")
    assert svamp.config.carve_seed == 7 and svamp.task_options == {"carve_seed": "7"}
    program = host.get("verifier", "program")(cpu_seconds="1.5", preload="sympy, math", entry="")
    assert (program.config.cpu_seconds, program.config.preload, program.config.entry) == (1.5, ["sympy", "math"], None)
    arith = host.get("step_scorer", "arith")(neutral="0", unit="line")
    assert (arith.config.neutral, arith.config.unit) == (0.0, "line")
    exact = host.get("verifier", "exact_match")(last_number="false")
    assert exact.config.last_number is False
    openai = host.get("backend", "openai")("served", concurrency="8", timeout="30", base_url="http://h:1/v1/")
    assert (openai.config.concurrency, openai.config.timeout, openai.config.base_url) == (8, 30.0, "http://h:1/v1")


# ------------------------------------------------------------------------- the command line


def one_line_error(res) -> str:
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("-O", "carve_seed=x"), "task svamp option carve_seed: expected an integer, got 'x'"),
        (("-O", "carve_sed=1"), "task svamp has no option 'carve_sed'; did you mean 'carve_seed'?"),
        (("-B", "batch_size=0"), "batch_size=0: expected a positive integer or auto"),
        (("-B", "trust_remote_code=perhaps"), "backend hf option trust_remote_code: expected true or false"),
        (("-B", "dtpye=float32"), "backend hf has no option 'dtpye'; did you mean 'dtype'?"),
    ],
)
def test_sample_refuses_bad_task_and_backend_options_before_the_model(cli, data_dir, args, expected):
    res = cli("--data-dir", data_dir, "sample", "--task", "svamp", "--model", "/no/such/model", "--limit", "1", *args)
    assert expected in one_line_error(res)


def test_eval_refuses_a_bad_step_scorer_value(cli, data_dir):
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", "/no/such/model", "--limit", "1",
              "--n", "2", "--rerank", "arith", "-S", "neutral=2")  # fmt: skip
    assert "step scorer arith option neutral: must be between 0 and 1, got 2.0" in one_line_error(res)


@pytest.mark.parametrize(
    ("name", "header", "rows"),
    [
        ("math", "math (task)", ["subject", "list[str] | None", "level", "str | None", "-O/--task-option"]),
        ("program", "program (verifier)", ["cpu_seconds", "float", "2.0", "at least 0.01", "preload", "list[str]"]),
        ("arith", "arith (step scorer)", ["neutral", "1.0", "between 0 and 1", "unit", "one of line, sentence"]),
        ("hf", "hf (backend)", ["batch_size", "int | str", "auto", "trust_remote_code", "bool", "false", "-B/--backend-option"]),
        ("vllm", "vllm (backend)", ["(any other)", "KEY=VALUE", "max_model_len"]),
        ("star", "star (method)", ["--iterations", "--sft.learning-rate", "run options"]),
    ],
)
def test_show_prints_the_typed_options_of_every_kind(cli, name, header, rows):
    res = cli("show", name)
    assert res.exit_code == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert header in text
    for cell in rows:
        assert cell in text, (cell, text)


def test_show_kind_name_a_subset_and_a_plugin_without_options(cli):
    assert "exec (step scorer)" in cli("show", "step-scorer:exec").stdout
    assert "exec (step scorer)" in cli("show", "step_scorer:exec").stdout
    assert "math (task)" in cli("show", "math:algebra").stdout
    assert "task gsm8k takes no options" in " ".join(cli("show", "gsm8k").stdout.split())
    assert "did you mean 'hf'" in one_line_error(cli("show", "backend:hff"))
    assert "unknown plugin 'arihtm'; did you mean 'arith'" in one_line_error(cli("show", "arihtm"))


def test_show_yaml_of_a_plugin_pastes_into_a_run_config(cli):
    import yaml

    assert yaml.safe_load(cli("show", "hf", "--yaml").stdout) == {
        "backend": "hf",
        "backend_options": {"device": "auto", "dtype": "auto", "batch_size": "auto", "trust_remote_code": False},
    }
    assert yaml.safe_load(cli("show", "svamp", "--yaml").stdout) == {"task": "svamp", "task_options": {"carve_seed": 0}}
    assert yaml.safe_load(cli("show", "arith", "--yaml").stdout) == {"unit": "sentence", "neutral": 1.0}


SHARED_NAME_PLUGIN = '''
from dataclasses import dataclass

from cotkit import Verifier, hookimpl, option


@dataclass
class SvampCheckConfig:
    strict: bool = option(True, help="refuse rounded answers")


class SvampCheck(Verifier):
    """A verifier that shares its name with the svamp task."""

    name = "svamp"
    Config = SvampCheckConfig

    def verify(self, samples):
        return []


@hookimpl
def register_verifiers(register):
    register(SvampCheck)
'''


def test_a_name_in_two_kinds_shows_both_and_kind_name_picks_one(cli, tmp_path):
    plugin = tmp_path / "svamp_check.py"
    plugin.write_text(SHARED_NAME_PLUGIN, encoding="utf-8")
    both = " ".join(cli("--plugin", plugin, "show", "svamp").stdout.split())
    assert "svamp (task)" in both and "carve_seed" in both and "svamp (verifier)" in both and "strict" in both
    one = " ".join(cli("--plugin", plugin, "show", "verifier:svamp").stdout.split())
    assert "svamp (verifier)" in one and "svamp (task)" not in one
    assert "say which: task:svamp or verifier:svamp" in one_line_error(cli("--plugin", plugin, "show", "svamp", "--yaml"))
