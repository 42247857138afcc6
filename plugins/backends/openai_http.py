"""The `openai` backend: any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp, TGI, OpenAI, ...).

Text prompts go to `POST {base_url}/completions`, chat prompts to `POST {base_url}/chat/completions`,
through the official `openai` package's async client (extra `cotkit[openai]`, imported when the
first request is sent): one connection pool, `concurrency` requests in flight on one thread, and
the client's retries of rate limits, timeouts and server errors, which wait what the server asks
in `Retry-After` when that is short enough (openai 3.x: up to 2 minutes, a longer wait is reported
rather than retried; 1.x: up to 60 s, a longer one backs off as without it) and back off
exponentially otherwise.

The API key is read from the environment variable *named* by `api_key_env` when requests are
sent; the key itself is never stored on the backend, in its options, in errors or logs (error
bodies from the server are scrubbed of it). When that variable is unset no Authorization header is
sent: the client's own fallback to $OPENAI_API_KEY is switched off, so a key is never sent to a
server it was not named for.

Seeds: sample j of prompt i is requested alone with `seed = seeds[i] + j` (vLLM honours per-request
seeds; OpenAI treats them as best effort), so a sample does not depend on the others in the call,
as with the local backends. Greedy requests (temperature 0) are sent once and the answer repeated.
Stop strings are sent to the server (at most `max_stops`: OpenAI accepts 4) and also applied to
the returned text, so a server that ignores some still yields the same cut.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Sequence
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

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: Most of a server's error body shown in a message (after the key is scrubbed from all of it).
ERROR_DETAIL_CHARS = 500
#: What the client is given as its key when $api_key_env is unset: it refuses to start without
#: one, and every request removes the Authorization header made of it (see `_request_headers`).
NO_KEY = "no-key"
INSTALL_HINT = "the openai backend needs the openai package: pip install 'cotkit[openai]'"


@dataclass
class OpenAIConfig:
    """Options of the `openai` backend (`-B KEY=VALUE`, `backend_options:` in a run config)."""

    base_url: str = option("http://127.0.0.1:8000/v1", help="the server's API root, http:// or https://")
    api_key_env: str = option(
        DEFAULT_KEY_ENV, help="NAME of the environment variable that holds the API key (never the key itself)"
    )
    timeout: float = option(120.0, help="seconds to wait for one answer")
    max_retries: int = option(
        3, minimum=0, help="retries of a rate-limited, timed-out or failed request (the server's Retry-After is waited, else 0.5 s, 1 s, 2 s, ...)"
    )
    concurrency: int = option(32, minimum=1, help="requests in flight at once")
    max_stops: int = option(4, minimum=0, help="stop strings sent to the server (OpenAI takes 4); all cut the answer here")

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"backend openai option base_url={self.base_url!r}: expected an http:// or https:// URL")
        self.api_key_env = check_key_env_name(self.api_key_env, "backend openai option api_key_env")


def run_to_completion(coro: Coroutine[Any, Any, Any]) -> Any:
    """`asyncio.run(coro)`, also when called from a running event loop (a notebook): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


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
        #: HTTP requests sent so far (the client's retries included), for callers that account for cost.
        self.requests_sent = 0

    # -- requests ----------------------------------------------------------------------------

    def _key(self) -> str | None:
        key = os.environ.get(self.config.api_key_env)
        return key if key else None

    def _scrub(self, text: str, limit: int | None = None) -> str:
        """`text` without the key or any long piece of it, then cut to `limit` characters."""
        key = self._key()
        return scrub_key(text, key) if limit is None else scrub_and_shorten(text, key, limit)

    async def _count_request(self, _request: Any) -> None:
        self.requests_sent += 1

    def _client(self, openai: Any) -> Any:
        """An `AsyncOpenAI` for this backend's server, key and retries; every HTTP request it sends is counted."""
        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [self._count_request]})
        return openai.AsyncOpenAI(
            api_key=self._key() or NO_KEY, base_url=self.config.base_url, timeout=self.config.timeout,
            max_retries=self.config.max_retries, http_client=http,
        )  # fmt: skip

    def _request_headers(self, openai: Any) -> dict[str, Any]:
        """No Authorization header at all when $api_key_env is unset (the client accepts the removal per request only)."""
        return {} if self._key() else {"Authorization": openai.Omit()}

    def _api_error(self, openai: Any, e: Exception, path: str) -> ModelError:
        """The client's exception as one line naming the URL, without the key or any piece of it."""
        url = f"{self.config.base_url}{path}"
        if isinstance(e, openai.APIStatusError):
            detail = self._scrub(e.response.text, ERROR_DETAIL_CHARS)
            if e.status_code in (401, 403):
                where = f"${self.config.api_key_env}" + ("" if self._key() else " (not set)")
                return ModelError(f"{url}: HTTP {e.status_code}, the server refused the API key from {where}: {detail}")
            return ModelError(f"{url}: HTTP {e.status_code}: {detail}")
        if isinstance(e, openai.APITimeoutError):
            return ModelError(f"{url}: no answer within {self.config.timeout:g} s ({self.config.max_retries} retries)")
        reason = e.__cause__ or e
        return ModelError(f"{url}: cannot reach the server ({self._scrub(str(reason))})")

    async def _one(self, openai: Any, client: Any, prompt: Prompt, params: SamplingParams, seed: int | None) -> Generation:
        """One completion for one prompt."""
        stops = [s for s in (params.stop or []) if s]
        body: dict[str, Any] = {
            "model": self.model_name,
            "n": 1,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "extra_headers": self._request_headers(openai),
        }
        if stops and self.config.max_stops:
            body["stop"] = stops[: self.config.max_stops]
        if seed is not None:
            body["seed"] = seed
        chat = not isinstance(prompt, str)
        path = "/chat/completions" if chat else "/completions"
        try:
            if chat:
                answer = await client.chat.completions.create(messages=list(prompt), **body)
            else:
                answer = await client.completions.create(prompt=prompt, **body)
        except openai.APIError as e:
            raise self._api_error(openai, e, path) from None
        try:
            choice = answer.choices[0]
            text = (choice.message.content or "") if chat else choice.text
        except (IndexError, TypeError, AttributeError):
            raise ModelError(f"{self.config.base_url}{path}: unexpected answer shape: {self._scrub(str(answer), 300)}") from None
        finish = "length" if choice.finish_reason == "length" else "stop"
        cut = cut_at_stop(text or "", stops)
        if cut is not None:
            text, finish = cut, "stop"
        tokens = answer.usage.completion_tokens if getattr(answer, "usage", None) else 0
        return Generation(text or "", int(tokens or 0), finish)

    async def _all(self, jobs: list[tuple[Prompt, int | None]], params: SamplingParams) -> list[Generation]:
        """Every job's generation, in job order, `concurrency` requests at a time; the first error cancels the rest."""
        try:
            import openai
        except ImportError as e:
            raise ModelError(f"{INSTALL_HINT} ({e})") from None
        slots = asyncio.Semaphore(self.config.concurrency)

        async def bounded(prompt: Prompt, seed: int | None) -> Generation:
            async with slots:
                return await self._one(openai, client, prompt, params, seed)

        async with self._client(openai) as client:
            tasks = [asyncio.ensure_future(bounded(prompt, seed)) for prompt, seed in jobs]
            try:
                return await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)  # let them end before the client closes

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
        per_prompt = 1 if greedy else params.n
        jobs: list[tuple[Prompt, int | None]] = []
        for i, prompt in enumerate(prompts):
            base = seeds[i] if seeds is not None else params.seed
            jobs.extend((prompt, None if greedy else (base + j) & ((1 << 63) - 1)) for j in range(per_prompt))
        flat = run_to_completion(self._all(jobs, params)) if jobs else []
        rows = [flat[i * per_prompt : (i + 1) * per_prompt] for i in range(len(prompts))]
        if greedy:
            return [[Generation(row[0].text, row[0].n_tokens, row[0].finish_reason) for _ in range(params.n)] for row in rows]
        return rows

    def close(self) -> None:
        """Nothing to free: the model lives in the server, and each `generate` closes its own client."""
