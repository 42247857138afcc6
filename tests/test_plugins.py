"""The plugin system: built-ins, single-file plugins, installed packages, and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cotkit.contracts import KINDS

FIXTURE_PLUGIN = Path(__file__).parent / "fixtures" / "cotkit-example-plugin"

GOOD_FILE_PLUGIN = '''
from cotkit import hookimpl
from cotkit.contracts import Verifier
from cotkit.types import Status, Verdict


class Contains(Verifier):
    """Correct when the gold answer appears anywhere in the completion."""

    name = "contains_gold"

    def verify(self, samples):
        return [Verdict(Status.CORRECT if s.example.answer in s.completion else Status.INCORRECT) for s in samples]


@hookimpl
def register_verifiers(register):
    register(Contains)
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_builtins_register_through_the_same_hooks(host):
    entries = host.all_entries()
    assert entries, "no built-in plugins registered"
    assert {e.provider.name for e in entries} == {"cotkit"}
    kinds = {e.kind for e in entries}
    assert {"task", "verifier", "backend", "method"} <= kinds
    for e in entries:
        assert issubclass(e.cls, KINDS[e.kind])
        assert e.cls.summary(), f"{e.kind} {e.name} has no description"


def test_plugins_json_lists_every_kind(cli):
    result = cli("plugins", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all({"kind", "name", "provider", "version", "description"} <= set(r) for r in rows)
    assert {"task", "verifier", "backend", "method"} <= {r["kind"] for r in rows}


def test_plugins_table(cli):
    result = cli("plugins")
    assert result.exit_code == 0
    assert "provider" in result.stdout and "cotkit" in result.stdout


def test_file_plugin_is_listed_and_scores(cli, tmp_path, data_dir):
    plugin = write(tmp_path, "contains.py", GOOD_FILE_PLUGIN)
    rows = json.loads(cli("--plugin", plugin, "plugins", "--json").stdout)
    mine = [r for r in rows if r["name"] == "contains_gold"]
    assert mine and mine[0]["kind"] == "verifier" and mine[0]["provider"] == str(plugin)

    inp = tmp_path / "in.jsonl"
    inp.write_text(
        json.dumps({"question": "q", "answer": "x\n#### 18", "completion": "it is 18"}) + "\n"
        + json.dumps({"question": "q", "answer": "x\n#### 7", "completion": "it is 18"}) + "\n"
    )
    res = cli("--plugin", plugin, "--data-dir", data_dir, "score", "--task", "gsm8k",
              "--verifier", "contains_gold", "--input", inp, "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["n"] == 2 and summary["accuracy"] == 0.5


def test_duplicate_name_names_both_providers(cli, tmp_path):
    a = write(tmp_path, "a.py", GOOD_FILE_PLUGIN)
    b = write(tmp_path, "b.py", GOOD_FILE_PLUGIN)
    res = cli("--plugin", a, "--plugin", b, "plugins")
    assert res.exit_code == 2
    assert "duplicate verifier 'contains_gold'" in res.stderr
    assert str(a) in res.stderr and str(b) in res.stderr
    assert "Traceback" not in res.stderr


def test_duplicate_of_a_builtin(cli, tmp_path):
    clash = write(tmp_path, "clash.py", GOOD_FILE_PLUGIN.replace('"contains_gold"', '"exact_match"'))
    res = cli("--plugin", clash, "plugins")
    assert res.exit_code == 2
    assert "duplicate verifier 'exact_match'" in res.stderr and "cotkit" in res.stderr and str(clash) in res.stderr


def test_unknown_name_suggests_the_closest(cli, data_dir, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("{}\n")
    res = cli("--data-dir", data_dir, "score", "--task", "gsm8", "--input", inp)
    assert res.exit_code == 2
    assert "unknown task 'gsm8'" in res.stderr and "'gsm8k'" in res.stderr
    res = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "--verifier", "exact_matsh", "--input", inp)
    assert res.exit_code == 2 and "'exact_match'" in res.stderr


def test_plugin_that_fails_to_import_is_named(cli, tmp_path):
    bad = write(tmp_path, "broken.py", "import not_a_module_anywhere\n")
    res = cli("--plugin", bad, "plugins")
    assert res.exit_code == 2
    assert str(bad) in res.stderr and "ModuleNotFoundError" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_plugin_that_fails_inside_its_hook_is_named(cli, tmp_path):
    bad = write(tmp_path, "hookfail.py", """
        from cotkit import hookimpl

        @hookimpl
        def register_tasks(register):
            raise RuntimeError("boom in hook")
    """)
    res = cli("--plugin", bad, "plugins")
    assert res.exit_code == 2 and "hookfail.py" in res.stderr and "boom in hook" in res.stderr


def test_misspelt_hook_fails_loudly(cli, tmp_path):
    bad = write(tmp_path, "typo.py", """
        from cotkit import hookimpl

        @hookimpl
        def register_verifers(register):
            pass
    """)
    res = cli("--plugin", bad, "plugins")
    assert res.exit_code == 2 and "register_verifers" in res.stderr


def test_registering_a_non_plugin_class_is_an_error(cli, tmp_path):
    bad = write(tmp_path, "notask.py", """
        from cotkit import hookimpl

        class NotATask:
            name = "nope"

        @hookimpl
        def register_tasks(register):
            register(NotATask)
    """)
    res = cli("--plugin", bad, "plugins")
    assert res.exit_code == 2 and "expected a Task subclass" in res.stderr


def test_debug_shows_the_traceback(tmp_path):
    bad = write(tmp_path, "broken.py", "raise ValueError('plugin exploded')\n")
    env = {**os.environ, "COTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    res = subprocess.run([sys.executable, "-m", "cotkit", "--debug", "--plugin", str(bad), "plugins"],
                         capture_output=True, text=True, env=env)
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "plugin exploded" in res.stderr


def test_plugin_commands_are_added(cli, tmp_path):
    plugin = write(tmp_path, "cmd.py", """
        from cotkit import hookimpl

        @hookimpl
        def register_commands(app):
            @app.command("shout")
            def shout(word: str):
                print(word.upper())
    """)
    res = cli("--plugin", plugin, "shout", "hey")
    assert res.exit_code == 0 and res.stdout.strip() == "HEY"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """The example plugin package installed (pip, no deps) into its own target folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(FIXTURE_PLUGIN)],
        check=True, capture_output=True,
    )
    return target


