"""The `faithfulness` step scorer (PaD's step-by-step verification) and beam search scored as the paper scores it."""

from __future__ import annotations

import math

import pytest

from cotkit.contracts import Backend, Generation, SamplingParams
from cotkit.errors import ConfigError
from cotkit.harness.stepsearch import BeamSettings, aggregate, beam_search

# Programs for GSM8K test question 0 (Janet's ducks), one statement a line, the same number of lines.
FAITHFUL = (
    "def solution():\n    eggs_per_day = 16\n    eaten = 3\n    baked = 4\n"
    "    left = eggs_per_day - eaten - baked\n    dollars = left * 2\n    return dollars\n"
)
UNFAITHFUL = (
    "def solution():\n    apples = 7\n    pears = apples * 11\n    total = pears + 5\n"
    "    boxes = total - 8\n    price = boxes * 9\n    return price\n"
)


@pytest.fixture(scope="module")
def janet(data_dir):
    from cotkit.plugins import host

    [example] = host().task("gsm8k", data_dir=data_dir).examples("test", limit=1)
    assert example.question.startswith("Janet")
    return example


@pytest.fixture
def lexical(host):
    scorer = host.get("step_scorer", "faithfulness")()
    yield scorer
    scorer.close()


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A random 2-layer BERT built from a config, with the tiny model's trained BPE tokenizer, saved as a folder."""
    import torch
    from transformers import BertConfig, BertModel

    from cotkit.testing import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def total_log(scores: list[float]) -> float:
    return sum(math.log(s) for s in scores)


# ------------------------------------------------------------------------------------ scorer


def test_lexical_ranks_the_program_using_the_question_quantities_above_one_that_does_not(lexical, janet):
    good_steps, bad_steps = lexical.split(FAITHFUL, janet), lexical.split(UNFAITHFUL, janet)
    assert "".join(good_steps) == FAITHFUL and len(good_steps) == len(bad_steps) == 6
    good, bad = lexical.score_steps(janet, good_steps), lexical.score_steps(janet, bad_steps)
    assert all(0 < s <= 1 for s in good + bad)
    # no line of the unfaithful program shares a word or number with the question: cos 0, scaled to 0.5
    assert bad == [0.5] * 6
    # `eggs_per_day = 16` ("16 eggs per day"), `eaten = 3` ("eats three"), `dollars = left * 2` ("$2 ... dollars")
    assert good[0] > 0.8 and good[1] > 0.5 and good[4] > 0.5
    assert total_log(good) > total_log(bad)


def test_a_line_repeating_a_question_sentence_scores_one_and_headers_add_nothing(lexical, janet):
    steps = ["def solution():\n", "    # Janet’s ducks lay 16 eggs per day.\n    ducks = 16\n"]
    header, comment_and_line = lexical.score_steps(janet, steps)
    assert header == 1.0  # the `def` line is never scored, as in the reference
    # a step of two lines scores the product of their alignments: the comment's is 1, so the line's remains
    assert comment_and_line == pytest.approx(lexical.score_steps(janet, ["    ducks = 16\n"])[0])


def test_scores_are_floored_and_a_solution_without_a_question_is_not_judged(lexical, janet):
    assert lexical.score_steps(None, ["    x = 1\n", "    return x\n"]) == [1.0, 1.0]
    many = lexical.score_many([(janet, ["    y = 2\n"] * 40)])[0]
    assert all(0 < s <= 1 for s in many) and lexical.score_steps(janet, ["    y = 2\n" * 40])[0] == pytest.approx(1e-6)


@pytest.mark.usefixtures("one_thread")
def test_encoder_scores_from_a_local_folder_are_cached_and_in_range(host, tiny_encoder, janet):
    scorer = host.get("step_scorer", "faithfulness")(encoder=str(tiny_encoder))
    try:
        steps = scorer.split(FAITHFUL, janet)
        scores = scorer.score_steps(janet, steps)
        assert len(scores) == len(steps) and all(0 < s <= 1 for s in scores)
        cached = len(scorer._cache)
        assert scorer.score_many([(janet, steps)]) == [scores] and len(scorer._cache) == cached  # nothing re-embedded
        # identical texts embed identically: a line that is a question sentence aligns perfectly
        sentence = "She sells the remainder at the farmers' market daily for $2 per fresh duck egg."
        assert scorer.score_steps(janet, [f"    {sentence}\n"])[0] == pytest.approx(1.0, abs=1e-5)
        mean = host.get("step_scorer", "faithfulness")(encoder=str(tiny_encoder), pooling="mean")
        assert mean.score_steps(janet, steps) != scores  # another sentence embedding, other scores
        mean.close()
    finally:
        scorer.close()


