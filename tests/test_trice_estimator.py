"""TRICE's estimator on hand-built batches: the invariants of METHODS.md, and the subsampling's mean."""

from __future__ import annotations

import json
import math
import random

import pytest

from cotkit import DataError
from plugins.methods.trice_estimator import (
    MEMORY,
    PROPOSAL,
    Proposal,
    TriceMemory,
    control_variate_weights,
    rejection_sampling_terms,
    step_terms,
    strict_format_correct,
    systematic_resample,
)

# A batch of 8: c = proposal correct, m = memory correct after acceptance (c implies m).
C = [1, 1, 0, 0, 0, 1, 0, 0]
M = [1, 1, 1, 1, 0, 1, 0, 1]


def _memory(correct: list[int]) -> TriceMemory:
    return TriceMemory.initialize(Proposal(f"q{i}", f"init {i}", bool(c)) for i, c in enumerate(correct))


def _proposals(correct: list[int]) -> list[Proposal]:
    return [Proposal(f"q{i}", f"proposal {i}", bool(c)) for i, c in enumerate(correct)]


def _leave_one_out(c: list[int], m: list[int]) -> list[float]:
    return [(sum(c) - ci) / (sum(m) - 1) for ci in c]


def test_weights_follow_the_formula_and_per_question_differ_by_m_times_one_minus_b():
    memory_w, proposal_w = control_variate_weights(C, M)
    b = _leave_one_out(C, M)
    for i in range(len(C)):
        assert memory_w[i] == pytest.approx(M[i] * (1 - b[i] * C[i]))
        assert proposal_w[i] == pytest.approx(-M[i] * b[i] * (1 - C[i]))
        assert abs(memory_w[i]) - abs(proposal_w[i]) == pytest.approx(M[i] * (1 - b[i]))


def test_all_proposals_correct_give_zero_gradient():
    memory_w, proposal_w = control_variate_weights([1] * 6, [1] * 6)
    assert memory_w == [0.0] * 6 and proposal_w == [0.0] * 6
    terms, metrics = step_terms(_memory([0] * 6), _proposals([1] * 6), step=1, subsample=8, rng=random.Random(0))
    assert terms == [] and metrics["nonzero_weights"] == 0 and metrics["sum_squared_weights"] == 0


def test_no_proposal_correct_is_plain_sft_on_the_correct_memories():
    memory = _memory([1, 0, 1, 1])
    terms, metrics = step_terms(memory, _proposals([0, 0, 0, 0]), step=1, subsample=None, rng=random.Random(0))
    assert [(t.text, t.weight, t.kind) for t in terms] == [("init 0", 1.0, MEMORY), ("init 2", 1.0, MEMORY), ("init 3", 1.0, MEMORY)]
    assert metrics["proposal_accuracy"] == 0 and metrics["accepted"] == 0


def test_without_control_variate_only_correct_memories_weigh_one():
    memory_w, proposal_w = control_variate_weights(C, M, use_control_variate=False)
    assert memory_w == [float(m) for m in M] and proposal_w == [0.0] * len(C)


def test_uncovered_question_gets_zero_weights_even_with_a_large_leave_one_out():
    # Question 1 is uncovered while the only covered question's proposal is correct: its b would be 1/0.
    memory_w, proposal_w = control_variate_weights([1, 0], [1, 0])
    assert memory_w[1] == 0.0 and proposal_w[1] == 0.0
    memory_w, proposal_w = control_variate_weights(C, M)
    assert all(memory_w[i] == proposal_w[i] == 0.0 for i in range(len(M)) if not M[i])


def test_single_correct_rationale_gives_no_nan():
    for c, m in (([0, 0, 0], [1, 0, 0]), ([1, 0, 0], [1, 0, 0]), ([0, 0, 0], [0, 0, 0])):
        memory_w, proposal_w = control_variate_weights(c, m)
        assert all(math.isfinite(w) for w in memory_w + proposal_w)
    terms, _ = step_terms(_memory([0, 0, 0]), _proposals([1, 0, 0]), step=1, subsample=4, rng=random.Random(0))
    assert [(t.text, t.weight) for t in terms] == [("proposal 0", 1.0)] * 4


def test_a_correct_proposal_must_be_in_memory():
    with pytest.raises(ValueError, match="m_i = 1"):
        control_variate_weights([1, 0], [0, 1])


def test_memory_accepts_only_correct_proposals_and_coverage_never_decreases():
    rng = random.Random(7)
    memory = _memory([rng.random() < 0.2 for _ in range(30)])
    coverage = [memory.coverage()]
    for step in range(1, 41):
        batch = rng.sample(range(30), 8)
        proposals = [Proposal(f"q{i}", f"step {step} q{i}", rng.random() < 0.3) for i in batch]
        before = {p.question_id: memory[p.question_id] for p in proposals}
        step_terms(memory, proposals, step=step, subsample=8, rng=rng)
        for p in proposals:
            after = memory[p.question_id]
            assert (after.text, after.correct, after.step) == ((p.text, True, step) if p.correct else (before[p.question_id].text, before[p.question_id].correct, before[p.question_id].step))
        coverage.append(memory.coverage())
    assert coverage == sorted(coverage) and coverage[-1] > coverage[0]
    assert set(memory.uncovered()) == {f"q{i}" for i in range(30) if not memory[f"q{i}"].correct}


