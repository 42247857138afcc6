"""The hard time limit: killed and replaced workers, from any thread, with no leaked process."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cotkit.reading.timelimit import TimeLimitExceeded, WorkerFailed, WorkerPool

LIMIT = 0.5
# Generous slack for a loaded 2-core machine: a kill and a reply take milliseconds, not seconds.
SLACK = 3.0


# Functions the workers run: they import this module by name (the worker gets the parent's sys.path).
def c_loop_forever() -> int:
    """A hang inside C code, where a signal-based time limit cannot interrupt."""
    return sum(range(10**15))


def sleep_then(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def raise_value_error() -> None:
    raise ValueError("bad input 42")


def allocate(n_bytes: int) -> int:
    return len(bytearray(n_bytes))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie still answers kill(0); its state in /proc tells
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(2, timeout=LIMIT)
    yield p
    p.close()


def test_workers_start_lazily_and_return_plain_data():
    p = WorkerPool(1, timeout=5)
    assert p.pids() == []  # nothing started by the constructor
    assert p.call(math.sqrt, 16.0) == 4.0
    assert p.call(sleep_then, 0, {"a": [1, 2]}) == {"a": [1, 2]}
    assert len(p.pids()) == 1
    p.close()
    assert p.pids() == []


def test_exception_in_worker_is_reported_with_its_type(pool):
    with pytest.raises(WorkerFailed) as err:
        pool.call(raise_value_error)
    assert err.value.exc_type == "ValueError" and "bad input 42" in err.value.message
    assert pool.call(math.sqrt, 9.0) == 3.0  # the worker survives an ordinary exception


def _timed_hang(pool: WorkerPool) -> tuple[float, type]:
    start = time.monotonic()
    try:
        pool.call(c_loop_forever)
    except Exception as e:
        return time.monotonic() - start, type(e)
    return time.monotonic() - start, type(None)


def test_hang_in_c_code_times_out_from_the_main_thread(pool):
    pool.call(math.sqrt, 1.0)  # workers started: the limit counts from here
    before = set(pool.pids())
    seconds, kind = _timed_hang(pool)
    assert kind is TimeLimitExceeded
    assert LIMIT <= seconds < LIMIT + SLACK
    killed = before - set(pool.pids())
    assert killed and all(_gone(pid) for pid in killed)
    assert pool.call(math.sqrt, 4.0) == 2.0  # a fresh worker took its place


def test_hang_times_out_from_a_thread(pool):
    pool.call(math.sqrt, 1.0)
    result = {}
    t = threading.Thread(target=lambda: result.update(got=_timed_hang(pool)))
    t.start()
    t.join(timeout=LIMIT + 10 * SLACK)
    assert not t.is_alive()
    seconds, kind = result["got"]
    assert kind is TimeLimitExceeded and seconds < LIMIT + SLACK
    assert pool.call(math.sqrt, 25.0) == 5.0


def test_hangs_time_out_from_a_thread_pool_executor(pool):
    pool.call(math.sqrt, 1.0)
    with ThreadPoolExecutor(max_workers=3) as ex:
        futures = [ex.submit(_timed_hang, pool) for _ in range(2)] + [ex.submit(pool.call, math.sqrt, 49.0)]
        results = [f.result(timeout=60) for f in futures]
    for seconds, kind in results[:2]:
        assert kind is TimeLimitExceeded
    assert results[2] == 7.0
    assert pool.call(math.sqrt, 64.0) == 8.0


def test_map_runs_tasks_side_by_side_and_keeps_order(pool):
    pool.call(math.sqrt, 1.0)
    start = time.monotonic()
    outs = pool.map(sleep_then, [(0.01, "a"), (30, "never"), (0.01, "b"), (30, "never"), (0.01, "c")], timeout=LIMIT)
    elapsed = time.monotonic() - start
    assert [o.value for o in outs] == ["a", None, "b", None, "c"]
    assert [type(o.error) for o in outs] == [type(None), TimeLimitExceeded, type(None), TimeLimitExceeded, type(None)]
    # two overruns on two workers run side by side: about one limit, plus replacing workers
    assert elapsed < 2 * LIMIT + 2 * SLACK


def test_memory_limit_turns_a_blow_up_into_an_error():
    p = WorkerPool(1, timeout=20, memory_mb=600)
    try:
        with pytest.raises(WorkerFailed) as err:
            p.call(allocate, 2 * 1024**3)
        assert err.value.exc_type == "MemoryError"
        assert p.call(allocate, 1000) == 1000
    finally:
        p.close()


def test_close_leaves_no_process_behind():
    p = WorkerPool(2, timeout=LIMIT)
    p.map(sleep_then, [(0, 1), (0, 2)])
    with pytest.raises(TimeLimitExceeded):
        p.call(c_loop_forever)
    p.call(math.sqrt, 1.0)
    pids = p.pids()
    assert pids
    p.close()
    deadline = time.monotonic() + 5
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids)
    assert p.pids() == []


def test_workers_exit_when_their_parent_dies_mid_hang(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, threading, time
            sys.path[:0] = {sys.path!r}
            from cotkit.reading.timelimit import WorkerPool
            from test_timelimit import c_loop_forever
            import math
            pool = WorkerPool(1, timeout=600)
            pool.call(math.sqrt, 1.0)
            print(pool.pids()[0], flush=True)
            threading.Thread(target=pool.call, args=(c_loop_forever,), daemon=True).start()
            time.sleep(0.5)
            os._exit(0)  # no cleanup at all, as if killed
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert parent.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        WorkerPool(0)
    with pytest.raises(ValueError):
        WorkerPool(1, timeout=0)
