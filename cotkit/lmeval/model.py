"""A cotkit Backend as an lm-eval model, so `simple_evaluate` samples through cotkit's backends."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from lm_eval.api.model import LM

from cotkit.contracts import Backend, SamplingParams
from cotkit.harness.stepsearch import prompt_key
from cotkit.lmeval.bridge import CHAT_PREFIX


def _prompt(context: str) -> Any:
    if context.startswith(CHAT_PREFIX):
        return json.loads(context[len(CHAT_PREFIX):])
    return context


class CotkitLM(LM):
    """lm-eval's LM interface over a cotkit Backend (generation and log-likelihoods)."""

    def __init__(self, backend: Backend, seed: int = 0, max_new_tokens: int = 256, progress: bool = True):
        super().__init__()
        self.backend = backend
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        #: Each prompt's generations' meta beyond the text (a thinking backend's thoughts), by prompt key, in sample order.
        self.generation_meta: dict[str, list[dict[str, Any]]] = {}

    def _params(self, kwargs: dict[str, Any], n: int) -> SamplingParams:
        kwargs = dict(kwargs)
        until = kwargs.pop("until", None) or []
        if isinstance(until, str):
            until = [until]
        do_sample = kwargs.pop("do_sample", None)
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        if do_sample is False:
            temperature = 0.0
        return SamplingParams(
            n=n,
            temperature=temperature,
            top_p=float(kwargs.pop("top_p", 1.0) or 1.0),
            max_new_tokens=int(kwargs.pop("max_gen_toks", self.max_new_tokens)),
            stop=list(until),
            seed=self.seed,
        )

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """One completion per request; identical requests (lm-eval `repeats`) become n samples of one prompt."""
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            context, kwargs = req.args
            groups[(context, json.dumps(kwargs, sort_keys=True, default=str))].append(i)
        by_shape: dict[tuple[str, int], list[tuple[str, list[int]]]] = defaultdict(list)
        for (context, kwargs_key), idxs in groups.items():
            by_shape[(kwargs_key, len(idxs))].append((context, idxs))
        out: list[str] = [""] * len(requests)
        for (kwargs_key, n), items in by_shape.items():
            params = self._params(json.loads(kwargs_key), n)
            gens = self.backend.generate([_prompt(c) for c, _ in items], params, progress=self.progress and not disable_tqdm)
            for (context, idxs), samples in zip(items, gens):
                for i, g in zip(idxs, samples):
                    out[i] = g.text
                if any(g.meta for g in samples):
                    self.generation_meta[prompt_key(_prompt(context))] = [dict(g.meta) for g in samples]
        return out

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Log-likelihood of each continuation, and whether greedy decoding would produce it (when the backend says)."""
        pairs = [(_prompt(r.args[0]), r.args[1]) for r in requests]
        greedy = getattr(self.backend, "loglikelihood_greedy", None)
        if greedy is not None:
            return [(float(ll), bool(g)) for ll, g in greedy(pairs)]
        return [(float(ll), False) for ll in self.backend.loglikelihood(pairs)]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts (empty context)."""
        return [float(ll) for ll in self.backend.loglikelihood([("", r.args[0]) for r in requests])]

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model in its results."""
        return {"cotkit_backend": self.backend.name, "model": self.backend.model_name}