def test_memory_terms_carry_the_updated_memory_and_metrics_count_the_batch():
    memory = _memory([1, 0, 1, 0])
    terms, metrics = step_terms(memory, _proposals([1, 0, 0, 1]), step=3, subsample=None, rng=random.Random(0))
    texts = {(t.kind, t.question_id): t.text for t in terms}
    assert texts[(MEMORY, "q0")] == "proposal 0" and texts[(MEMORY, "q2")] == "init 2" and texts[(PROPOSAL, "q2")] == "proposal 2"
    memory_w, proposal_w = control_variate_weights([1, 0, 0, 1], [1, 0, 1, 1])
    assert metrics == {
        "memory_coverage": 0.75,
        "batch_coverage": 0.75,
        "proposal_accuracy": 0.5,
        "accepted": 2.0,
        "nonzero_weights": float(sum(w != 0 for w in memory_w + proposal_w)),
        "sum_squared_weights": pytest.approx(sum(w * w for w in memory_w + proposal_w)),
        "terms": float(len(terms)),
    }


def _gradients(n: int, dim: int = 4, seed: int = 3) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0, 1) for _ in range(dim)] for _ in range(n)]


def _full_estimator(weights: list[float], grads: list[list[float]], normalizer: float) -> list[float]:
    return [sum(w * g[d] for w, g in zip(weights, grads)) / normalizer for d in range(len(grads[0]))]


def _mean_subsampled(weights, grads, size, draws, rng, normalizer):
    """The mean over `draws` of the mean over the L drawn terms of weight * gradient, and each term's draw count."""
    total, counts = [0.0] * len(grads[0]), [0] * len(weights)
    for _ in range(draws):
        indices, signed = systematic_resample(weights, size, rng, normalizer)
        for i, w in zip(indices, signed):
            counts[i] += 1
            for d in range(len(total)):
                total[d] += w * grads[i][d] / size
    return [t / draws for t in total], counts


def test_resampled_frequencies_follow_abs_weights_and_the_mean_gradient_is_the_full_estimator():
    memory_w, proposal_w = control_variate_weights(C, M)
    weights = memory_w + proposal_w
    grads = _gradients(len(weights))
    size, draws, big_m = 8, 20_000, sum(M)
    mean, counts = _mean_subsampled(weights, grads, size, draws, random.Random(0), big_m)
    total = sum(abs(w) for w in weights)
    for w, n in zip(weights, counts):
        assert n / (size * draws) == pytest.approx(abs(w) / total, abs=0.005)
        if w == 0:
            assert n == 0
    assert mean == pytest.approx(_full_estimator(weights, grads, big_m), abs=0.01)


def _notebook_resample(weights, size, rng):
    """The notebook's draw: systematic resampling of log_softmax(w), i.e. in proportion to exp(w)."""
    indices, _ = systematic_resample([math.exp(w) for w in weights], size, rng)
    return indices


def test_notebooks_exp_weight_sampling_draws_zero_weight_terms_and_is_biased():
    memory_w, proposal_w = control_variate_weights(C, M)
    weights = memory_w + proposal_w
    size, draws, big_m = 8, 20_000, sum(M)
    magnitude = sum(abs(w) for w in weights) / big_m
    signs = [float(m) for m in M] + [-float(m) for m in M]  # the notebook signs by the mask: [m, -m]
    counts, rng = [0] * len(weights), random.Random(1)
    for _ in range(draws):
        for i in _notebook_resample(weights, size, rng):
            counts[i] += 1
    zero_share = sum(n for w, n in zip(weights, counts) if w == 0) / (size * draws)
    assert zero_share > 0.2  # masked questions and correct proposals take over a fifth of the slots
    # The expected coefficient of each term's gradient: the notebook's vs the estimator's w_k / M.
    notebook = [n / (size * draws) * s * magnitude for n, s in zip(counts, signs)]
    exact = [w / big_m for w in weights]
    correct_proposal = len(C) + C.index(1)  # weight 0, yet the notebook pushes its likelihood down
    assert exact[correct_proposal] == 0 and notebook[correct_proposal] < -0.02
    assert max(abs(a - b) for a, b in zip(notebook, exact)) > 0.05
    _, ours = _mean_subsampled(weights, _gradients(len(weights)), size, draws, random.Random(1), big_m)
    assert sum(n for w, n in zip(weights, ours) if w == 0) == 0


