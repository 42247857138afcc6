"""The run directory: phases recorded once, metrics, manifest, refusal of a changed config."""

from __future__ import annotations

import json
import textwrap

import pytest

from cotkit.config import resolve
from cotkit.errors import ConfigError, CotkitError
from cotkit.run import RunState, open_run_dir, write_manifest

TOY_PLUGIN = textwrap.dedent(
    '''
    from dataclasses import dataclass
    from cotkit import hookimpl
    from cotkit.config import option
    from cotkit.contracts import Method
    from cotkit.jsonl import atomic_write_jsonl


    @dataclass
    class CountConfig:
        rounds: int = option(2, help="How many rounds.")
        start: int = option(0, help="First value.")


    class Count(Method):
        """A toy method: each round writes a file and records a number."""

        name = "count"
        Config = CountConfig

        def run(self, ctx):
            value = ctx.options.start
            for r in range(1, ctx.options.rounds + 1):
                d = ctx.iter_dir(r)
                out = ctx.phase(f"iter_{r:03d}/step", lambda: self.step(ctx, d, value))
                value = out["value"]
            return value

        def step(self, ctx, d, value):
            atomic_write_jsonl(d / "values.jsonl", [{"value": value + 1}])
            return {"value": value + 1, "questions": 3, "seed": ctx.seed_for("x")}


    @hookimpl
    def register_methods(register):
        register(Count)
    '''
)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    from cotkit import plugins

    path = tmp_path / "toy_plugin.py"
    path.write_text(TOY_PLUGIN)
    monkeypatch.setenv(plugins.AUTOLOAD_OFF_ENV, "1")
    monkeypatch.setenv(plugins.PLUGIN_FILES_ENV, str(path))
    plugins.reset()
    yield plugins.host().get("method", "count")
    plugins.reset()


def make_config(tmp_path, *flags, method_cls=None):
    return resolve(["--task", "gsm8k", "--output-dir", str(tmp_path / "run"), *flags], None, {"method": "count"}, method_cls=method_cls)


def test_phases_run_once_and_are_skipped_on_resume(tmp_path, toy):
    cfg = make_config(tmp_path, method_cls=toy)
    ctx = open_run_dir(cfg, resume=False)
    calls = []

    def work():
        calls.append(1)
        return {"answer": 42, "items": [1, 2]}

    assert ctx.phase("iter_001/sample", work) == {"answer": 42, "items": [1, 2]}
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert list(state["phases"]) == ["iter_001/sample"] and state["running"] is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["phase"] == "iter_001/sample" and rows[0]["iteration"] == 1 and rows[0]["answer"] == 42
    assert "items" not in rows[0]  # only scalars go to metrics.jsonl

    with pytest.raises(CotkitError, match="already exists; pass --resume"):
        open_run_dir(make_config(tmp_path, method_cls=toy), resume=False)
    again = open_run_dir(make_config(tmp_path, method_cls=toy), resume=True)
    assert again.phase("iter_001/sample", work) == {"answer": 42, "items": [1, 2]}
    assert calls == [1]
    assert again.seed_for("iter_001/sample") == ctx.seed_for("iter_001/sample") != ctx.seed_for("iter_002/sample")


def test_resume_with_a_changed_config_is_refused_with_a_diff(tmp_path, toy):
    open_run_dir(make_config(tmp_path, "--rounds", "2", method_cls=toy), resume=False)
    with pytest.raises(ConfigError) as e:
        open_run_dir(make_config(tmp_path, "--rounds", "3", "--seed", "5", method_cls=toy), resume=True)
    assert "config differs" in str(e.value)
    assert "count.rounds: 2 -> 3" in str(e.value) and "seed: 0 -> 5" in str(e.value)
    # where the data or the run directory lives may change
    open_run_dir(make_config(tmp_path, "--rounds", "2", "--data-dir", str(tmp_path), method_cls=toy), resume=True)


