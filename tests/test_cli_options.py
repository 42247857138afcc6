"""One option vocabulary: a shared flag reads the same in every command, `cotkit eval`'s defaults are
EvalSettings' (and BeamSettings'), the default model is named once, the global options are parsed once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer

from cotkit.cli.main import build_app
from cotkit.harness.stepsearch import BeamSettings
from cotkit.lmeval.runner import EvalSettings
from cotkit.models import DEFAULT_MODEL

EVAL_SET_BY_COMMAND = {"data_dir", "task_options", "scorer_options", "bootstrap_iters"}


def commands() -> dict[str, object]:
    """Every command of the app (`models list` and the like included), by its path."""
    found = {}

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            found[f"{path} {name}".strip()] = sub
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(build_app()), "")
    return found


def options_of(command) -> dict[str, object]:
    return {p.name: p for p in command.params}


def test_a_shared_flag_has_one_help_text_and_the_same_short_flags_everywhere():
    by_flag: dict[str, set] = {}
    for path, command in commands().items():
        for param in command.params:
            if param.opts and param.opts[0].startswith("--") and param.name != "help":
                by_flag.setdefault(param.opts[0], set()).add((path, tuple(sorted(param.opts)), param.help))
    shared = {"--task", "--backend", "--backend-option", "--task-option", "--limit", "--seed", "--verifier", "--style",
              "--top-p", "--max-new-tokens", "--batch-size", "--output", "--json", "--model"}  # fmt: skip
    for flag in shared:
        uses = by_flag[flag]
        assert len(uses) >= 2, (flag, uses)
        assert len({help_text for _, _, help_text in uses}) == 1, (flag, uses)
        assert len({opts for _, opts, _ in uses}) == 1, (flag, uses)


def test_eval_options_are_the_eval_settings_fields_with_their_defaults():
    params = options_of(commands()["eval"])
    fields = {f.name: f for f in dataclasses.fields(EvalSettings)}
    for name, field in fields.items():
        if name in EVAL_SET_BY_COMMAND:
            assert name not in params
            continue
        assert params[name].default == field.default, name
        assert params[name].opts[0] == "--" + name.replace("_", "-")
    # The beam search defaults are BeamSettings' (written once, there).
    beam = BeamSettings()
    assert params["beam_width"].default == beam.beam_width and params["beam_expand"].default == beam.expand
    assert params["max_steps"].default == beam.max_steps and params["step_tokens"].default == beam.step_tokens
    assert params["logprob_weight"].default == beam.logprob_weight
    assert params["beam_expand"].help == next(f for f in dataclasses.fields(BeamSettings) if f.name == "expand").metadata["help"]


def test_every_command_defaults_to_the_one_default_model():
    found = commands()
    assert options_of(found["sample"])["model"].default == DEFAULT_MODEL
    assert options_of(found["eval"])["model"].default == DEFAULT_MODEL


def test_eval_settings_given_as_flags_reach_the_evaluation(cli, data_dir, monkeypatch, tmp_path):
    seen = {}

    def fake_evaluate(task, backend, settings, output_dir, verbose=False):
        seen["settings"] = settings
        return {"task": task.full_name, "model": "m", "style": settings.style, "n": 0, "accuracy": None,
                "samples_per_question": settings.n}  # fmt: skip

    class NoBackend:
        def close(self):
            pass

    monkeypatch.setattr("cotkit.lmeval.runner.evaluate", fake_evaluate)
    monkeypatch.setattr("cotkit.models.load_backend", lambda *a, **k: NoBackend())
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--n", "3", "--beam-width", "5", "--search", "beam",
              "--step-scorer", "arith", "--aggregate", "prod", "-l", "7", "--output-dir", tmp_path / "out", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    s = seen["settings"]
    assert (s.n, s.beam_width, s.search, s.step_scorer, s.aggregate, s.limit) == (3, 5, "beam", "arith", "prod", 7)
    assert (s.max_steps, s.step_tokens, s.beam_expand) == (BeamSettings.max_steps, BeamSettings.step_tokens, BeamSettings.expand)
    assert s.data_dir == str(data_dir)


PLUGIN_WITH_A_COMMAND = """
from cotkit import hookimpl

@hookimpl
def register_commands(app):
    @app.command("shout")
    def shout(word: str):
        print(word.upper())
"""


def test_plugin_commands_are_listed_by_help(cli, tmp_path):
    plugin = tmp_path / "cmd.py"
    plugin.write_text(PLUGIN_WITH_A_COMMAND)
    res = cli("--plugin", plugin, "--help")
    assert res.exit_code == 0 and "shout" in res.stdout


def test_global_options_are_kept_for_the_commands(cli, tmp_path, monkeypatch):
    from cotkit.cli import state

    plugin = tmp_path / "cmd.py"
    plugin.write_text(PLUGIN_WITH_A_COMMAND)
    res = cli("--plugin", plugin, "--data-dir", tmp_path, "shout", "hey")
    assert res.exit_code == 0 and res.stdout.strip() == "HEY"
    assert state.options.plugin_files == [str(plugin)] and state.options.data_dir == Path(tmp_path)
    assert state.options.debug is False
    monkeypatch.setenv("COTKIT_DEBUG", "1")
    cli("--plugin", plugin, "shout", "hey")
    assert state.options.debug is True


@pytest.mark.parametrize("flag", ["--debug", "--plugin=x.py"])
def test_a_global_option_after_train_says_where_it_goes(cli, data_dir, flag):
    res = cli("--data-dir", data_dir, "train", "--method", "star", "--task", "gsm8k", "--dry-run", flag)
    assert res.exit_code == 2
    assert "global option: put it before the command" in res.stderr and flag.split("=")[0] in res.stderr


def test_data_dir_after_train_is_still_the_run_option(cli, data_dir):
    res = cli("train", "--method", "star", "--task", "gsm8k", "--dry-run", "--data-dir", data_dir)
    assert res.exit_code == 0, res.stderr
    assert f"data_dir: {data_dir}" in res.stdout


def test_eval_beam_search_takes_pad_s_beam_score():
    """`cotkit eval --search beam` can score beams as PaD does: summed log-probs, logsum of step scores, per token."""
    from cotkit.errors import ConfigError

    s = EvalSettings(search="beam", step_scorer="faithfulness", aggregate="logsum", logprob_weight=1.0, logprob_reduce="sum",
                     length_penalty=1.0).beam_settings()  # fmt: skip
    assert (s.aggregate, s.logprob_weight, s.logprob_reduce, s.length_penalty) == ("logsum", 1.0, "sum", 1.0)
    with pytest.raises(ConfigError, match="--aggregate 'logsum'"):
        EvalSettings(rerank="exec", n=2, aggregate="logsum")  # reranking ranks solution scores: min, prod or last
