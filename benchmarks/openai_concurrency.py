"""Requests per second of the `openai` backend at concurrency 4 and 32, side by side.

    python benchmarks/openai_concurrency.py [--requests 256] [--latency 0.25] [--concurrency 4 32]

4 is what the backend sent at once before it moved to the `openai` package's async client; 32 is
its default now. Both run in this one process against tests/fixtures/openai_server.py (the tests'
OpenAI-compatible server, a separate process) serving the tiny random test model, with `--latency`
seconds added to every answer outside the server's model lock, as a remote server's network and
batching time would. Same prompts (distinct, greedy, 4 new tokens) at each concurrency, and the
answers must be identical. A warm-up request per concurrency is not timed.

Expect about min(concurrency / latency, what the server's serialized model calls allow): the
ratio is what the option buys against a server that can take the requests at once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cotkit.contracts import SamplingParams
from cotkit.models import load_backend
from cotkit.testing import build_tiny_model

SERVER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "openai_server.py"


def start_server(model: Path, latency: float, workdir: Path) -> tuple[subprocess.Popen, str]:
    """The test server on a free port; (process, base URL) once it listens."""
    port_file = workdir / "port"
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the tiny model answers fastest on one thread
    cmd = [sys.executable, str(SERVER), "--model", str(model), "--latency", str(latency), "--port", "0", "--port-file", str(port_file)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 180
    while not port_file.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit(f"test server did not start: {(workdir / 'server.log').read_text()[-2000:]}")
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port_file.read_text()}/v1"


def requests_per_second(base_url: str, concurrency: int, prompts: list[str]) -> tuple[float, list[str]]:
    """(requests/s, answers) of one `generate` call over `prompts` at `concurrency`."""
    backend = load_backend("openai", model="tiny", base_url=base_url, concurrency=concurrency, max_retries=0)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=4)
    backend.generate(prompts[:1], params)  # warm-up: imports, first connection
    sent = backend.requests_sent
    start = time.perf_counter()
    grid = backend.generate(prompts, params)
    elapsed = time.perf_counter() - start
    assert backend.requests_sent - sent == len(prompts), "one request per prompt, no retries"
    return len(prompts) / elapsed, [row[0].text for row in grid]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.25, help="seconds the server adds to every answer")
    ap.add_argument("--concurrency", type=int, nargs=2, default=[4, 32])
    args = ap.parse_args()
    prompts = [f"Q: What is {i} plus {i + 1}?\nA:" for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        proc, base_url = start_server(model, args.latency, Path(tmp))
        try:
            low, high = args.concurrency
            rate_low, answers_low = requests_per_second(base_url, low, prompts)
            rate_high, answers_high = requests_per_second(base_url, high, prompts)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert answers_low == answers_high, "the same answers at both concurrencies"
    print(f"{args.requests} requests, server latency {args.latency:g} s, tiny model, greedy, 4 new tokens")
    print(f"concurrency {low:>3}: {rate_low:7.1f} requests/s (at most {low / args.latency:.0f} with this latency)")
    print(f"concurrency {high:>3}: {rate_high:7.1f} requests/s (at most {high / args.latency:.0f} with this latency)")
    print(f"ratio {high}/{low}: {rate_high / rate_low:.2f}x; answers identical: {len(prompts)}/{len(prompts)}")


if __name__ == "__main__":
    main()
