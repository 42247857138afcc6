"""Best-of-N reranking and the weighted majority vote: the arithmetic, the lm-eval bridge and `cotkit eval --rerank`."""

from __future__ import annotations

import json

import pytest

from cotkit.errors import CotkitError
from cotkit.harness.stepsearch import aggregate, best_of_n, score_solutions, weighted_vote
from cotkit.lmeval import bridge


def test_aggregate_min_prod_last():
    scores = [1.0, 0.5, 0.8]
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "prod") == pytest.approx(0.4)
    assert aggregate(scores, "last") == 0.8
    assert aggregate([], "min") == 0.0
    with pytest.raises(CotkitError, match="aggregation 'mean'"):
        aggregate(scores, "mean")


def test_best_of_n_picks_the_highest_score_first_on_ties():
    assert best_of_n([0.2, 0.9, 0.5]) == 1
    assert best_of_n([0.5, 0.9, 0.9]) == 1
    assert best_of_n([]) is None


def test_weighted_vote_arithmetic():
    # plain majority says "7" (3 votes); weighted, "18" has 0.9 against 3 x 0.2 = 0.6
    answers = ["7", "18", "7", "7"]
    assert weighted_vote(answers, [0.2, 0.9, 0.2, 0.2]) == 1
    # weights add up: two 0.5 votes (1.0) beat one 0.9
    assert weighted_vote(["7", "18", "7"], [0.5, 0.9, 0.5]) == 0
    # samples without an answer do not vote; an equal weight goes to the answer with more votes, then the first seen
    assert weighted_vote([None, "3", "4"], [1.0, 0.1, 0.1]) == 1
    assert weighted_vote(["3", "4", "4"], [0.5, 0.25, 0.25]) == 1
    # all weights zero: a plain majority
    assert weighted_vote(["3", "4", "4"], [0.0, 0.0, 0.0]) == 1
    assert weighted_vote([None, None], [1.0, 1.0]) is None
    with pytest.raises(ValueError):
        weighted_vote(["1"], [])


def test_reranking_picks_the_higher_scored_sample(host):
    arith = host.get("step_scorer", "arith")()
    samples = [
        "She sells 16 - 3 - 4 = 8 eggs. She makes 8 * 2 = 16 dollars. The answer is 16.",
        "She sells 16 - 3 - 4 = 9 eggs. She makes 9 * 2 = 18 dollars. The answer is 18.",
        "She sells 16 - 7 = 9 eggs. She makes 9 * 2 = 19 dollars. The answer is 19.",
    ]
    for how, expected in (("min", [0.0, 1.0, 0.0]), ("prod", [0.0, 1.0, 0.0]), ("last", [1.0, 1.0, 1.0])):
        scored = score_solutions(arith, None, samples, how)
        assert [s.score for s in scored] == expected
        assert scored[1].step_scores == [1.0, 1.0, 1.0] and "".join(scored[1].steps) == samples[1]
    assert [s.score for s in score_solutions(arith.__class__(neutral=0.5), None, samples, "prod")] == [0.0, 0.5, 0.0]
    assert best_of_n([s.score for s in score_solutions(arith, None, samples, "min")]) == 1


def test_process_results_reranks_with_the_docs_step_scorer(data_dir):
    """Real GSM8K question; a wrong answer has the majority, the arithmetic-checked one wins best-of-N and the weighted vote."""
    docs = bridge.build_docs("gsm8k", cotkit_data_dir=str(data_dir), cotkit_limit=1, cotkit_rerank="arith")
    doc = docs[0]
    assert doc["target"] == "18" and doc["cotkit_rerank"] == "arith" and doc["cotkit_aggregate"] == "min"
    completions = [
        "She eats 3 and bakes 4, so 16 - 3 - 4 = 10 are left. 10 * 2 = 20. The answer is 20.",
        "She sells 16 - 3 - 4 = 9 eggs at $2, so 9 * 2 = $18. The answer is 18.",
        "16 - 3 = 13, 13 - 4 = 10 eggs, 10 * $2 = $22. The answer is 20.",
        "She makes 16 * 2 = $30. The answer is 20.",
    ]
    bridge.RECORDS.clear()
    try:
        res = bridge.process_results(doc, [completions])
        record = bridge.RECORDS["gsm8k"][0]
    finally:
        bridge.close_all()
    assert res == {"acc": 0.25, "maj": 0.0, "unparseable": 0.0}
    assert record["majority"] == 0 and record["best_of_n"] == 1 and record["weighted_vote"] == 1
    rows = record["completions"]
    assert [r["solution_score"] for r in rows] == [0.0, 1.0, 0.0, 0.0]
    assert rows[1]["steps"][0].startswith("She sells 16 - 3 - 4 = 9 eggs") and rows[1]["step_scores"] == [1.0, 1.0]


@pytest.fixture
def tiny_eval(cli, tiny_model, data_dir, tmp_path):
    def run(*args: str):
        out = tmp_path / "out"
        res = cli("--data-dir", data_dir, "eval", "--model", tiny_model, "--max-new-tokens", "16",
                  "--output-dir", out, "--json", *args)  # fmt: skip
        assert res.exit_code == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1]), out

    return run


def test_eval_rerank_through_the_cli(tiny_eval):
    summary, out = tiny_eval("--task", "gsm8k", "--limit", "2", "--n", "3", "--rerank", "arith", "--aggregate", "prod")
    rerank = summary["rerank"]
    assert rerank["step_scorer"] == "arith" and rerank["aggregate"] == "prod"
    assert 0.0 <= rerank["best_of_n"] <= 1.0 and 0.0 <= rerank["weighted_vote"] <= 1.0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert "".join(row["steps"]) == row["completion"] and len(row["step_scores"]) == len(row["steps"])
        assert row["solution_score"] == pytest.approx(aggregate(row["step_scores"], "prod"), abs=1e-6)
    for qid in {r["id"] for r in rows}:
        mine = [r for r in rows if r["id"] == qid]
        assert sum(r["best_of_n"] for r in mine) == 1
        best = next(r for r in mine if r["best_of_n"])
        assert best["solution_score"] == max(r["solution_score"] for r in mine)
    picked = sum(next(r for r in rows if r["id"] == q and r["best_of_n"])["correct"] for q in {r["id"] for r in rows})
    assert rerank["best_of_n"] == picked / 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rerank", "arith"), "--n 2 or more"),
        (("--n", "2", "--rerank", "aritm"), "unknown step scorer 'aritm'"),
        (("--n", "2", "--rerank", "arith", "--aggregate", "mean"), "--aggregate 'mean'"),
        (("--n", "2", "--rerank", "arith", "--scorer-option", "nuetral=1"), "no option 'nuetral'"),
        (("--search", "beam"), "--step-scorer"),
        (("--search", "greedy", "--step-scorer", "arith"), "--search 'greedy'"),
        (("--step-scorer", "exec"), "--search beam"),
        (("--search", "beam", "--step-scorer", "exec", "--n", "5"), "--beam-width 4"),
    ],
)
def test_eval_rerank_and_search_option_errors(cli, data_dir, args, message):
    res = cli("--data-dir", data_dir, "eval", "--task", "gsm8k", "--model", "/no/such/model", "--limit", "1", *args)
    assert res.exit_code == 2 and message in res.stderr and "Traceback" not in res.stderr
