"""Use step scorers: score solutions, rerank N samples, weighted majority vote, step-level beam search.

Aggregating step scores into a solution score (`aggregate`): `min` (a solution is as good as its
worst step; the PRM papers' default), `prod` (every doubtful step costs), or `last` (the score
of the final step). Beam search also takes `logsum`, the sum of the steps' log scores: added to
the summed token log-probabilities it is PaD's beam score (log p(program) + sum of log
faithfulness per line); alone it ranks as `prod` does, so reranking and voting do not offer it. Best-of-N picks the highest solution score (the first on ties); the weighted
vote adds the solution scores of the samples giving each answer and picks the heaviest answer.

Beam search (`beam_search`) decodes a step at a time with any Backend (only `generate` is
needed, plus `loglikelihood` when the model's log-probability is mixed in): every live beam is
extended with `expand` sampled next steps (the first step samples beam_width x expand), each
candidate is scored with the step scorer, and the `beam_width` best unfinished candidates live
on; finished solutions are set aside, as in beam search for translation. The search ends when
no beam is live, after `max_steps`, or (when a beam's value never rises as steps are added: min,
prod or logsum, with no log-probability or a summed one, and no length penalty) when no live beam
can beat the `beam_width` best finished solutions; those, ranked, are the result.

A beam's value is aggregate(step scores) + logprob_weight x (mean or sum of its token
log-probabilities), divided by (its generated tokens) ** length_penalty. Beams here grow by whole
sampled lines, so at a step they differ in length; a token-level beam search (PaD's reference,
Hugging Face's `generate` with `num_beams`) compares beams of equal length and divides only
finished ones by their length (length_penalty 1 by default). A length penalty of 1 applied to
every beam ranks live beams of equal length as the raw sum does and finished ones as Hugging
Face does, so it is the line-level search's nearest equivalent.

A text step ends at a newline; a program step at the end of a statement (lines are generated
until the statement parses, so a `for` header is never a step on its own). A solution ends when
it states its answer (an answer cue such as "The answer is"), a program returns from its
function or closes its fence, a stop sequence of the task appears, two blank lines follow each
other, or the token budget runs out. Generations stop at a newline, so a backend's end of
sequence reads as the end of a line: the blank lines that follow end the solution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cotkit.contracts import Backend, Generation, SamplingParams, StepScorer
from cotkit.errors import ConfigError
from cotkit.options import option
from cotkit.types import Example, Prompt

#: Aggregations that rank solutions (reranking, weighted vote, beam search).
AGGREGATES = ("min", "prod", "last")
#: Beam search also adds step scores in log space to the model's log-probabilities.
BEAM_AGGREGATES = (*AGGREGATES, "logsum")
LOGPROB_REDUCTIONS = ("mean", "sum")
#: `logsum` floors step scores here, so a failed step (score 0) costs log(1e-6), not infinity.
LOG_FLOOR = 1e-6


def aggregate(scores: Sequence[float], how: str = "min") -> float:
    """One solution score from its step scores: min, prod, last or logsum; 0.0 for a solution with no steps."""
    if how not in BEAM_AGGREGATES:
        from cotkit.errors import UnknownNameError

        raise UnknownNameError("aggregation", how, BEAM_AGGREGATES)
    if not scores:
        return 0.0
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "logsum":
        return float(sum(math.log(max(LOG_FLOOR, s)) for s in scores))
    return float(scores[-1])


def make_step_scorer(name: str, **options: Any) -> StepScorer:
    """An instance of the named step scorer with its options (models and sandboxes start lazily)."""
    from cotkit.plugins import host

    return host().get("step_scorer", name)(**options)


def score_many(scorer: StepScorer, items: list[tuple[Example | None, list[str]]]) -> list[list[float]]:
    """Step scores of many solutions: the scorer's batched `score_many` when it has one.

    Checks the scorer's answer: one finite score per step (a NaN or a missing score is a bug in
    the scorer, reported with its name rather than ranked silently).
    """
    batched = getattr(scorer, "score_many", None)
    if batched is not None:
        out = batched(items)
    else:
        out = [scorer.score_steps(ex, steps) if steps else [] for ex, steps in items]  # type: ignore[arg-type]
    if len(out) != len(items):
        raise ConfigError(f"step scorer {scorer.name} returned {len(out)} score lists for {len(items)} solutions")
    for (_, steps), scores in zip(items, out):
        if len(scores) != len(steps) or not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores):
            raise ConfigError(f"step scorer {scorer.name} returned {list(scores)[:5]} for {len(steps)} steps")
    return [[float(s) for s in scores] for scores in out]


@dataclass
class ScoredSolution:
    """A completion cut into steps, with a score per step and the aggregated solution score."""

    steps: list[str]
    step_scores: list[float]
    score: float

    def to_dict(self) -> dict[str, Any]:
        """The fields a per-sample JSONL row records."""
        return {
            "steps": self.steps,
            "step_scores": [round(s, 6) for s in self.step_scores],
            "solution_score": round(self.score, 6),
        }


def score_solutions(
    scorer: StepScorer, example: Example | None, completions: list[str], how: str = "min"
) -> list[ScoredSolution]:
    """Split each completion with the scorer, score its steps, aggregate."""
    steps = [scorer.split(c, example) for c in completions]
    scores = score_many(scorer, [(example, s) for s in steps])
    return [ScoredSolution(st, sc, aggregate(sc, how)) for st, sc in zip(steps, scores)]


def best_of_n(scores: Sequence[float]) -> int | None:
    """Index of the highest-scored sample (the first on ties); None for no samples."""
    if not scores:
        return None
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def weighted_vote(answers: Sequence[str | None], weights: Sequence[float]) -> int | None:
    """Index of the first sample giving the answer with the largest total weight.

    Samples without an answer (None) do not vote. Ties between answers go to the answer with more
    votes, then to the one seen first; when every weight is zero the vote is a plain majority.
    """
    if len(answers) != len(weights):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights")
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, (a, w) in enumerate(zip(answers, weights)):
        if a is None:
            continue
        total[a] = total.get(a, 0.0) + max(0.0, float(w))
        count[a] = count.get(a, 0) + 1
        first.setdefault(a, i)
    if not total:
        return None
    best = max(total, key=lambda a: (total[a], count[a], -first[a]))
    return first[best]


# ------------------------------------------------------------------------------ beam search


@dataclass
class BeamSettings:
    """How step-level beam search runs."""

    # The options `cotkit eval` shows for beam search take their defaults and help from these fields.
    beam_width: int = option(4, help="Beams kept at every step of beam search.")
    expand: int = option(
        4, help="Candidate next steps sampled from each live beam (the first step samples beam width x expand)."
    )
    max_steps: int = option(24, help="Steps at most per solution.")
    step_tokens: int = option(96, help="Tokens one generated line may take (a longer line is continued in the next step).")
    #: Tokens a whole solution may take.
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    aggregate: str = option("min", help="Step scores to a beam's score: min, prod, last or logsum (sum of their logs).")
    logprob_weight: float = option(
        0.0, help="Weight of the model's token log-probability in a beam's score (0: step scores only)."
    )
    logprob_reduce: str = option(
        "mean", choices=LOGPROB_REDUCTIONS, help="The model's token log-probabilities in a beam's score: their mean or their sum."
    )
    length_penalty: float = option(
        0.0, help="A beam's score is divided by its generated tokens to this power (0: not divided; 1: per token)."
    )
    #: Lines generated at most to complete one program statement.
    max_lines_per_step: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("beam_width", "expand", "max_steps", "step_tokens", "max_new_tokens", "max_lines_per_step"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"beam search: {name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("beam search: temperature must be >= 0 and top-p in (0, 1]")
        if self.aggregate not in BEAM_AGGREGATES:
            raise ConfigError(f"beam search: aggregate must be one of {', '.join(BEAM_AGGREGATES)}, not {self.aggregate!r}")
        if not math.isfinite(self.logprob_weight) or self.logprob_weight < 0:
            raise ConfigError(f"beam search: logprob weight must be a non-negative number, got {self.logprob_weight}")
        if self.logprob_reduce not in LOGPROB_REDUCTIONS:
            raise ConfigError(f"beam search: logprob-reduce must be mean or sum, not {self.logprob_reduce!r}")
        if not math.isfinite(self.length_penalty) or self.length_penalty < 0:
            raise ConfigError(f"beam search: length penalty must be a non-negative number, got {self.length_penalty}")

    @property
    def monotone(self) -> bool:
        """Whether a beam's value never rises as steps are added, so a live beam's value bounds its final one."""
        steps_never_rise = self.aggregate in ("min", "prod", "logsum")
        logprob_never_rises = not self.logprob_weight or self.logprob_reduce == "sum"
        return steps_never_rise and logprob_never_rises and not self.length_penalty


@dataclass
class Beam:
    """One partial (or finished) solution: its text, its steps and their scores."""

    text: str = ""
    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    tokens: int = 0
    #: Why it finished: answer, return, fence, stop, blank, invalid, length, max_steps ("" while live).
    finish: str = ""
    #: Sum of the model's token log-probabilities of `text` (only with a logprob weight).
    logprob: float | None = None
    #: Blank lines generated in a row just now (two end the solution).
    blank_run: int = 0

    @property
    def done(self) -> bool:
        """Whether the solution is finished."""
        return bool(self.finish)

    def value(self, settings: BeamSettings) -> float:
        """The ranking score: aggregated step scores plus the weighted token log-probability (mean or
        sum), divided by the generated tokens to the power `length_penalty`."""
        v = aggregate(self.scores, settings.aggregate) if self.scores else 0.0
        if settings.logprob_weight and self.logprob is not None:
            per = max(1, self.tokens) if settings.logprob_reduce == "mean" else 1
            v += settings.logprob_weight * self.logprob / per
        if settings.length_penalty:
            v /= max(1, self.tokens) ** settings.length_penalty
        return v

    def to_dict(self, settings: BeamSettings) -> dict[str, Any]:
        """What the per-sample JSONL records about a beam."""
        d = {
            "steps": self.steps, "step_scores": [round(s, 6) for s in self.scores],
            "beam_score": round(self.value(settings), 6), "finish": self.finish, "tokens": self.tokens,
        }  # fmt: skip
        if self.logprob is not None:
            d["logprob"] = round(self.logprob, 4)
        return d


@dataclass
class SearchResult:
    """The final beams of one prompt, best first."""

    beams: list[Beam]

    @property
    def best(self) -> Beam:
        """The highest-ranked finished solution."""
        return self.beams[0]

    def texts(self, n: int) -> list[str]:
        """The n best solutions' texts (the best repeated when fewer beams survived)."""
        texts = [b.text for b in self.beams[:n]]
        return texts + [self.beams[0].text] * (n - len(texts))


