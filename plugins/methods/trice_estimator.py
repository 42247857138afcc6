"""TRICE's gradient estimator: the memory, the control-variate weights and the subsampling.

TRICE (Phan, Hoffman et al. 2023, "Training Chain-of-Thought via Latent-Variable Inference",
arXiv 2312.02179) maximises the marginal log-likelihood of the correct answer by MCMC-EM: a
persistent memory holds one rationale per training question; each step proposes one rationale per
minibatch question from the current model (un-hinted prompt, T=1), a correct proposal replaces the
memory entry (an independence-sampler step), and the gradient combines memory and proposals with a
leave-one-out control variate. This module is that arithmetic alone, with no model and no engine, so
every invariant is checked on hand-built batches (`tests/test_trice_estimator.py`).

The estimator, for a minibatch of B questions (c_i = 1 if proposal i is correct, m_i = 1 if
question i's memory is correct *after* this step's acceptances, C = Σ c, M = Σ m):

    b_i = (C − c_i) / (M − 1)                        (leave-one-out; 0 when M − 1 = 0, see below)
    memory weight    u_i = m_i (1 − b_i c_i)
    proposal weight  v_i = −m_i b_i (1 − c_i)
    G = (1 / M) Σ_i [ u_i ∇log p(memory_i) + v_i ∇log p(proposal_i) ]

both scored with the un-hinted prompt; `b ≡ 0` is the paper's "TRICE without control variate"
(plain SFT on the correct memories). Subsampling keeps L of the 2B terms: systematic resampling in
proportion to |w|, each drawn term weighted sign(w_k) · Σ|w| / M. Term k is drawn L·|w_k|/Σ|w|
times in expectation, so the mean over the L drawn terms of weight · ∇log p is, in expectation,
Σ_k (|w_k| / Σ|w|) · sign(w_k) (Σ|w| / M) ∇_k = (1/M) Σ_k w_k ∇_k = G: unbiased.

Contract with the engine: the returned `Term`s are the step's training sequences and the loss is
the *mean over terms* of weight × NLL(text | un-hinted prompt), i.e. `WeightedSFT(normalization=
"sequences")`; a negative weight pushes that rationale's likelihood down. An empty term list is a
zero gradient (e.g. every proposal correct, or no correct rationale in the batch).

Where this follows the reference notebook (google-research/cascades, examples/notebooks/trice.ipynb)
and where it departs:
- Same weights, same acceptance rule (a correct proposal always replaces the memory), same
  normaliser M, memory terms use the updated memory, strict correctness check
  (`strict_format_correct`).
- Sampling in proportion to |w|, not exp(w): the notebook passes `log_softmax(w)` to TFP's
  `resample_systematic`, which samples in proportion to exp(w), so zero-weight terms are drawn
  (31% of the slots in the test's batch of 8, a fifth to a half in typical batches): a masked
  question's slot is wasted (sign 0), and a correct proposal is pushed down with the full magnitude
  Σw/M (sign −1) although its weight is 0, so the notebook's estimator is biased. Here a
  zero-weight term is never drawn.
- The 1e-10 guard: the notebook adds 1e-10 to the denominator M − 1, so b is a hair under 1 and an
  all-correct batch keeps weights of about 1e-10; here the guard only replaces a zero denominator
  (M = 1, where the numerator is 0 for the one covered question), so an all-correct batch gives
  exactly zero weights and no NaN arises.
- The notebook also clips weights to ≥ 1e-10 and signs them with the mask, only to keep the
  exp(w) sampling from drawing masked terms with a nonzero sign; with |w| sampling neither is needed.

Across data-parallel processes the leave-one-out sums and M are over the global batch: pass the
all-reduced C and M as `total_correct` / `total_covered`, and `processes` = the number of processes,
because the engine averages gradients over processes (each process then weights its draws by
sign · Σ|w|_local · processes / M, and the mean over all processes' draws is unbiased for G).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cotkit import DataError

#: The two kinds of TRICE term, and the rejection-sampling baseline's one.
MEMORY, PROPOSAL, SAMPLE = "memory", "proposal", "sample"

#: Replaces a zero leave-one-out denominator (the notebook's guard, used only where it is needed).
DENOMINATOR_GUARD = 1e-10


class UniformSource(Protocol):
    """Anything with `random()` in [0, 1): `random.Random` or a numpy `Generator`."""

    def random(self) -> float: ...


@dataclass(frozen=True)
class Proposal:
    """One sampled rationale for a question and the verifier's verdict on it."""

    question_id: str
    text: str
    correct: bool