def test_a_missing_encoder_is_one_clear_error(host, tmp_path, janet):
    from cotkit.errors import ModelError

    scorer = host.get("step_scorer", "faithfulness")(encoder=str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="nowhere"):
        scorer.score_steps(janet, ["    x = 16\n"])
    with pytest.raises(ConfigError, match="encoder"):
        host.get("step_scorer", "faithfulness")(encoder=" ")
    with pytest.raises(ConfigError, match="pooling"):
        host.get("step_scorer", "faithfulness")(pooling="max")


# ------------------------------------------------------------------------------- beam search


class ProgramScript(Backend):
    """Two candidate first statements; each beam is then continued by `return`; scripted log-likelihoods."""

    name = "program-script"

    def __init__(self, prompt: str, firsts: list[str], logprobs: dict[str, float]):
        super().__init__("program-script")
        self.prompt, self.firsts, self.logprobs = prompt, firsts, logprobs

    def generate(self, prompts, params: SamplingParams, progress: bool = True):
        out = []
        for p in prompts:
            written = p[len(self.prompt) :]
            lines = self.firsts if not written else ["    return x"]
            out.append([Generation(lines[j % len(lines)], 4, "stop") for j in range(params.n)])
        return out

    def loglikelihood(self, pairs):
        return [sum(v for k, v in self.logprobs.items() if k in text) - 0.5 * text.count("\n") for _, text in pairs]


PAPER = BeamSettings(beam_width=2, expand=2, max_steps=4, aggregate="logsum", logprob_weight=1.0, logprob_reduce="sum", length_penalty=1.0)


def test_beam_search_with_the_papers_score_prefers_the_faithful_line(lexical, janet):
    prompt = f"Q: {janet.question}\n\n# solution in Python:\n\n\ndef solution():\n"
    faithful, unfaithful = "    x = 16 * 2", "    x = 7 * 11"
    backend = ProgramScript(prompt, [unfaithful, faithful], {})
    [result] = beam_search(backend, [prompt], lexical, PAPER, examples=[janet])
    assert result.best.text == f"{faithful}\n    return x\n" and result.best.finish == "return"
    # the value is (sum of token log-probs + sum of log step scores) / tokens
    best = result.best
    expected = (best.logprob + sum(math.log(s) for s in best.scores)) / best.tokens
    assert best.value(PAPER) == pytest.approx(expected) and best.logprob == pytest.approx(-1.0)
    # the student's own probabilities still count: a much less likely faithful line loses
    backend = ProgramScript(prompt, [unfaithful, faithful], {"16 * 2": -5.0})
    [result] = beam_search(backend, [prompt], lexical, PAPER, examples=[janet])
    assert result.best.text.startswith(unfaithful)


def test_logsum_and_the_new_settings_keep_their_contracts():
    assert aggregate([0.5, 0.25], "logsum") == pytest.approx(math.log(0.125))
    assert aggregate([0.0], "logsum") == pytest.approx(math.log(1e-6))  # a failed exec step costs, finitely
    assert PAPER.monotone is False and BeamSettings(aggregate="logsum", logprob_weight=1, logprob_reduce="sum").monotone
    assert not BeamSettings(aggregate="logsum", logprob_weight=1).monotone  # a mean log-prob can rise
    with pytest.raises(ConfigError, match="logprob-reduce"):
        BeamSettings(logprob_reduce="max")
    with pytest.raises(ConfigError, match="length penalty"):
        BeamSettings(length_penalty=-1)
    with pytest.raises(ConfigError, match="aggregate"):
        BeamSettings(aggregate="mean")


def test_pad_checks_its_beam_score_options_before_training(host):
    config = host.get("method", "pad").Config
    assert (config().step_scorer, config().beam_aggregate, config().beam_logprob_weight) == ("faithfulness", "logsum", 1.0)
    with pytest.raises(ConfigError, match="aggregate"):
        config(beam_aggregate="mean")
    with pytest.raises(ConfigError, match="logprob weight"):
        config(beam_logprob_weight=-1.0)