def step_unit_of(scorer: StepScorer) -> str:
    """`program` for scorers of program statements (exec), else `text` (lines)."""
    unit = getattr(scorer, "step_unit", "text")
    return "program" if unit == "program" else "text"


def beam_search(
    backend: Backend,
    prompts: list[Prompt],
    scorer: StepScorer,
    settings: BeamSettings | None = None,
    examples: Sequence[Example | None] | None = None,
    stop: Sequence[str] = (),
    unit: str | None = None,
) -> list[SearchResult]:
    """Step-level beam search for each prompt; results in prompt order, each with its beams best first.

    `examples` (aligned with prompts) are handed to the step scorer; `stop` are the task's stop
    sequences (a solution ends where one appears). `unit` is `text` or `program` (default: from
    the scorer). Deterministic for a given seed and backend.
    """
    settings = settings or BeamSettings()
    unit = unit or step_unit_of(scorer)
    if unit not in ("text", "program"):
        raise ConfigError(f"beam search: unit must be text or program, not {unit!r}")
    examples = list(examples) if examples is not None else [None] * len(prompts)
    if len(examples) != len(prompts):
        raise ConfigError(f"beam search: {len(examples)} examples for {len(prompts)} prompts")
    contexts = [_continuable(backend, p) for p in prompts]
    search = _Search(backend, scorer, settings, unit, list(stop), contexts, examples, prompts)
    return search.run()