@dataclass(frozen=True)
class MemoryEntry:
    """A question's rationale in memory; `step` is the step it was accepted (0 = initialization)."""

    question_id: str
    text: str
    correct: bool
    step: int


@dataclass(frozen=True)
class Term:
    """One training sequence of a step: `text` after the question's un-hinted prompt, scaled by `weight`."""

    question_id: str
    text: str
    weight: float
    kind: str


class TriceMemory:
    """One rationale per training question; a correct proposal replaces it, a wrong one never does.

    Wrong initial samples are kept (marked incorrect, so `m_i = 0`) to stay inspectable in the run
    directory; coverage (the fraction with a correct rationale) can only grow.
    """

    def __init__(self, entries: Iterable[MemoryEntry]):
        self._entries: dict[str, MemoryEntry] = {}
        for entry in entries:
            if entry.question_id in self._entries:
                raise ValueError(f"two memory entries for question {entry.question_id!r}")
            self._entries[entry.question_id] = entry

    @classmethod
    def initialize(cls, samples: Iterable[Proposal]) -> TriceMemory:
        """The memory at step 0 from one guide-prompt sample per question, right or wrong."""
        return cls(MemoryEntry(s.question_id, s.text, s.correct, 0) for s in samples)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, question_id: str) -> MemoryEntry:
        return self._entries[question_id]

    def update(self, proposals: Iterable[Proposal], step: int) -> int:
        """Accept every correct proposal into memory (the MCMC step); returns how many were accepted."""
        accepted = 0
        for p in proposals:
            if p.question_id not in self._entries:
                raise KeyError(f"proposal for question {p.question_id!r}, which has no memory entry")
            if p.correct:
                self._entries[p.question_id] = MemoryEntry(p.question_id, p.text, True, step)
                accepted += 1
        return accepted

    def absorb(self, entries: Iterable[MemoryEntry]) -> None:
        """Take `entries` as they are (another data-parallel process's updated questions): every process keeps the whole memory."""
        for entry in entries:
            if entry.question_id not in self._entries:
                raise KeyError(f"memory entry for question {entry.question_id!r}, which this memory does not hold")
            self._entries[entry.question_id] = entry

    def coverage(self) -> float:
        """Fraction of questions whose memory holds a correct rationale."""
        return sum(e.correct for e in self._entries.values()) / len(self._entries) if self._entries else 0.0

    def uncovered(self) -> list[str]:
        """Question ids without a correct rationale (what a retry-until-correct initialization resamples)."""
        return [q for q, e in self._entries.items() if not e.correct]

    def to_rows(self) -> list[dict[str, Any]]:
        """JSON-ready rows, one per question, in insertion order (`from_rows` restores them exactly)."""
        return [{"question_id": e.question_id, "text": e.text, "correct": e.correct, "step": e.step} for e in self._entries.values()]

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]], source: str = "memory.jsonl") -> TriceMemory:
        """The memory `to_rows` wrote; a malformed row raises `DataError` naming `source` and the row."""
        entries = []
        for n, row in enumerate(rows, 1):
            entries.append(_entry_from_row(row, f"{source} row {n}"))
        seen: set[str] = set()
        for n, entry in enumerate(entries, 1):
            if entry.question_id in seen:
                raise DataError(f"{source} row {n}: question {entry.question_id!r} appears twice")
            seen.add(entry.question_id)
        return cls(entries)


def _entry_from_row(row: Any, where: str) -> MemoryEntry:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}")
    expected = {"question_id": str, "text": str, "correct": bool, "step": int}
    for key, kind in expected.items():
        value = row.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DataError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    if row["step"] < 0:
        raise DataError(f"{where}: 'step' must be >= 0, got {row['step']}")
    return MemoryEntry(row["question_id"], row["text"], row["correct"], row["step"])


