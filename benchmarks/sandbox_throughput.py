"""Throughput of the program sandbox: the worker pool against one fresh sandboxed interpreter per program.

    python benchmarks/sandbox_throughput.py [--programs 1000] [--baseline-programs 200] [--workers 2]

Both sides run the same trivial GSM8K-style PAL programs (`def solution(): ... return result`)
with the same bubblewrap isolation (namespaces, read-only interpreter, no network, tmpfs working
directory), side by side in this one run, and check every answer:

- pool: `cotkit.sandbox.Sandbox(workers=N)`: N long-lived sandboxed workers, one fork per
  program (resource limits and the seccomp filter applied in each child).
- baseline: what a harness without a worker pool does: for each program start a fresh
  `bwrap ... python -I -S -c HARNESS` (same mounts and namespaces), N at a time.

Targets (issue 5): the pool runs at least 150 programs/s on a 2-core machine and at least 5x the
baseline. Timings on a shared machine are noisy; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from cotkit.sandbox import Sandbox
from cotkit.sandbox import isolation as iso

TEMPLATE = '''def solution():
    """{name} sold {a} clips in April and half as many in May. How many clips did {name} sell in total?"""
    clips_april = {a}
    clips_may = clips_april / 2
    bonus = {b} * 3
    result = clips_april + clips_may + bonus
    return result
'''

# The baseline's in-sandbox harness: exec the program, call solution(), print the result as JSON.
HARNESS = (
    "import json,sys\n"
    "g={'__name__':'__main__'}\n"
    "exec(compile(sys.argv[1],'<program>','exec'),g)\n"
    "sys.stdout.write(json.dumps(g['solution']()))\n"
)


def programs(n: int, seed: int = 0) -> list[tuple[str, float]]:
    """n distinct programs with their expected answers."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = 2 * rng.randint(1, 500), rng.randint(0, 50)
        out.append((TEMPLATE.format(name=rng.choice(["Natalia", "Weng", "Betty"]), a=a, b=b), a + a / 2 + 3 * b))
    return out


def run_pool(progs: list[tuple[str, float]], workers: int) -> tuple[float, int, str, float]:
    """(programs per second, correct answers, isolation level, start-up seconds) for the worker pool."""
    with Sandbox(workers=workers, cpu_seconds=2) as sb:
        t0 = time.perf_counter()
        sb.run_many([progs[0][0]] * workers, entry="solution")  # start the workers (not timed below)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = sb.run_many([code for code, _ in progs], entry="solution")
        elapsed = time.perf_counter() - t0
        level = sb.isolation
    correct = sum(r.ok and r.value == want for r, (_, want) in zip(results, progs))
    return len(progs) / elapsed, correct, level, startup


def run_baseline(progs: list[tuple[str, float]], workers: int) -> tuple[float, int]:
    """(programs per second, correct answers) for one fresh sandboxed interpreter per program."""
    bwrap = iso.find_bwrap()
    assert bwrap is not None
    spec = iso.bwrap_spec(bwrap, {}, 64, True)
    prefix = spec.argv[: spec.argv.index("--") + 1] + [iso.interpreter(), "-I", "-S", "-B", "-c", HARNESS]

    def one(item: tuple[str, float]) -> bool:
        code, want = item
        proc = subprocess.run([*prefix, code], capture_output=True, text=True, timeout=30, env=spec.env)
        return proc.returncode == 0 and json.loads(proc.stdout) == want

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(one, progs))
    return len(progs) / (time.perf_counter() - t0), sum(ok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=1000, help="programs for the pool")
    ap.add_argument("--baseline-programs", type=int, default=200, help="programs for the baseline")
    ap.add_argument("--workers", type=int, default=2, help="workers (pool) and concurrent interpreters (baseline)")
    args = ap.parse_args(argv)
    problem = iso.bwrap_problem()
    if problem:
        print(f"bubblewrap cannot run here ({problem}); this benchmark measures the bwrap level only", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; workers: {args.workers}")
    base_rate, base_ok = run_baseline(programs(args.baseline_programs, seed=1), args.workers)
    rate, ok, level, startup = run_pool(programs(args.programs), args.workers)
    base_rate2, base_ok2 = run_baseline(programs(args.baseline_programs, seed=2), args.workers)
    baseline = (base_rate + base_rate2) / 2  # measured before and after the pool, to even out load
    print(f"pool ({level}):  {rate:8.1f} programs/s  ({ok}/{args.programs} correct; {args.workers} workers started in {startup:.2f} s)")
    print(f"fresh bwrap interpreter per program: {baseline:8.1f} programs/s  ({base_ok + base_ok2}/{2 * args.baseline_programs} correct)")
    print(f"ratio pool / baseline: {rate / baseline:.1f}x   (targets: >= 150 programs/s and >= 5x)")
    return 0 if ok == args.programs and base_ok + base_ok2 == 2 * args.baseline_programs else 1


if __name__ == "__main__":
    sys.exit(main())