def _continuable(backend: Backend, prompt: Prompt) -> Callable[[str], Prompt]:
    """A function giving the prompt continued by a partial solution."""
    if isinstance(prompt, str):
        return lambda text: prompt + text
    render = getattr(backend, "render", None)
    if render is None:
        raise ConfigError(
            f"beam search with chat prompts needs a backend that renders chat templates; backend {backend.name} "
            "does not: use --style fewshot or zeroshot"
        )
    rendered = render(prompt)
    return lambda text: rendered + text


class _Search:
    """The state of one beam search over several prompts (all advanced together, one batch per step)."""

    def __init__(self, backend, scorer, settings, unit, stop, contexts, examples, prompts):
        self.backend, self.scorer, self.s, self.unit = backend, scorer, settings, unit
        self.stop, self.contexts, self.examples, self.prompts = stop, contexts, examples, prompts
        self.beams: list[list[Beam]] = [[Beam()] for _ in prompts]  # live beams
        self.finished: list[list[Beam]] = [[] for _ in prompts]
        self.monotone = settings.monotone

    def run(self) -> list[SearchResult]:
        for step in range(self.s.max_steps):
            live = [(i, b) for i, beams in enumerate(self.beams) for b in beams]
            if not live:
                break
            per_beam = self.s.expand * (self.s.beam_width if step == 0 else 1)
            candidates = self._expand(live, per_beam, step)
            self._score([(i, c) for i, c in candidates if len(c.scores) < len(c.steps)])
            if self.s.logprob_weight:
                self._logprobs([(i, c) for i, c in candidates if c.logprob is None])
            for i in range(len(self.beams)):
                self.finished[i].extend(c for j, c in candidates if j == i and c.done)
                pool = [c for j, c in candidates if j == i and not c.done]
                self.beams[i] = self._rank(pool)[: self.s.beam_width]
                if self.monotone and self.beams[i] and len(self.finished[i]) >= self.s.beam_width:
                    kept = self._rank(self.finished[i])[self.s.beam_width - 1].value(self.s)
                    if self.beams[i][0].value(self.s) <= kept:
                        self.beams[i] = []  # no live beam can beat the finished ones any more
        out = []
        for i, beams in enumerate(self.beams):
            for b in beams:
                b.finish = "max_steps"
            out.append(SearchResult(self._rank(self.finished[i] + beams)[: self.s.beam_width]))
        return out

    # -- generation --------------------------------------------------------------------------

    def _generate(self, items: list[tuple[int, Beam]], n: int, seed: int) -> list[list[Generation]]:
        prompts = [self.contexts[i](b.text) for i, b in items]
        params = SamplingParams(
            n=n, temperature=self.s.temperature, top_p=self.s.top_p, max_new_tokens=self.s.step_tokens,
            stop=["\n"], seed=seed,
        )  # fmt: skip
        grid = self.backend.generate(prompts, params, progress=False)
        if len(grid) != len(prompts) or any(len(g) != n for g in grid):
            from cotkit.errors import ModelError

            raise ModelError(f"backend {self.backend.name} returned a wrong number of generations during beam search")
        return grid

    def _expand(self, live: list[tuple[int, Beam]], per_beam: int, step: int) -> list[tuple[int, Beam]]:
        """New candidates from every live beam, each text once and none already finished."""
        seed = self.s.seed + 1000 * step
        grid = self._generate(live, per_beam, seed)
        out: list[tuple[int, Beam]] = []
        pending: list[tuple[int, Beam]] = []
        for (i, parent), gens in zip(live, grid):
            for g in gens:
                cand = self._extend(parent, g, new_step=True)
                (pending if self._needs_more(cand) else out).append((i, cand))
        for extra in range(1, self.s.max_lines_per_step):  # program statements spanning several lines
            if not pending:
                break
            grid = self._generate(pending, 1, seed + extra)
            still: list[tuple[int, Beam]] = []
            for (i, cand), gens in zip(pending, grid):
                cand = self._extend(cand, gens[0], new_step=False)
                (still if self._needs_more(cand) else out).append((i, cand))
            pending = still
        out.extend(pending)  # a statement unfinished after max_lines_per_step lines is scored as it is
        seen = {(i, b.text) for i, beams in enumerate(self.finished) for b in beams}
        unique: dict[tuple[int, str], tuple[int, Beam]] = {}  # the same text reached twice is one candidate
        for i, c in out:
            if (i, c.text) not in seen:
                unique.setdefault((i, c.text), (i, c))
        return list(unique.values())

    def _extend(self, parent: Beam, g: Generation, new_step: bool) -> Beam:
        """The beam with one more generated line: a new step, or the next line of the step being generated."""
        add = g.text + ("\n" if g.finish_reason != "length" else "")
        blank = not g.text.strip()
        steps, scores = list(parent.steps), list(parent.scores)
        if new_step and blank and steps:
            steps[-1] += add  # a blank line is not a step: it joins the one before, whose score stands
        elif new_step:
            steps.append(add)
        else:  # the next line of an unfinished program statement: the step is scored once complete
            steps[-1] += add
            scores = scores[: len(steps) - 1]
        beam = Beam(parent.text + add, steps, scores, parent.tokens + g.n_tokens, blank_run=parent.blank_run + 1 if blank else 0)
        self._check_end(beam, add)
        return beam

    def _needs_more(self, beam: Beam) -> bool:
        """A program step whose statement is not complete yet (and the solution is not over)."""
        if self.unit != "program" or beam.done:
            return False
        from cotkit.reading.steps import split_program

        split = split_program(beam.text)
        return split.tail == "incomplete" or (split.tail == "" and split.complete < len(beam.steps))

    def _check_end(self, beam: Beam, added: str) -> None:
        """Mark the beam finished when its solution is over, cutting at a stop sequence."""
        from cotkit.reading import answers

        cut = answers.cut_completion(beam.text, self.stop)
        if len(cut.rstrip()) < len(beam.text.rstrip()):
            _truncate(beam, cut)
            beam.finish = "stop"
            return
        if beam.blank_run >= 2:
            beam.finish = "blank"
        elif beam.tokens >= self.s.max_new_tokens:
            beam.finish = "length"
        if self.unit == "text":
            if added.strip() and answers.find_cues(added):
                beam.finish = "answer"
            return
        from cotkit.reading.steps import split_program

        split = split_program(beam.text)
        if split.closed:
            beam.finish = "fence"
        elif split.tail == "invalid":
            beam.finish = "invalid"  # no continuation makes it parse again; the scorer fails the step
        elif split.returned:
            beam.finish = "return"

    # -- scoring -----------------------------------------------------------------------------

    def _score(self, candidates: list[tuple[int, Beam]]) -> None:
        todo = [(i, b) for i, b in candidates if b.steps]
        if not todo:
            return
        items = [(self.examples[i], b.steps) for i, b in todo]
        for (_, b), scores in zip(todo, score_many(self.scorer, items)):
            b.scores = scores

    def _logprobs(self, candidates: list[tuple[int, Beam]]) -> None:
        if not candidates:
            return
        pairs = [(self.prompts[i], b.text) for i, b in candidates]
        for (_, b), lp in zip(candidates, self.backend.loglikelihood(pairs)):
            b.logprob = float(lp)

    def _rank(self, beams: list[Beam]) -> list[Beam]:
        """Best first; at equal value a solution that states its answer beats one that trails off, then the earlier one."""
        return sorted(beams, key=lambda b: (-b.value(self.s), _FINISH_RANK.get(b.finish, 0)))