def strict_format_correct(text: str, answer: str) -> bool:
    """The notebook's check: the rationale ends with `the answer is {answer}.` (trailing whitespace ignored)."""
    return text.rstrip().endswith(f"the answer is {answer}.")


def control_variate_weights(
    correct: Sequence[bool],
    covered: Sequence[bool],
    use_control_variate: bool = True,
    total_correct: float | None = None,
    total_covered: float | None = None,
) -> tuple[list[float], list[float]]:
    """Memory and proposal weights `(m_i (1 − b_i c_i), −m_i b_i (1 − c_i))` for one minibatch.

    `correct` is c (proposal i correct), `covered` is m (memory i correct after acceptance). The
    leave-one-out `b_i = (C − c_i) / (M − 1)` uses the minibatch's sums unless the all-reduced
    `total_correct` (C) and `total_covered` (M) over data-parallel processes are given.
    `use_control_variate=False` is b ≡ 0.
    """
    if len(correct) != len(covered):
        raise ValueError(f"{len(correct)} proposal verdicts for {len(covered)} memory entries")
    if any(c and not m for c, m in zip(correct, covered)):
        raise ValueError("a correct proposal must have been accepted into memory (c_i = 1 needs m_i = 1)")
    big_c = float(sum(correct)) if total_correct is None else float(total_correct)
    big_m = float(sum(covered)) if total_covered is None else float(total_covered)
    memory_w, proposal_w = [], []
    for c, m in zip(correct, covered):
        if not m:
            memory_w.append(0.0)
            proposal_w.append(0.0)
            continue
        b = _leave_one_out(big_c, big_m, float(c)) if use_control_variate else 0.0
        memory_w.append(1.0 - b * c)
        proposal_w.append(-b * (1.0 - c))
    return memory_w, proposal_w


def _leave_one_out(big_c: float, big_m: float, c: float) -> float:
    """The other questions' proposal accuracy among covered ones: (C − c_i) / (M − 1)."""
    denominator = big_m - 1.0
    return (big_c - c) / (denominator if denominator > 0 else DENOMINATOR_GUARD)


def systematic_resample(
    weights: Sequence[float], size: int, rng: UniformSource, normalizer: float = 1.0
) -> tuple[list[int], list[float]]:
    """Draw `size` indices in proportion to |w| by systematic resampling; each gets sign(w)·Σ|w|/normalizer.

    One uniform u from `rng` places the points (u + l) / size, l = 0..size−1, on the cumulative
    |w|/Σ|w|; index k is drawn ⌊size·p_k⌋ or ⌈size·p_k⌉ times (p_k = |w_k|/Σ|w|), size·p_k in
    expectation, and a zero weight never. So E[mean of drawn weight·x_k] = Σ_k w_k x_k / normalizer.
    All weights zero (or size 0) draws nothing. The same `rng` state draws the same indices.
    """
    if size < 0:
        raise ValueError(f"subsample size must be >= 0, got {size}")
    if normalizer <= 0:
        raise ValueError(f"normalizer must be > 0, got {normalizer}")
    magnitudes = [abs(w) for w in weights]
    total = sum(magnitudes)
    if size == 0 or total == 0:
        return [], []
    u = rng.random()
    cumulative, indices, k, running = [], [], 0, 0.0
    for m in magnitudes:
        running += m
        cumulative.append(running)
    last_nonzero = max(i for i, m in enumerate(magnitudes) if m > 0)
    for slot in range(size):
        point = (u + slot) / size * total
        while k < last_nonzero and cumulative[k] <= point:
            k += 1
        indices.append(k)
    magnitude = total / normalizer
    return indices, [magnitude if weights[i] > 0 else -magnitude for i in indices]


