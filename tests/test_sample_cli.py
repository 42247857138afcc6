"""The sampling harness and `cotkit sample` end to end on the tiny model with real task data."""

from __future__ import annotations

import json

import pytest

from cotkit.contracts import SamplingParams


@pytest.fixture(scope="module")
def backend(tiny_model):
    from cotkit.models import load_backend

    be = load_backend("hf", model=str(tiny_model), batch_size=4)
    yield be
    be.close()


@pytest.fixture
def gsm8k(host, data_dir):
    return host.task("gsm8k", data_dir=data_dir)


def test_sample_gives_n_samples_per_example_in_example_order(gsm8k, backend):
    from cotkit.harness.sample import sample

    examples = gsm8k.examples("test", limit=3)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, stop=["###"], seed=11)
    samples = sample(gsm8k, examples, backend, params, style="fewshot", progress=False)
    assert [(s.example.id, s.meta["sample_index"]) for s in samples] == [(e.id, j) for e in examples for j in range(2)]
    first = samples[0]
    assert first.prompt == gsm8k.prompt(examples[0], style="fewshot")
    assert first.stop == [*gsm8k.stop_sequences("fewshot"), "###"]
    assert first.meta["backend"] == "hf" and first.meta["n_tokens"] <= 6
    assert first.meta["finish_reason"] in ("stop", "length")
    assert samples[1].meta["seed"] == first.meta["seed"] + 1


def test_a_sample_does_not_depend_on_the_other_examples(gsm8k, backend):
    from cotkit.harness.sample import sample

    examples = gsm8k.examples("test", limit=4)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=3)
    everything = sample(gsm8k, examples, backend, params, progress=False)
    subset = sample(gsm8k, [examples[2], examples[0]], backend, params, progress=False)
    by_key = {(s.example.id, s.meta["sample_index"]): s.completion for s in everything}
    assert all(by_key[(s.example.id, s.meta["sample_index"])] == s.completion for s in subset)
    reseeded = sample(gsm8k, examples[:1], backend, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=4), progress=False)
    assert [s.completion for s in reseeded] != [s.completion for s in everything[:2]]


def test_a_sample_redraws_alone_from_its_recorded_seed(gsm8k, backend):
    from cotkit.harness.sample import sample

    examples = gsm8k.examples("test", limit=2)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=5)
    s = sample(gsm8k, examples, backend, params, progress=False)[5]
    [[again]] = backend.generate([s.prompt], SamplingParams(n=1, temperature=1.0, max_new_tokens=8, stop=s.stop), progress=False, seeds=[s.meta["seed"]])
    assert again.text == s.completion


def test_chat_style_sends_messages(host, data_dir, backend):
    from cotkit.harness.sample import sample

    task = host.task("bbh:boolean_expressions", data_dir=data_dir)
    [s] = sample(task, task.examples(task.heldout_split, limit=1), backend, SamplingParams(max_new_tokens=4), style="chat", progress=False)
    assert isinstance(s.prompt, list) and s.prompt[-1]["role"] == "user"
    assert s.stop == task.stop_sequences("chat")


def test_cotkit_sample_shows_verdicts_and_writes_score_rows(cli, tiny_model, data_dir, tmp_path):
    out = tmp_path / "samples.jsonl"
    result = cli(
        "--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", tiny_model, "-n", "2", "--limit", "2",
        "--max-new-tokens", "6", "--temperature", "0.8", "--seed", "1", "--output", out, "--include-prompt",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "cotkit sample: gsm8k" in result.stdout and "Janet" in result.stdout
    assert "unparseable" in result.stdout or "incorrect" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert {"question", "answer", "completion", "verdict", "correct", "extracted", "prompt", "meta"} <= set(row)
        assert row["meta"]["backend"] == "hf"
    rescored = cli("--data-dir", data_dir, "score", "--task", "gsm8k", "--input", out, "--json")
    assert rescored.exit_code == 0, rescored.stderr
    assert json.loads(rescored.stdout)["n"] == 4


def test_the_sample_table_shows_a_multiple_choice_questions_choices(cli, host, tiny_model, data_dir):
    example = host.task("arc:challenge", data_dir=data_dir).examples("test", limit=1)[0]
    result = cli("--data-dir", data_dir, "sample", "--task", "arc:challenge", "--model", tiny_model, "-n", "1", "--limit", "1",
                 "--max-new-tokens", "2")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    flat = " ".join(result.stdout.replace("│", " ").split())
    for choice in example.choices:
        assert f"({choice.label})" in flat and " ".join(choice.text.split()[:2]) in flat


def test_cotkit_sample_errors_are_one_line(cli, tmp_path, data_dir, tiny_model):
    missing = cli("--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", tmp_path / "no-model", "--limit", "1")
    assert missing.exit_code == 2
    assert missing.stderr.strip().count("\n") == 0 and "no such folder" in missing.stderr
    bad_style = cli("--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", tiny_model, "--style", "fewshoot")
    assert bad_style.exit_code == 2 and "did you mean 'fewshot'" in bad_style.stderr
    bad_option = cli("--data-dir", data_dir, "sample", "--task", "gsm8k", "--model", tiny_model, "-B", "devcie=cpu")
    assert bad_option.exit_code == 2 and "unknown option 'devcie'" in bad_option.stderr