#: Tie-break between beams of equal value: how well their solutions ended.
_FINISH_RANK = {"answer": 0, "return": 0, "fence": 0, "": 1, "stop": 1, "blank": 2, "length": 3, "max_steps": 3, "invalid": 4}


def _truncate(beam: Beam, cut: str) -> None:
    """Cut a beam's text and steps at `cut` (a prefix of its text); the changed last step loses its score."""
    steps: list[str] = []
    pos = 0
    for s in beam.steps:
        if pos >= len(cut):
            break
        steps.append(s[: len(cut) - pos])
        pos += len(s)
    while steps and not steps[-1].strip():  # whitespace left after the cut joins the step before
        tail = steps.pop()
        if steps:
            steps[-1] += tail
    kept = sum(1 for a, b in zip(steps, beam.steps) if a == b)
    beam.text = "".join(steps) if steps else ""
    beam.steps = steps
    beam.scores = beam.scores[: min(kept, len(steps))]


class BeamBackend(Backend):
    """A Backend whose `generate` decodes by step-level beam search over another backend.

    Anything that samples through a Backend (the sampling harness, `cotkit eval`'s lm-eval model)
    gets step-verified decoding by wrapping its backend: sample j of a prompt is the j-th best
    final beam (`params.n` may not exceed the beam width). `params.stop`, `temperature`, `top_p`,
    `max_new_tokens` and `seed` apply to the search; `example_of` gives the step scorer the
    Example behind a prompt. The beams of every prompt are kept in `traces` (by `prompt_key`).
    """

    name = "beam"

    def __init__(
        self,
        backend: Backend,
        scorer: StepScorer,
        settings: BeamSettings | None = None,
        example_of: Callable[[Prompt], Example | None] | None = None,
        unit: str | None = None,
    ):
        super().__init__(backend.model_name)
        self.inner, self.scorer = backend, scorer
        self.settings = settings or BeamSettings()
        self.example_of = example_of or (lambda prompt: None)
        self.unit = unit
        self.traces: dict[str, list[Beam]] = {}

    def generate(self, prompts: list[Prompt], params: SamplingParams, progress: bool = True, **_: Any) -> list[list[Generation]]:
        """`params.n` best final beams per prompt, as Generations (n_tokens and finish of each beam)."""
        if params.n > self.settings.beam_width:
            raise ConfigError(
                f"beam search returns at most beam-width={self.settings.beam_width} solutions, {params.n} asked for"
            )
        settings = replace(
            self.settings, temperature=params.temperature, top_p=params.top_p,
            max_new_tokens=params.max_new_tokens, seed=params.seed,
        )  # fmt: skip
        results = beam_search(
            self.inner, prompts, self.scorer, settings, [self.example_of(p) for p in prompts], params.stop or (), self.unit
        )
        out = []
        for prompt, result in zip(prompts, results):
            beams = (result.beams[: params.n] + [result.best] * params.n)[: params.n]
            self.traces[prompt_key(prompt)] = beams
            out.append([Generation(b.text, b.tokens, "length" if b.finish in ("length", "max_steps") else "stop") for b in beams])
        return out

    def loglikelihood(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """The wrapped backend's log-likelihoods."""
        return self.inner.loglikelihood(pairs)

    def close(self) -> None:
        """Close the wrapped backend."""
        self.inner.close()


def prompt_key(prompt: Prompt) -> str:
    """A prompt as one string (chat messages as JSON), for looking prompts up."""
    import json

    return prompt if isinstance(prompt, str) else json.dumps(prompt)


__all__ = [
    "AGGREGATES", "BEAM_AGGREGATES", "LOGPROB_REDUCTIONS", "Beam", "BeamBackend", "BeamSettings", "ScoredSolution",
    "SearchResult", "aggregate", "beam_search", "best_of_n", "prompt_key", "score_many", "score_solutions",
    "step_unit_of", "weighted_vote",
]  # fmt: skip