def test_a_phase_whose_result_is_not_json_fails_loudly(tmp_path, toy):
    ctx = open_run_dir(make_config(tmp_path, method_cls=toy), resume=False)
    with pytest.raises(CotkitError, match="not JSON-serialisable"):
        ctx.phase("p", lambda: {"x": object()})
    assert not RunState(tmp_path / "run" / "state.json").done("p")


def test_manifest_records_versions_fingerprints_seeds_and_resumes(tmp_path, toy, data_dir, tiny_model):
    cfg = make_config(tmp_path, "--model", str(tiny_model), "--seed", "4", method_cls=toy)
    ctx = open_run_dir(cfg, resume=False, data_dir=data_dir)
    m = write_manifest(ctx, ["train", "test"], ["cotkit", "train"])
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert saved == json.loads(json.dumps(m))
    assert saved["packages"]["torch"] and saved["packages"]["cotkit"]
    assert saved["data"]["train"]["n"] == 7473 and len(saved["data"]["test"]["sha256"]) == 64
    assert "model.safetensors" in saved["model"]["files"]
    assert saved["seeds"] == {"seed": 4, "split_seed": 1234}
    assert saved["hardware"]["cpu_count"] >= 1 and saved["hardware"]["torch_threads"] >= 1
    ctx2 = open_run_dir(make_config(tmp_path, "--model", str(tiny_model), "--seed", "4", method_cls=toy), resume=True, data_dir=data_dir)
    write_manifest(ctx2, ["train", "test"], ["cotkit", "train", "--resume"])
    saved = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(saved["resumes"]) == 1 and saved["created"] == m["created"]
    # the same run pointed at different data is refused
    saved["data"]["test"]["sha256"] = "0" * 64
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(saved))
    with pytest.raises(CotkitError, match="task data changed"):
        write_manifest(ctx2, ["train", "test"])


def test_cli_runs_a_plugin_method_and_resumes(cli, tmp_path, toy, data_dir, tiny_model):
    from cotkit import plugins

    out = tmp_path / "r"  # the toy fixture loads the plugin file through $COTKIT_PLUGINS
    args = ["--data-dir", data_dir, "train", "--method", "count", "--task", "gsm8k", "--model", tiny_model]
    r = cli(*args, "--rounds", "3", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["value"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (out / "iter_003" / "values.jsonl").exists() and (out / "report.md").exists()
    assert json.loads((out / "state.json").read_text())["status"] == "complete"
    # resume with only the run directory: the saved options are used, every phase is skipped
    r = cli("--data-dir", data_dir, "train", "--resume", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert "completed earlier" in r.stderr
    r = cli("--data-dir", data_dir, "train", "--resume", "-o", out, "--rounds", "4")
    assert r.exit_code == 2 and "count.rounds: 3 -> 4" in r.stderr
    r = cli("show", out)
    assert r.exit_code == 0 and "iter_003/step" in r.stdout and "complete" in r.stdout
    plugins.reset()


def test_resume_removes_what_a_killed_write_left_behind(tmp_path):
    """A SIGKILL between a temp file's creation and its rename leaves `.NAME.xxxx.tmp`: resume drops it."""
    from cotkit.run import remove_partial_writes

    (tmp_path / "iter_001" / ".checkpoint.tmp").mkdir(parents=True)
    (tmp_path / "iter_001" / ".checkpoint.tmp" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".state.json.73jrbix0.tmp").write_text("{")
    (tmp_path / "iter_001" / ".samples.jsonl.q1w2.tmp").write_text("{}\n")
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / "iter_001" / "samples.jsonl").write_text("{}\n")
    assert remove_partial_writes(tmp_path) == 3
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["iter_001", "iter_001/samples.jsonl", "state.json"]


def test_the_hardware_fingerprint_names_torch_threads_in_a_fresh_process():
    # Not only when something happened to import torch first (a refactor once dropped it silently).
    import subprocess
    import sys

    code = "from cotkit.run.fingerprint import hardware; print(hardware().get('torch_threads'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) >= 1
