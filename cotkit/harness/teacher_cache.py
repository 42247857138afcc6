"""A teacher's generations cached on disk, so a resumed run or a re-run asks the teacher nothing twice.

Distillation methods (Fine-tune-CoT, PaD) pay for every teacher request, often to a paid endpoint.
`CachedTeacher` sits in front of any backend with the backend's own `generate` signature, so it
can be handed to `sample()` like a backend; it asks the real backend (opened on first need) only
for the prompts the cache lacks. The cache is a JSONL file appended batch by batch, so several
runs can share one file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cotkit.budget import count_sampled
from cotkit.contracts import Backend, Generation, SamplingParams
from cotkit.harness.sample import accepts_seeds
from cotkit.jsonl import append_jsonl_rows, read_jsonl_tolerant
from cotkit.types import Prompt


class TeacherCache:
    """Teacher generations by request key, in a JSONL file appended (and fsynced) batch by batch.

    A line torn by a kill is skipped when the file is read back, so at worst the last batch is
    asked again.
    """

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        for row in read_jsonl_tolerant(path):
            if isinstance(row, dict) and "key" in row:
                self.entries[row["key"]] = row

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Record rows (each with its `key`) and append them to the file durably."""
        if not rows:
            return
        append_jsonl_rows(self.path, rows)
        for row in rows:
            self.entries[row["key"]] = row


def request_key(teacher: dict[str, Any], prompt: Prompt, params: SamplingParams, seed: int | None, index: int) -> str:
    """The cache key of one teacher generation: the teacher, the exact prompt and every decoding setting.

    A changed prompt or setting therefore misses the cache instead of reusing a wrong answer.
    """
    payload = {
        "teacher": teacher, "prompt": prompt, "temperature": params.temperature, "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens, "stop": params.stop or [], "seed": seed, "index": index,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class CachedTeacher:
    """A backend behind the cache: `generate` asks the backend only for prompts the cache lacks.

    `identity` names the teacher in the keys (backend, model, endpoint: never an API key).
    `requests` counts the generations asked of the backend, `hits` those served from the cache.
    """

    def __init__(self, open_backend: Callable[[], Backend], identity: dict[str, Any], cache: TeacherCache | None):
        self.open_backend = open_backend
        self.identity = identity
        self.cache = cache
        self.name = str(identity.get("backend", "teacher"))
        self.model_name = str(identity.get("model", ""))
        self.backend: Backend | None = None
        self.requests = 0
        self.hits = 0

    def generate(
        self, prompts: list[Prompt], params: SamplingParams, progress: bool = True, seeds: Sequence[int] | None = None
    ) -> list[list[Generation]]:
        """`params.n` generations per prompt, cached ones reused; sample j of prompt i drawn with seed `seeds[i] + j`."""
        seeds = list(seeds) if seeds is not None else [params.seed] * len(prompts)
        greedy = params.temperature == 0  # the seed does not change a greedy answer, so it is not part of the key
        keys = [
            [request_key(self.identity, p, params, None if greedy else s + j, j) for j in range(params.n)]
            for p, s in zip(prompts, seeds)
        ]
        out: list[list[Generation] | None] = [self._cached(row) for row in keys]
        self.hits += sum(params.n for got in out if got is not None)
        count_sampled([got for got in out if got is not None])  # the backend counts the ones it is asked for
        missing = [i for i, got in enumerate(out) if got is None]
        if missing:
            grid = self._ask([prompts[i] for i in missing], params, [seeds[i] for i in missing], progress)
            self.requests += len(missing) * params.n
            new_rows = []
            for i, gens in zip(missing, grid):
                out[i] = list(gens)
                new_rows += [
                    {"key": k, "text": g.text, "n_tokens": g.n_tokens, "finish_reason": g.finish_reason} for k, g in zip(keys[i], gens)
                ]
            if self.cache is not None:
                self.cache.add(new_rows)
        return out  # type: ignore[return-value]

    def _cached(self, keys: list[str]) -> list[Generation] | None:
        """The cached generations for one prompt's keys, or None if any is missing."""
        if self.cache is None:
            return None
        rows = [self.cache.get(k) for k in keys]
        if any(r is None for r in rows):
            return None
        return [Generation(r["text"], r.get("n_tokens", 0), r.get("finish_reason", "stop")) for r in rows]  # type: ignore[index]

    def _ask(self, prompts: list[Prompt], params: SamplingParams, seeds: list[int], progress: bool) -> list[list[Generation]]:
        if self.backend is None:
            self.backend = self.open_backend()
        if accepts_seeds(self.backend):
            return self.backend.generate(prompts, params, progress=progress, seeds=seeds)
        return self.backend.generate(prompts, params, progress=progress)

    def close(self) -> None:
        """Close the backend if this cache opened one."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None
