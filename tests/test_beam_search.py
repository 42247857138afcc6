"""Step-level beam search: the search on scripted models, end to end on the tiny model, and `cotkit eval --search beam`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cotkit.contracts import Backend, Generation, SamplingParams
from cotkit.errors import ConfigError
from cotkit.harness.stepsearch import BeamBackend, BeamSettings, beam_search

PROMPT = "Q: Janet has 16 eggs, eats 3, bakes 4 and sells the rest at $2. How much does she make?\nA:"


class ScriptedBackend(Backend):
    """Candidate next lines chosen by what has been written so far; records every generate call."""

    name = "scripted"

    def __init__(self, script: dict[str, list[str]], prompt: str = PROMPT):
        super().__init__("scripted")
        self.script, self.prompt, self.calls = script, prompt, []

    def generate(self, prompts, params: SamplingParams, progress: bool = True):
        self.calls.append((len(prompts), params.n))
        out = []
        for p in prompts:
            lines = self.script.get(p[len(self.prompt) :], [""])  # nothing scripted: end of sequence
            out.append([Generation(lines[j % len(lines)], 5, "stop") for j in range(params.n)])
        return out


TEXT_SCRIPT = {
    "": [" She has 16 - 3 - 4 = 8 eggs left.", " She has 16 - 3 - 4 = 9 eggs left."],
    " She has 16 - 3 - 4 = 8 eggs left.\n": ["She makes 8 * 2 = 16 dollars.", "The answer is 16."],
    " She has 16 - 3 - 4 = 9 eggs left.\n": ["She makes 9 * 2 = 19 dollars.", "She makes 9 * 2 = 18 dollars."],
    " She has 16 - 3 - 4 = 9 eggs left.\nShe makes 9 * 2 = 18 dollars.\n": ["The answer is 18.", ""],
    " She has 16 - 3 - 4 = 9 eggs left.\nShe makes 9 * 2 = 19 dollars.\n": ["The answer is 19."],
}


def test_beam_search_follows_the_arithmetically_sound_path(host):
    backend = ScriptedBackend(TEXT_SCRIPT)
    settings = BeamSettings(beam_width=2, expand=2, max_steps=6)
    [result] = beam_search(backend, [PROMPT], host.get("step_scorer", "arith")(), settings)
    best = result.best
    assert best.text == " She has 16 - 3 - 4 = 9 eggs left.\nShe makes 9 * 2 = 18 dollars.\nThe answer is 18.\n"
    assert best.steps == [" She has 16 - 3 - 4 = 9 eggs left.\n", "She makes 9 * 2 = 18 dollars.\n", "The answer is 18.\n"]
    assert best.scores == [1.0, 1.0, 1.0] and best.finish == "answer"
    # a solution that trails off into blank lines, at the same score, ranks below the one that answers
    assert [b.finish for b in result.beams] == ["answer", "blank"]
    assert len(result.beams) <= 2 and all(b.done for b in result.beams)
    # never more than beam_width x expand candidates per step
    assert all(n_prompts * n <= 4 for n_prompts, n in backend.calls)


def test_beam_search_cuts_at_stop_sequences_and_blank_lines(host):
    script = {"": [" 2 + 2 = 4."], " 2 + 2 = 4.\n": [""], " 2 + 2 = 4.\n\n": ["Q: What is 3 + 3?"]}
    arith = host.get("step_scorer", "arith")()
    [result] = beam_search(ScriptedBackend(script), [PROMPT], arith, BeamSettings(beam_width=1, expand=1), stop=["\n\nQ:"])
    assert result.best.text == " 2 + 2 = 4." and result.best.finish == "stop" and result.best.steps == [" 2 + 2 = 4."]
    script = {"": [" 2 + 2 = 4."]}  # the model keeps ending: two blank lines end the solution
    [result] = beam_search(ScriptedBackend(script), [PROMPT], arith, BeamSettings(beam_width=1, expand=1))
    assert result.best.finish == "blank" and result.best.steps == [" 2 + 2 = 4.\n\n\n"]


def test_program_beam_search_steps_are_statements(host):
    prompt = "Write a program.\ndef solution():\n"
    script = {
        "": ["    eggs = 16"],
        "    eggs = 16\n": ["    left = eggs / 0", "    left = eggs - 3 - 4", "    for i in range(2):"],
        "    eggs = 16\n    for i in range(2):\n": ["        eggs -= 1"],
        "    eggs = 16\n    left = eggs - 3 - 4\n": ["    return left * 2"],
        "    eggs = 16\n    for i in range(2):\n        eggs -= 1\n": ["    return eggs"],
    }
    backend = ScriptedBackend(script, prompt)
    scorer = host.get("step_scorer", "exec")(cpu_seconds=0.5)
    try:
        [result] = beam_search(backend, [prompt], scorer, BeamSettings(beam_width=3, expand=3))
    finally:
        scorer.close()
    first, looped, crashed = result.beams
    assert first.text == "    eggs = 16\n    left = eggs - 3 - 4\n    return left * 2\n"
    assert first.finish == "return" and first.scores == [1.0, 1.0, 1.0]
    assert looped.text == "    eggs = 16\n    for i in range(2):\n        eggs -= 1\n    return eggs\n"
    # the `for` header and its body are one step (which binds `i`)
    assert looped.steps[1] == "    for i in range(2):\n        eggs -= 1\n" and looped.scores == [1.0, 1.0, 1.0]
    assert crashed.text.startswith("    eggs = 16\n    left = eggs / 0\n") and crashed.scores == [1.0, 0.0]
    assert (1, 1) in backend.calls  # the header's body line was generated on its own


@pytest.fixture(scope="module")
def tiny_backend(tiny_model):
    from cotkit.models import load_backend

    backend = load_backend("hf", model=str(tiny_model))
    yield backend
    backend.close()


class Counting(Backend):
    """Counts generations per call around a real backend."""

    name = "counting"

    def __init__(self, inner):
        super().__init__(inner.model_name)
        self.inner, self.calls = inner, []

    def generate(self, prompts, params, progress=True):
        self.calls.append(len(prompts) * params.n)
        return self.inner.generate(prompts, params, progress=False)


@pytest.mark.parametrize("scorer_name", ["arith", "exec"])
def test_beam_search_end_to_end_on_the_tiny_model(host, tiny_backend, scorer_name):
    prompts = [PROMPT, "def solution():\n"]
    settings = BeamSettings(beam_width=3, expand=2, max_steps=4, step_tokens=8, max_new_tokens=24, seed=7)
    scorer = host.get("step_scorer", scorer_name)(**({"cpu_seconds": 0.5} if scorer_name == "exec" else {}))
    try:
        counting = Counting(tiny_backend)
        first = beam_search(counting, prompts, scorer, settings, stop=["\n\nQ:"])
        again = beam_search(tiny_backend, prompts, scorer, settings, stop=["\n\nQ:"])
        other = beam_search(tiny_backend, prompts, scorer, replace(settings, seed=8), stop=["\n\nQ:"])
    finally:
        scorer.close()
    assert [[b.text for b in r.beams] for r in first] == [[b.text for b in r.beams] for r in again]
    assert [r.best.text for r in first] != [r.best.text for r in other]
    assert max(counting.calls) <= len(prompts) * 3 * 2  # at most beam width x expand candidates per prompt and step
    for result in first:
        assert 1 <= len(result.beams) <= 3
        assert [b.value(settings) for b in result.beams] == sorted((b.value(settings) for b in result.beams), reverse=True)
        for beam in result.beams:
            assert beam.text and beam.text == "".join(beam.steps) and len(beam.scores) == len(beam.steps)
            assert all(0.0 <= s <= 1.0 for s in beam.scores)
            assert beam.finish in ("answer", "stop", "blank", "length", "max_steps", "invalid", "return", "fence")
            assert beam.tokens <= settings.max_new_tokens + settings.step_tokens


def test_beam_backend_in_the_sampling_harness(host, tiny_backend, data_dir):
    """Any code sampling through a Backend gets step-level beam search by wrapping it (PaD's step-verified decoding)."""
    from cotkit.harness.sample import sample

    task = host.task("gsm8k", data_dir=data_dir)
    examples = task.examples("test", limit=2)
    searcher = BeamBackend(tiny_backend, host.get("step_scorer", "arith")(), BeamSettings(beam_width=2, expand=2, step_tokens=8))
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=16, seed=3)
    samples = sample(task, examples, searcher, params, progress=False)
    assert len(samples) == 4 and all(s.completion for s in samples)
    assert len(searcher.traces) == 2 and all(len(beams) == 2 for beams in searcher.traces.values())
    with pytest.raises(ConfigError, match="at most beam-width=2"):
        searcher.generate([task.prompt(examples[0])], replace(params, n=3))


def test_beam_settings_are_checked():
    with pytest.raises(ConfigError, match="beam-width"):
        BeamSettings(beam_width=0)
    with pytest.raises(ConfigError, match="aggregate"):
        BeamSettings(aggregate="mean")


def test_eval_search_beam_through_the_cli(cli, tiny_model, data_dir, tmp_path):
    out = tmp_path / "out"
    res = cli("--data-dir", data_dir, "eval", "--model", tiny_model, "--task", "gsm8k", "--limit", "2",
              "--search", "beam", "--step-scorer", "exec", "--beam-width", "2", "--beam-expand", "2",
              "--max-new-tokens", "16", "--step-tokens", "8", "--output-dir", out, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["n"] == 2 and summary["search"]["method"] == "beam" and summary["search"]["step_scorer"] == "exec"
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        search = row["search"]
        assert "".join(search["steps"]) == row["completion"] and len(search["step_scores"]) == len(search["steps"])
        assert search["finish"] and search["tokens"] >= 1