def test_data_parallel_totals_reproduce_the_single_process_weights_and_mean():
    memory_w, proposal_w = control_variate_weights(C, M)
    halves = [slice(0, 4), slice(4, 8)]
    for part in halves:
        mw, pw = control_variate_weights(C[part], M[part], total_correct=sum(C), total_covered=sum(M))
        assert mw == pytest.approx(memory_w[part]) and pw == pytest.approx(proposal_w[part])
    # Each process draws L of its own terms; the engine averages the processes' gradients.
    grads = _gradients(16)
    size, draws = 8, 5_000
    process_means = []
    for p, part in enumerate(halves):
        mw, pw = control_variate_weights(C[part], M[part], total_correct=sum(C), total_covered=sum(M))
        local = list(range(16))[part] + list(range(8, 16))[part]
        mean, _ = _mean_subsampled(mw + pw, [grads[i] for i in local], size, draws, random.Random(p), sum(M) / 2)
        process_means.append(mean)
    averaged = [(a + b) / 2 for a, b in zip(*process_means)]
    assert averaged == pytest.approx(_full_estimator(memory_w + proposal_w, grads, sum(M)), abs=0.01)


def test_step_terms_pass_data_parallel_totals_and_process_count():
    memory = _memory(M[:4])
    terms, _ = step_terms(memory, _proposals(C[:4]), step=1, subsample=None, rng=random.Random(0), total_correct=sum(C), total_covered=sum(M), processes=2)
    memory_w, proposal_w = control_variate_weights(C, M)
    full = [w for w in memory_w[:4] + proposal_w[:4] if w != 0]
    assert [t.weight for t in terms] == pytest.approx([w * len(full) / (sum(M) / 2) for w in full])


def test_same_seed_draws_the_same_terms():
    def draw(seed):
        memory = _memory([1, 0, 1, 0, 1])
        terms, _ = step_terms(memory, _proposals([1, 1, 0, 0, 0]), step=1, subsample=6, rng=random.Random(seed))
        return terms

    assert draw(5) == draw(5)
    assert len(draw(5)) == 6


def test_systematic_resample_accepts_a_numpy_generator():
    np = pytest.importorskip("numpy")
    a = systematic_resample([0.5, -0.25, 0.0, 1.0], 5, np.random.default_rng(3), normalizer=2.0)
    b = systematic_resample([0.5, -0.25, 0.0, 1.0], 5, np.random.default_rng(3), normalizer=2.0)
    assert a == b and 2 not in a[0] and {abs(w) for w in a[1]} == {0.875}


def test_memory_rows_round_trip_exactly_through_jsonl(tmp_path):
    memory = _memory([1, 0, 1])
    memory.update([Proposal("q1", "the answer is 4.", True)], step=7)
    path = tmp_path / "memory.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in memory.to_rows()))
    restored = TriceMemory.from_rows(json.loads(line) for line in path.read_text().splitlines())
    assert restored.to_rows() == memory.to_rows() and restored.coverage() == 1.0 and restored["q1"].step == 7


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"question_id": "q0", "text": "t", "correct": "yes", "step": 0}], "memory.jsonl row 1: 'correct' must be a bool"),
        ([{"question_id": "q0", "text": "t", "correct": True, "step": 0}, {"question_id": "q0", "text": "u", "correct": False, "step": 0}], "row 2: question 'q0' appears twice"),
        ([{"question_id": "q0", "text": "t", "correct": True, "step": -1}], "row 1: 'step' must be >= 0"),
        ([["q0"]], "row 1: expected an object"),
    ],
)
def test_malformed_memory_rows_name_the_row(rows, message):
    with pytest.raises(DataError, match=message):
        TriceMemory.from_rows(rows)


def test_strict_format_check_is_the_notebooks():
    assert strict_format_correct("A is left of B. So the answer is (A).", "(A)")
    assert strict_format_correct("So the answer is 42.\n", "42")
    assert not strict_format_correct("So the answer is 42. Done.", "42")
    assert not strict_format_correct("So The Answer Is 42.", "42")
    assert not strict_format_correct("So the answer is 421.", "21")


def test_rejection_sampling_averages_correct_samples_per_question():
    proposals = [
        Proposal("a", "a1", True), Proposal("a", "a2", True), Proposal("a", "a3", True), Proposal("a", "a4", False),
        Proposal("b", "b1", False), Proposal("b", "b2", True), Proposal("b", "b3", False), Proposal("b", "b4", False),
        Proposal("c", "c1", False), Proposal("c", "c2", False), Proposal("c", "c3", False), Proposal("c", "c4", False),
    ]  # fmt: skip
    terms = rejection_sampling_terms(proposals)
    assert [t.text for t in terms] == ["a1", "a2", "a3", "b2"]
    # mean over terms of weight * x = (1/Q) sum_q mean of q's correct x
    x = {"a1": 1.0, "a2": 2.0, "a3": 6.0, "b2": 10.0}
    assert sum(t.weight * x[t.text] for t in terms) / len(terms) == pytest.approx((3.0 + 10.0) / 2)
    equal = rejection_sampling_terms([Proposal("a", "a1", True), Proposal("b", "b1", True), Proposal("b", "b2", False)])
    assert [t.weight for t in equal] == [1.0, 1.0]
    assert rejection_sampling_terms([Proposal("a", "a1", False)]) == []
