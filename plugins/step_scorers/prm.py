"""`prm`: a process reward model (Math-Shepherd style) from a local or hub Hugging Face causal LM.

The solution is written as the model was trained to read it, each step followed by a step tag:

    {question} Step 1: Janet's ducks lay 16 eggs per day. ки
    Step 2: She eats 3 and bakes 4, so 16 - 3 - 4 = 9 are left. ки

and one forward pass gives, at the last token of every tag, the logits of the next token; a
step's score is the probability of the "good" token against the "bad" one,
softmax(logit[good], logit[bad])[good], in [0, 1]. Defaults are Math-Shepherd's
(peiyi9979/math-shepherd-mistral-7b-prm: tag `ки`, good `+`, bad `-`); every part is an option,
so other PRMs trained with a tag token work too. Tags are found through the tokenizer's
character offsets, so a tag that is several tokens, or merges with a neighbour, is still
located; the good and bad labels must each be one token.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

from cotkit import TEXT_UNITS, ConfigError, Example, ModelError, StepScorer, option, split_text

DEFAULT_PRM = "peiyi9979/math-shepherd-mistral-7b-prm"
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class PRMConfig:
    """Options of the `prm` step scorer (`-S KEY=VALUE`); the defaults are Math-Shepherd's."""

    model: str = option(DEFAULT_PRM, help="Hugging Face id, local folder or alias of the PRM")
    step_tag: str = option("ки", help="text written after every step")
    good_token: str = option("+", help="the label token of a good step")
    bad_token: str = option("-", help="the label token of a bad step")
    template: str = option("{question} {steps}", help="how question and steps are joined")
    step_prefix: str = option("Step {k}: ", help="written before step k; {k} is its number (empty for none)")
    unit: str = option("line", choices=TEXT_UNITS, help="what a step is when splitting a completion")
    device: str = option("auto", help="auto, cpu, cuda, ...")
    dtype: str = option("auto", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16")
    batch_size: int = option(8, minimum=1, help="solutions per forward pass")

    def __post_init__(self) -> None:
        if not self.step_tag.strip():
            raise ConfigError("step scorer prm: step_tag must not be blank")
        if "{steps}" not in self.template:
            raise ConfigError(f"step scorer prm: template must contain {{steps}}, got {self.template!r}")


class PRMScorer(StepScorer):
    """A process reward model: P(good) at a step tag after every step (Math-Shepherd format by default)."""

    name = "prm"
    description = "Process reward model (Math-Shepherd style): P(good token) at the step tag after each step"
    step_unit: ClassVar[str] = "text"
    Config = PRMConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._backend: Any = None
        self._labels: tuple[int, int] | None = None
        self._lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------

    def split(self, completion: str, example: Example | None = None) -> list[str]:
        """Lines (or sentences) of the completion, joining back to it."""
        return split_text(completion, self.config.unit)

    def score_steps(self, example: Example, steps: list[str]) -> list[float]:
        """P(good) at the tag after each step."""
        return self.score_many([(example, steps)])[0]

    def score_many(self, items: list[tuple[Example | None, list[str]]]) -> list[list[float]]:
        """`score_steps` for many solutions, `batch_size` per forward pass."""
        out: list[list[float]] = [[] for _ in items]
        todo = [i for i, (_, steps) in enumerate(items) if steps]
        if not todo:
            return out
        with self._lock:
            self._load()
            encoded = {}
            for i in todo:
                try:
                    encoded[i] = self._encode(*items[i])
                except Exception:  # text the tokenizer cannot take: this solution's steps score 0, no other's
                    out[i] = [0.0] * len(items[i][1])
            todo = list(encoded)
            order = sorted(todo, key=lambda i: -len(encoded[i][0]))  # similar lengths share a batch
            for start in range(0, len(order), self.config.batch_size):
                batch = order[start : start + self.config.batch_size]
                for i, scores in zip(batch, self._forward([encoded[i] for i in batch])):
                    out[i] = scores
        return out

    def close(self) -> None:
        """Free the model."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    # -- model -------------------------------------------------------------------------------

    def _load(self) -> None:
        if self._backend is not None:
            return
        from cotkit import load_backend

        self._backend = load_backend("hf", model=self.config.model, device=self.config.device, dtype=self.config.dtype)
        tok = self._backend.tokenizer
        ids = []
        for key, token in (("good_token", self.config.good_token), ("bad_token", self.config.bad_token)):
            enc = tok.encode(token, add_special_tokens=False)
            if len(enc) != 1:
                raise ConfigError(
                    f"step scorer prm: {key} {token!r} is {len(enc)} tokens for {self.config.model}; it must be exactly one"
                )
            ids.append(enc[0])
        if ids[0] == ids[1]:
            raise ConfigError("step scorer prm: good_token and bad_token are the same token")
        self._labels = (ids[0], ids[1])

    def render(self, example: Example | None, steps: list[str]) -> tuple[str, list[int]]:
        """The PRM input text and the character index just past each step's tag."""
        question = example.question if example is not None else ""
        head, _, tail = self.config.template.partition("{steps}")
        text = head.replace("{question}", question)
        ends = []
        for k, step in enumerate(steps, 1):
            if k > 1:
                text += "\n"
            prefix = self.config.step_prefix.replace("{k}", str(k))
            text += f"{prefix}{' '.join(step.split())} {self.config.step_tag}"
            ends.append(len(text))
        return text + tail.replace("{question}", question), ends

    def _encode(self, example: Example | None, steps: list[str]) -> tuple[list[int], list[int | None]]:
        """Token ids and, per step, the index of the token holding the last character of its tag."""
        tok = self._backend.tokenizer
        text, ends = self.render(example, steps)
        # A lone surrogate (a broken emoji in a model's output) makes a fast tokenizer refuse the
        # whole text; U+FFFD in its place keeps every character offset, so the tags stay found.
        text = _SURROGATE.sub("\ufffd", text)
        if getattr(tok, "is_fast", False):
            enc = tok(text, add_special_tokens=True, return_offsets_mapping=True)
            ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
            positions: list[int | None] = []
            for end in ends:
                hit = [t for t, (a, b) in enumerate(offsets) if a < end <= b]
                positions.append(hit[0] if hit else None)
        else:  # no offsets: tokenize piece by piece, each tag ending a piece
            ids = list(tok(text[: ends[0]], add_special_tokens=True).input_ids)
            positions = [len(ids) - 1]
            for a, b in itertools.pairwise(ends):
                ids += tok.encode(text[a:b], add_special_tokens=False)
                positions.append(len(ids) - 1)
            ids += tok.encode(text[ends[-1] :], add_special_tokens=False)
        limit = self._backend.max_length
        if limit and len(ids) > limit:  # keep the end: the latest steps matter most
            cut = len(ids) - limit
            ids = ids[cut:]
            positions = [p - cut if p is not None and p >= cut else None for p in positions]
        return ids, positions

    def _forward(self, batch: list[tuple[list[int], list[int | None]]]) -> list[list[float]]:
        import torch

        model = self._backend.model
        pad = self._backend.tokenizer.pad_token_id or 0
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, (ids, _) in enumerate(batch):  # right padding: positions stay those of the text
            input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[b, : len(ids)] = 1
        good, bad = self._labels  # type: ignore[misc]
        try:
            with torch.inference_mode():
                logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits
                pair = logits[..., [good, bad]].float().softmax(-1)[..., 0].cpu()
        except RuntimeError as e:  # out of memory, a device error: say which model and batch
            raise ModelError(
                f"step scorer prm: {self.config.model} failed on a batch of {len(batch)} x {width} tokens: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (lower batch_size?)"
            ) from e
        out = []
        for b, (_, positions) in enumerate(batch):
            scores = []
            for p in positions:
                value = float(pair[b, p]) if p is not None else math.nan
                scores.append(value if math.isfinite(value) else 0.5)
            out.append(scores)
        return out
