"""The `openai` backend: any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp, TGI, OpenAI, ...).

Text prompts go to `POST {base_url}/completions`, chat prompts to `POST {base_url}/chat/completions`.
Standard library only (urllib and a thread pool), so it imports in microseconds and needs nothing
installed. The API key is read from the environment variable *named* by `api_key_env` when a
request is sent; the key itself is never stored on the backend, in its options, in errors or logs
(error bodies from the server are scrubbed of it).

Seeds: sample j of prompt i is requested alone with `seed = seeds[i] + j` (vLLM honours per-request
seeds; OpenAI treats them as best effort), so a sample does not depend on the others in the call,
as with the local backends. Greedy requests (temperature 0) are sent once and the answer repeated.
Stop strings are sent to the server (at most `max_stops`: OpenAI accepts 4) and also applied to
the returned text, so a server that ignores some still yields the same cut.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cotkit import (
    Backend,
    ConfigError,
    Generation,
    ModelError,
    Prompt,
    SamplingParams,
    check_key_env_name,
    option,
    refuse_secrets_in_options,
    scrub_and_shorten,
    scrub_key,
)

from .common import cut_at_stop

#: HTTP statuses worth retrying: rate limits and transient server errors.
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: Most of a server's error body shown in a message (after the key is scrubbed from all of it).
ERROR_DETAIL_CHARS = 500
#: Most of an error body read at all: enough for any real message, little to scrub.
ERROR_BODY_READ_BYTES = 64 * 1024


@dataclass
class OpenAIConfig:
    """Options of the `openai` backend (`-B KEY=VALUE`, `backend_options:` in a run config)."""

    base_url: str = option("http://127.0.0.1:8000/v1", help="the server's API root, http:// or https://")
    api_key_env: str = option(
        DEFAULT_KEY_ENV, help="NAME of the environment variable that holds the API key (never the key itself)"
    )
    timeout: float = option(120.0, help="seconds to wait for one answer")
    max_retries: int = option(3, minimum=0, help="retries of a rate-limited or failed request (waits 1 s, 2 s, 4 s, ...)")
    concurrency: int = option(4, minimum=1, help="requests in flight at once")
    max_stops: int = option(4, minimum=0, help="stop strings sent to the server (OpenAI takes 4); all cut the answer here")

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"backend openai option base_url={self.base_url!r}: expected an http:// or https:// URL")
        self.api_key_env = check_key_env_name(self.api_key_env, "backend openai option api_key_env")


class OpenAIHTTPBackend(Backend):
    """An OpenAI-compatible HTTP server (`/v1/completions`, `/v1/chat/completions`) as a sampling backend."""

    name = "openai"
    Config = OpenAIConfig

    def __init__(self, model: str, **options: Any):
        # Before anything can name an option: `api_key=...` gets the message that says where a key goes.
        refuse_secrets_in_options(options, "backend openai option")
        if not str(model).strip():
            raise ConfigError("backend openai needs the served model name (--teacher-model / model=)")
        super().__init__(model, **options)
        #: HTTP requests sent so far (retries included), for callers that account for cost.
        self.requests_sent = 0
        self._lock = threading.Lock()

    # -- requests ----------------------------------------------------------------------------

    def _key(self) -> str | None:
        key = os.environ.get(self.config.api_key_env)
        return key if key else None

    def _scrub(self, text: str, limit: int | None = None) -> str:
        """`text` without the key or any long piece of it, then cut to `limit` characters."""
        key = self._key()
        return scrub_key(text, key) if limit is None else scrub_and_shorten(text, key, limit)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON and return the decoded answer, retrying rate limits and transient failures."""
        url = f"{self.config.base_url}{path}"
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        delay = 1.0
        for attempt in range(self.config.max_retries + 1):
            with self._lock:
                self.requests_sent += 1
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                body = e.read(ERROR_BODY_READ_BYTES).decode("utf-8", "replace")
                detail = self._scrub(body, ERROR_DETAIL_CHARS)
                if e.code in RETRY_STATUSES and attempt < self.config.max_retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                if e.code in (401, 403):
                    where = f"${self.config.api_key_env}" + ("" if key else " (not set)")
                    raise ModelError(f"{url}: HTTP {e.code}, the server refused the API key from {where}: {detail}") from None
                raise ModelError(f"{url}: HTTP {e.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt < self.config.max_retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                reason = getattr(e, "reason", e)
                raise ModelError(f"{url}: cannot reach the server ({self._scrub(str(reason))})") from None
            except json.JSONDecodeError as e:
                raise ModelError(f"{url}: the answer is not JSON ({e.msg})") from None
        raise ModelError(f"{url}: no answer after {self.config.max_retries + 1} attempts")  # pragma: no cover

    def _one(self, prompt: Prompt, params: SamplingParams, seed: int | None) -> Generation:
        """One completion for one prompt."""
        stops = [s for s in (params.stop or []) if s]
        body: dict[str, Any] = {
            "model": self.model_name,
            "n": 1,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if stops and self.config.max_stops:
            body["stop"] = stops[: self.config.max_stops]
        if seed is not None:
            body["seed"] = seed
        if isinstance(prompt, str):
            answer = self._post("/completions", {**body, "prompt": prompt})
        else:
            answer = self._post("/chat/completions", {**body, "messages": list(prompt)})
        try:
            choice = answer["choices"][0]
            text = choice["text"] if isinstance(prompt, str) else (choice["message"].get("content") or "")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ModelError(f"{self.config.base_url}: unexpected answer shape: {self._scrub(json.dumps(answer), 300)}") from None
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        cut = cut_at_stop(text, stops)
        if cut is not None:
            text, finish = cut, "stop"
        usage = answer.get("usage") or {}
        return Generation(text, int(usage.get("completion_tokens") or 0), finish)

    # -- the Backend interface ---------------------------------------------------------------

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        progress: bool = True,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Generation]]:
        """`params.n` generations per prompt, in prompt order; requests run `concurrency` at a time."""
        if params.n < 1 or params.max_new_tokens < 1 or params.temperature < 0 or not 0 < params.top_p <= 1:
            raise ConfigError(f"invalid sampling parameters {params}")
        if seeds is not None and len(seeds) != len(prompts):
            raise ConfigError(f"generate: {len(seeds)} seeds for {len(prompts)} prompts")
        greedy = params.temperature == 0
        jobs: list[tuple[int, int, int | None]] = []
        for i in range(len(prompts)):
            base = seeds[i] if seeds is not None else params.seed
            for j in range(1 if greedy else params.n):
                jobs.append((i, j, None if greedy else (base + j) & ((1 << 63) - 1)))
        grid: list[list[Generation | None]] = [[None] * params.n for _ in prompts]
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            results = pool.map(lambda job: self._one(prompts[job[0]], params, job[2]), jobs)
            for (i, j, _), gen in zip(jobs, results):
                grid[i][j] = gen
        if greedy:
            for row in grid:
                row[1:] = [Generation(row[0].text, row[0].n_tokens, row[0].finish_reason) for _ in range(params.n - 1)]
        return [[g for g in row if g is not None] for row in grid]

    def close(self) -> None:
        """Nothing to free: the model lives in the server."""
