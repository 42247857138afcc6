"""`faithfulness`: how well each program line aligns with the question's sentences (PaD's step scorer).

PaD's step-by-step verification (Zhu et al. 2023) adds log(faithfulness) to a beam's score each
time the beam completes a program line. Faithfulness is ROSCOE's faithfulness-step over sentence
embeddings: a line's alignment is its best scaled cosine similarity with any question sentence,

    align(line) = max over question sentences q of (1 + cos(e(line), e(q))) / 2,

in [0, 1]. The reference scores each completed line on its own (the `def solution():` header is
never scored) with the SimCSE model `facebook/roscoe-512-roberta-base`.

Here a step is a program statement (`split_program`), which may span several lines (a `for` header
and its body); its score is the product of its lines' alignments, so log(step score) is the sum of
the per-line terms the reference adds, and a beam's `logsum` of step scores equals the reference's
faithfulness total. Lines not scored: blank lines, fence markers and `def` headers; a step with
none of them left scores 1.0 (it adds nothing), as does any step of a solution without a question.
Every score is floored at `FLOOR` so its log is finite.

Embeddings come from `encoder`, any Hugging Face encoder (a local folder, a hub id in the local
cache, or an alias), pooled as SimCSE does: `cls` takes the pooler output (SimCSE's choice for its
supervised models, ROSCOE's among them), `cls_before_pooler` the first token's hidden state, `mean`
the mean of the token states (sentence-transformers). Without an encoder the score is model-free
and lexical (see `lexical_vector`): the same formula over bag-of-words vectors, so it runs on a
fresh machine with nothing downloaded.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from cotkit import ConfigError, Example, ModelError, StepScorer, canonical_numeral, option, split_program, split_text

#: The lowest score, so log(score) stays finite (log(1e-6) is about -13.8, a heavy but bounded cost).
FLOOR = 1e-6
POOLINGS = ("cls", "cls_before_pooler", "mean")
CACHE_SIZE = 50000

_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
# Words inside identifiers: `eggs_per_day` -> eggs, per, day; `totalCost` -> total, cost.
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_HEADER = re.compile(r"^\s*(?:async\s+)?def\s+\w+\s*\(.*\)\s*(?:->.*)?:\s*(?:#.*)?$")
_FENCE = re.compile(r"^\s*```")
_NUMBER_WORDS = {
    w: str(n)
    for n, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
     "hundred": "100", "thousand": "1000", "dozen": "12", "twice": "2", "double": "2", "triple": "3", "half": "0.5"}  # fmt: skip
# Words that carry no quantity or entity of a word problem: English function words, Python
# keywords and builtins, and the names every PAL-style program uses (`solution`, `result`).
_STOPWORDS = frozenset(
    """a an the of to in on at for from by with and or but not no is are was were be been being it its
    this that these those he she they them his her their we you i me my our your there here as so if
    then than each every per how what which who whom much many more most some any all do does did has
    have had will would can could should may might must shall into out up down over about after before
    def return print int float str round range len sum min max abs true false none pass while break
    continue elif else import lambda result solution answer""".split()
)


@dataclass
class FaithfulnessConfig:
    """Options of the `faithfulness` step scorer (`-S KEY=VALUE`)."""

    encoder: str | None = option(
        None,
        help="Hugging Face sentence encoder (folder, hub id or alias), e.g. facebook/roscoe-512-roberta-base as in "
        "the paper; none: the model-free lexical similarity",
    )
    pooling: str = option("cls", choices=POOLINGS, help="sentence embedding of the encoder: pooler output, first token, or mean")
    device: str = option("auto", help="auto, cpu, cuda, ...")
    batch_size: int = option(32, minimum=1, help="sentences per forward pass of the encoder")
    max_length: int = option(128, minimum=8, help="tokens per sentence at most")

    def __post_init__(self) -> None:
        if self.encoder is not None and not self.encoder.strip():
            raise ConfigError("step scorer faithfulness: encoder must name a model, or be left out for lexical scoring")


class FaithfulnessScorer(StepScorer):
    """ROSCOE faithfulness of each program statement: its lines' best similarity with a question sentence."""

    name = "faithfulness"
    description = "PaD's scorer: each program line's best similarity with a question sentence (encoder or lexical)"
    step_unit: ClassVar[str] = "program"
    Config = FaithfulnessConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._model: Any = None
        self._tokenizer: Any = None
        self._use_pooler = False
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def split(self, completion: str, example: Example | None = None) -> list[str]:
        """Statements of the program (a header goes with its first body statement); they join back to the completion."""
        return split_program(completion).steps

    def score_steps(self, example: Example, steps: list[str]) -> list[float]:
        """A score per step: the product of its lines' alignments with the question."""
        return self.score_many([(example, steps)])[0]

    def score_many(self, items: list[tuple[Example | None, list[str]]]) -> list[list[float]]:
        """`score_steps` for many solutions; with an encoder, every sentence not yet cached is embedded in one pass."""
        plans = [(question_sentences(ex), [scored_lines(s) for s in steps]) for ex, steps in items]
        with self._lock:
            if self.config.encoder is not None:
                self._embed([t for sents, lines in plans if sents for t in sents + [ln for ls in lines for ln in ls]])
            return [[self._step_score(sents, lines) for lines in per_step] for sents, per_step in plans]

    def close(self) -> None:
        """Free the encoder (a later call loads it again)."""
        with self._lock:
            self._model = self._tokenizer = None
            self._cache.clear()

    # -- scoring -----------------------------------------------------------------------------

    def _step_score(self, sentences: list[str], lines: list[str]) -> float:
        if not sentences:
            return 1.0  # nothing to be unfaithful to
        score = 1.0
        for line in lines:
            score *= max(self._similarity(line, q) for q in sentences)
        return max(FLOOR, score)

    def _similarity(self, a: str, b: str) -> float:
        """ROSCOE's scaled cosine, (1 + cos) / 2, of two texts' vectors."""
        if self.config.encoder is None:
            cos = _sparse_cosine(lexical_vector(a), lexical_vector(b))
        else:
            cos = float(self._cache[a] @ self._cache[b])  # unit vectors
        return (1.0 + cos) / 2.0

    # -- encoder -----------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> None:
        """Embed the texts not cached yet (unit vectors), longest first so a batch pads little."""
        needed = {t for t in texts if t in self._cache}
        for t in needed:
            self._cache.move_to_end(t)  # the texts of this call are evicted last, never during it
        todo = sorted({t for t in texts if t not in self._cache}, key=len, reverse=True)
        if not todo:
            return
        while len(self._cache) > len(needed) and len(self._cache) + len(todo) > CACHE_SIZE:
            self._cache.popitem(last=False)
        self._load()
        import torch

        for start in range(0, len(todo), self.config.batch_size):
            batch = todo[start : start + self.config.batch_size]
            enc = self._tokenizer(batch, padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt")
            enc = {k: v.to(self._model.device) for k, v in enc.items()}
            with torch.no_grad():
                out = self._model(**enc)
            vectors = torch.nn.functional.normalize(self._pool(out, enc["attention_mask"]).float(), dim=-1).cpu()
            for text, v in zip(batch, vectors):
                self._cache[text] = v

    def _pool(self, out: Any, mask: Any) -> Any:
        if self.config.pooling == "mean":
            m = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            return (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1)
        if self._use_pooler:
            return out.pooler_output
        return out.last_hidden_state[:, 0]

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        from cotkit import resolve_model

        path = resolve_model(self.config.encoder)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            model, info = AutoModel.from_pretrained(path, output_loading_info=True)
        except (OSError, ValueError) as e:
            raise ModelError(f"step scorer faithfulness: cannot load encoder {self.config.encoder!r}: {e}") from e
        # A checkpoint saved without its pooler gets a random one: its first token's state is the embedding then.
        has_pooler = getattr(model, "pooler", None) is not None
        self._use_pooler = (
            self.config.pooling == "cls" and has_pooler and not any(k.startswith("pooler") for k in info.get("missing_keys", ()))
        )
        self._model = model.to(_device(self.config.device)).eval()


def question_sentences(example: Example | None) -> list[str]:
    """The question's sentences, stripped (none without a question)."""
    if example is None or not example.question:
        return []
    return [s.strip() for s in split_text(example.question, "sentence") if s.strip()]


def scored_lines(step: str) -> list[str]:
    """The lines of a step that are scored: not blank, not a fence marker, not a `def` header."""
    return [ln.strip() for ln in step.splitlines() if ln.strip() and not _FENCE.match(ln) and not _HEADER.match(ln)]


def lexical_vector(text: str) -> Counter[str]:
    """Bag-of-words vector of a sentence or a program line, for the model-free score.

    Why these tokens: a faithful program line names the question's quantities and things, so the
    evidence is shared numbers and shared words. Numbers count in one spelling (`1,000`, `1000.0`
    and `thousand` are `#1000`: questions write small numbers as words, programs as digits);
    identifiers are split into words (`eggs_per_day`, `totalCost`); words are lower-cased with a
    plural `s` dropped (`eggs` matches `egg`); function words, Python keywords and builtins are
    left out, as they say nothing about the question.
    """
    tokens = ["#" + canonical_numeral(m.group()) for m in _NUMBER.finditer(text)]
    for word in _WORD.findall(_NUMBER.sub(" ", text)):
        w = word.lower()
        if w in _NUMBER_WORDS:
            tokens.append("#" + _NUMBER_WORDS[w])
        elif w not in _STOPWORDS and len(w) > 1:
            tokens.append(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return Counter(tokens)


def _sparse_cosine(a: Counter[str], b: Counter[str]) -> float:
    """Cosine of two count vectors; 0 when either is empty (no evidence of alignment)."""
    if not a or not b:
        return 0.0
    dot = sum(n * b[t] for t, n in a.items() if t in b)
    return dot / math.sqrt(sum(n * n for n in a.values()) * sum(n * n for n in b.values()))


def _device(spec: str) -> str:
    if spec != "auto":
        return spec
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