def step_terms(
    memory: TriceMemory,
    proposals: Sequence[Proposal],
    step: int,
    subsample: int | None,
    rng: UniformSource,
    use_control_variate: bool = True,
    total_correct: float | None = None,
    total_covered: float | None = None,
    processes: int = 1,
) -> tuple[list[Term], dict[str, float]]:
    """One TRICE step on a minibatch: accept correct proposals into `memory`, weight, subsample.

    `proposals` holds one proposal per minibatch question (distinct questions). Returns the training
    terms (memory terms carry the updated memory's text) and the step's metrics: `memory_coverage`
    (whole memory, after acceptance), `batch_coverage` (M/B, the notebook's memory_acc),
    `proposal_accuracy` (C/B), `accepted`, `nonzero_weights` (of the 2B), `sum_squared_weights`
    (Σ u_i² + v_i², before subsampling: the variance proxy) and `terms`.
    `subsample=None` keeps every nonzero term with its exact weight (w_k · n / M for n kept terms,
    so the mean over terms is G without sampling noise; exact on one process, since processes keep
    different numbers of terms: under data parallelism give every process the same `subsample`).
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    ids = [p.question_id for p in proposals]
    if len(set(ids)) != len(ids):
        raise ValueError("step_terms takes one proposal per question")
    accepted = memory.update(proposals, step)
    entries = [memory[q] for q in ids]
    correct = [p.correct for p in proposals]
    covered = [e.correct for e in entries]
    memory_w, proposal_w = control_variate_weights(correct, covered, use_control_variate, total_correct, total_covered)
    candidates = [Term(e.question_id, e.text, w, MEMORY) for e, w in zip(entries, memory_w)]
    candidates += [Term(p.question_id, p.text, w, PROPOSAL) for p, w in zip(proposals, proposal_w)]
    big_m = float(sum(covered)) if total_covered is None else float(total_covered)
    normalizer = big_m / processes if big_m > 0 else 1.0
    terms = _weighted_terms(candidates, subsample, rng, normalizer)
    weights = memory_w + proposal_w
    n = len(proposals)
    metrics = {
        "memory_coverage": memory.coverage(),
        "batch_coverage": sum(covered) / n if n else 0.0,
        "proposal_accuracy": sum(correct) / n if n else 0.0,
        "accepted": float(accepted),
        "nonzero_weights": float(sum(w != 0 for w in weights)),
        "sum_squared_weights": sum(w * w for w in weights),
        "terms": float(len(terms)),
    }
    return terms, metrics


def exact_weights_across_processes(terms: list[Term], total_terms: float, processes: int) -> list[Term]:
    """`step_terms(subsample=None)` terms made exact under data parallelism.

    Each process weighs its n_p kept terms by w · n_p · processes / M; the engine's mean runs over
    the N = Σ n_p terms of all processes, so the exact weight is w · N / M: scale by N / (n_p · processes).
    """
    if not terms:
        return terms
    scale = total_terms / (len(terms) * processes)
    return [Term(t.question_id, t.text, t.weight * scale, t.kind) for t in terms]


def _weighted_terms(candidates: list[Term], subsample: int | None, rng: UniformSource, normalizer: float) -> list[Term]:
    if subsample is None:
        kept = [t for t in candidates if t.weight != 0]
        return [Term(t.question_id, t.text, t.weight * len(kept) / normalizer, t.kind) for t in kept]
    indices, signed = systematic_resample([t.weight for t in candidates], subsample, rng, normalizer)
    return [Term(candidates[i].question_id, candidates[i].text, w, candidates[i].kind) for i, w in zip(indices, signed)]


def rejection_sampling_terms(
    proposals: Sequence[Proposal], total_kept: float | None = None, total_questions: float | None = None
) -> list[Term]:
    """The rejection-sampling baseline: keep the correct proposals (several per question), no control variate.

    Correct samples are exact posterior samples, so each question with any gets the mean of their
    gradients, and the step averages over those Q questions: G_RS = (1/Q) Σ_q (1/n_q) Σ_k ∇log p(z_qk),
    the same target as TRICE's G (whose M is Q with one sample each). Under the mean-over-terms
    contract each of the N kept terms weighs N / (Q · n_q): exactly 1 when every covered question
    has the same number of correct samples, less for easy questions with many. Across data-parallel
    processes (each holding its own questions) N and Q are the all-reduced `total_kept` and
    `total_questions`, since the engine's mean runs over every process's terms.
    """
    kept = [p for p in proposals if p.correct]
    per_question: dict[str, int] = {}
    for p in kept:
        per_question[p.question_id] = per_question.get(p.question_id, 0) + 1
    n = len(kept) if total_kept is None else total_kept
    q = len(per_question) if total_questions is None else total_questions
    return [Term(p.question_id, p.text, n / (q * per_question[p.question_id]), SAMPLE) for p in kept]