def _run_with(site: Path, *args: str, autoload: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    env.pop("COTKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    if not autoload:
        env["COTKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run([sys.executable, "-m", "cotkit", *args], capture_output=True, text=True, env=env)


def test_installed_package_is_listed(installed_example):
    res = _run_with(installed_example, "plugins", "--json")
    assert res.returncode == 0, res.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(res.stdout)}
    task = rows[("task", "addition")]
    assert task["provider"] == "cotkit-example-plugin" and task["version"] == "0.3.1"
    assert rows[("verifier", "tolerance")]["source"] == "entrypoint"
    table = _run_with(installed_example, "plugins")
    assert "cotkit-example-plugin" in table.stdout and "addition" in table.stdout


def test_installed_package_scores(installed_example, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        json.dumps({"question": "Ana has 1 and 2", "answer": 3, "completion": "1 + 2 = 3. The answer is 3."}) + "\n"
        + json.dumps({"question": "Ana has 1 and 2", "answer": 3, "completion": "The answer is 4."}) + "\n"
        + json.dumps({"question": "no answer field", "completion": "The answer is 4."}) + "\n"
    )
    res = _run_with(installed_example, "score", "--task", "addition", "--verifier", "tolerance", "--input", str(inp), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert (summary["n"], summary["correct"], summary["errors"]) == (3, 1, 1)
    assert _run_with(installed_example, "example-hello", "--name", "ada").stdout.strip() == \
        "hello, ada, from cotkit-example-plugin"


def test_autoload_can_be_turned_off(installed_example):
    res = _run_with(installed_example, "plugins", "--json", autoload=False)
    names = {r["name"] for r in json.loads(res.stdout)}
    assert "addition" not in names and "tolerance" not in names


def test_a_plugin_file_named_twice_loads_once(cli):
    from pathlib import Path

    plugin = Path(__file__).parent / "fixtures" / "run_methods.py"
    r = cli("--plugin", plugin, "--plugin", str(plugin.resolve()), "plugins", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count('"tally"') == 1
