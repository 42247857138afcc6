"""The sandbox API: results, outcomes, names, retries, isolation levels and the process fallback."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pytest

from cotkit.errors import ConfigError
from cotkit.sandbox import (
    Job,
    Limits,
    Outcome,
    Sandbox,
    SandboxIsolationWarning,
    SandboxStartError,
    pool,
)
from cotkit.sandbox import isolation as iso

O = Outcome
# A generous wall-clock backstop: on a loaded machine CPU-bound programs must still hit the CPU limit first.
SMALL = Limits(cpu_seconds=0.5, wall_seconds=6.0, memory_mb=128, max_output_bytes=2048)




@pytest.fixture(scope="module")
def sb(require_bwrap):
    with Sandbox(workers=2, limits=SMALL, isolation="bwrap") as box:
        yield box


def sol(body: str) -> str:
    return "def solution():\n" + "".join(f"    {line}\n" for line in body.splitlines())


# ---------------------------------------------------------------------------------- results


@pytest.mark.parametrize(
    "body, value, type_name",
    [
        ("return 6 * 7", 42, "int"),
        ("return 0.1 + 0.2", 0.1 + 0.2, "float"),
        ("return 'eighteen'", "eighteen", "str"),
        ("return True", True, "bool"),
        ("return (1, [2.5, 'x'])", [1, [2.5, "x"]], "tuple"),
        ("from fractions import Fraction\nreturn Fraction(3, 4)", "3/4", "fractions.Fraction"),
        ("from decimal import Decimal\nreturn Decimal('2.50')", "2.50", "decimal.Decimal"),
        ("return 1 + 2j", "(1+2j)", "complex"),
        ("return {'a': 1}", "{'a': 1}", "dict"),
    ],
)
def test_returned_values_come_back_as_plain_json(sb, body, value, type_name):
    r = sb.run(sol(body), entry="solution")
    assert r.outcome is O.OK, r.summary()
    assert r.has_value and r.value == value and type(r.value) is type(value)
    assert r.value_type == type_name
    json.dumps(r.to_dict())  # every result is JSON-ready


def test_script_mode_prints_its_answer(sb):
    r = sb.run("x = 48 + 24\nprint('working...')\nprint(f'The answer is {x}')\n")
    assert r.outcome is O.OK and not r.has_value
    assert r.stdout == "working...\nThe answer is 72\n"
    assert r.answer_text() == "The answer is 72"


def test_programs_run_as_main(sb):
    r = sb.run("def solution():\n    return 3\nif __name__ == '__main__':\n    print(solution())\n", entry="solution")
    assert (r.value, r.stdout) == (3, "3\n")


@pytest.mark.parametrize(
    "code, outcome, error",
    [
        (sol("x = 1"), O.NO_RESULT, "solution() returned None"),
        ("x = 1\n", O.NO_RESULT, "defines no function solution()"),
        ("def solution(:\n", O.RUNTIME_ERROR, "SyntaxError"),
        (sol("return [1][5]"), O.RUNTIME_ERROR, "IndexError: list index out of range"),
        ("import sys\nsys.exit(0)\n" + sol("return 1"), O.NO_RESULT, "sys.exit()"),
        ("import sys\nsys.exit(3)\n", O.RUNTIME_ERROR, "SystemExit: 3"),
        (sol("return input()"), O.RUNTIME_ERROR, "EOFError"),  # stdin is closed
        ("import os\nos._exit(4)\n", O.RUNTIME_ERROR, "exited with status 4"),
        (sol("raise KeyboardInterrupt"), O.RUNTIME_ERROR, "KeyboardInterrupt"),
    ],
)
def test_failures_have_typed_outcomes(sb, code, outcome, error):
    entry = None if "sys.exit(3)" in code or "_exit(4)" in code else "solution"
    r = sb.run(code, entry=entry)
    assert r.outcome is outcome, r.summary()
    assert error in r.error


def test_script_exit_zero_is_ok(sb):
    r = sb.run("import sys\nprint(5)\nsys.exit(0)\n")
    assert r.outcome is O.OK and r.stdout == "5\n"


def test_traceback_shows_the_programs_own_lines(sb):
    r = sb.run(sol("apples = 5\nper_box = 0\nreturn apples / per_box"), entry="solution")
    assert r.outcome is O.RUNTIME_ERROR
    assert 'File "<program>", line 4, in solution' in r.traceback
    assert "return apples / per_box" in r.traceback
    assert "worker.py" not in r.traceback


def test_output_is_capped(sb):
    r = sb.run("print('a' * 100)\n")
    assert r.outcome is O.OK and r.stdout == "a" * 100 + "\n"
    r = sb.run("print('a' * 5000)\n")
    assert r.outcome is O.OUTPUT_LIMIT and len(r.stdout) <= SMALL.max_output_bytes


def test_threads_are_allowed(sb):
    code = "import threading\nout = []\nt = threading.Thread(target=lambda: out.append(7))\nt.start()\nt.join()\n" + sol("return out[0]")
    assert sb.run(code, entry="solution").value == 7


def test_cpu_time_decides_not_wall_time(sb):
    """A program inside its CPU limit is ok even when it waits; the wall clock is only a backstop."""
    r = sb.run("import time\ntime.sleep(0.8)\n" + sol("return 1"), entry="solution")
    assert r.outcome is O.OK and r.wall_seconds >= 0.8 and r.cpu_seconds < SMALL.cpu_seconds
    r = sb.run("import time\ntime.sleep(10)\n", limits=Limits(cpu_seconds=0.5, wall_seconds=1.0))
    assert r.outcome is O.TIMEOUT and "wall-clock limit of 1 s" in r.error


def test_per_call_limits(sb):
    r = sb.run("x = 0\nwhile True:\n    x += 1\n", limits=Limits(cpu_seconds=0.2, wall_seconds=4))
    assert r.outcome is O.TIMEOUT and 0.2 <= r.cpu_seconds < 0.45


def test_memory_limit_is_beyond_the_interpreter(sb):
    ok = sb.run(sol("return len(bytearray(64 << 20))"), entry="solution")
    assert ok.outcome is O.OK and ok.value == 64 << 20
    big = sb.run(sol("return len(bytearray(256 << 20))"), entry="solution")
    assert big.outcome is O.MEMORY_LIMIT and "128 MB" in big.error


# ------------------------------------------------------------------------- names (exec scorer)


def test_names_bound_by_a_program_prefix(sb):
    prefix = "total = 48\nhalf = total / 2\n"
    r = sb.run(prefix, names=True)
    assert r.outcome is O.OK and r.names == ("total", "half")
    r = sb.run(prefix + "import math\nboth = total + half\n", names=True)
    assert r.names == ("total", "half", "math", "both")
    assert sb.run(prefix).names is None  # only when asked


def test_names_include_the_entry_functions_locals(sb):
    code = "rate = 3\ndef solution():\n    hours = 4\n    pay = rate * hours\n"
    r = sb.run(code, entry="solution", names=True)
    assert r.outcome is O.NO_RESULT  # a prefix of the body returns nothing yet
    assert r.names == ("rate", "solution", "hours", "pay")


def test_names_survive_a_failing_prefix(sb):
    r = sb.run("a = 1\nb = a / 0\n", names=True)
    assert r.outcome is O.RUNTIME_ERROR and r.names == ("a",)


# -------------------------------------------------------------------------------- the pool


def test_run_many_keeps_input_order_across_workers(sb):
    codes = [("import time\ntime.sleep(0.2)\n" if i % 3 == 0 else "") + sol(f"return {i}") for i in range(12)]
    results = sb.run_many(codes, entry="solution")
    assert [r.value for r in results] == list(range(12))
    mixed = sb.run_many([Job(sol("return 1"), "solution"), Job("print(2)"), Job("x = 3", names=True)])
    assert [(r.value, r.stdout, r.names) for r in mixed] == [(1, "", None), (None, "2\n", None), (None, "", ("x",))]
    assert sb.run_many([]) == []


def test_programs_never_run_in_the_host_process(sb):
    r = sb.run(sol("import os\nreturn [os.getpid(), os.getuid()]"), entry="solution")
    assert r.value[0] != os.getpid()
    # a normal user's sandbox runs as "nobody" in its user namespace; root's as an unused host uid
    assert r.value[1] in (iso.HOST_UIDS if os.geteuid() == 0 else [iso.SANDBOX_UID])


def kill_worker(box: Sandbox) -> None:
    """Kill bwrap and the worker inside it (started as root, the worker outlives a killed bwrap
    until its pipe closes: bwrap keeps no right to signal the uid the worker switched to)."""
    proc = box._workers[0].proc
    worker = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.killpg(proc.pid, 9)
    for pid in worker:
        os.kill(int(pid), 9)
    proc.wait()


def test_a_dead_worker_is_replaced_and_the_program_retried(require_bwrap):
    with Sandbox(workers=1, limits=SMALL, isolation="bwrap") as box:
        assert box.run(sol("return 1"), entry="solution").attempts == 1
        kill_worker(box)  # the sandbox fails under the next program
        r = box.run(sol("return 2"), entry="solution")
        assert r.outcome is O.OK and r.value == 2 and r.attempts == 2


def test_workers_outlive_the_thread_that_started_them(require_bwrap):
    """bwrap's --die-with-parent follows the starting *thread*; workers must survive a caller's thread."""
    import threading

    with Sandbox(workers=1, limits=SMALL, isolation="bwrap") as box:
        t = threading.Thread(target=box.run, args=("pass",))
        t.start()
        t.join()
        time.sleep(0.2)
        r = box.run(sol("return 3"), entry="solution")
        assert r.value == 3 and r.attempts == 1


def test_a_persistent_sandbox_failure_is_a_sandbox_error(require_bwrap, monkeypatch):
    with Sandbox(workers=1, limits=SMALL, isolation="bwrap", retries=1) as box:
        box.run("pass")
        kill_worker(box)
        broken = iso.WorkerSpec("bwrap", ["/bin/false"], {}, None)
        monkeypatch.setattr(iso, "bwrap_spec", lambda *a, **k: broken)
        r = box.run(sol("return 2"), entry="solution")
        assert r.outcome is O.SANDBOX_ERROR and r.attempts == 2
        assert "worker" in r.error


def test_a_sandbox_that_never_starts_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(iso, "find_bwrap", lambda: "/nonexistent/bwrap")
    with Sandbox(workers=1, isolation="bwrap") as box:
        with pytest.raises(SandboxStartError, match="bwrap sandbox cannot start"):
            box.run("pass")


def test_closed_sandbox_stops_its_workers(require_bwrap):
    box = Sandbox(workers=2, limits=SMALL, isolation="bwrap")
    box.run_many(["pass", "pass"])
    procs = [w.proc for w in box._workers]
    assert len(procs) == 2
    box.close()
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(RuntimeError, match="closed"):
        box.run("pass")


def test_site_packages_are_importable_read_only(require_bwrap):
    limits = Limits(cpu_seconds=10, memory_mb=512)
    with Sandbox(workers=1, limits=limits, isolation="bwrap", preload=("sympy",)) as box:
        r = box.run(sol("import sympy, os\nreturn [str(sympy.Rational(3, 6)), os.access(sympy.__file__, os.W_OK)]"), entry="solution")
        assert r.value == ["1/2", False], r.summary()
    with Sandbox(workers=1, limits=SMALL, isolation="bwrap", site_packages=False) as box:
        r = box.run("import sympy\n")
        assert r.outcome is O.RUNTIME_ERROR and "ModuleNotFoundError" in r.error


def test_a_virtual_environment_under_host_tmp_is_still_importable(require_bwrap, tmp_path, monkeypatch):
    """The sandbox's /tmp is a fresh tmpfs: site-packages under the host's /tmp are mounted elsewhere."""
    site = tmp_path / "venv-site"
    site.mkdir()
    (site / "cotkit_probe_module.py").write_text("VALUE = 42\n")
    assert str(site.resolve()).startswith("/tmp/")
    monkeypatch.setattr(iso, "site_packages", lambda: [str(site.resolve())])
    with Sandbox(workers=1, limits=SMALL, isolation="bwrap", preload=()) as box:
        r = box.run(sol("import cotkit_probe_module\nreturn cotkit_probe_module.VALUE"), entry="solution")
    assert r.value == 42, r.summary()


@pytest.mark.parametrize(
    "kwargs",
    [dict(cpu_seconds=0), dict(cpu_seconds=float("inf")), dict(memory_mb=0), dict(max_open_files=3), dict(wall_seconds=-1)],
)
def test_bad_limits_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        Limits(**kwargs)


def test_bad_isolation_name(monkeypatch):
    with pytest.raises(ConfigError, match="isolation must be one of"):
        Sandbox(isolation="docker")
    monkeypatch.setenv(iso.ISOLATION_ENV, "chroot")
    with pytest.raises(ConfigError, match="chroot"):
        Sandbox()


# ----------------------------------------------------------------- the weaker process fallback


@pytest.fixture
def fresh_auto(monkeypatch):
    """Forget which isolation `auto` chose and which warnings were given."""
    monkeypatch.setattr(pool, "_AUTO", {})
    monkeypatch.setattr(pool, "_WARNED", set())


def test_auto_without_bwrap_falls_back_loudly(monkeypatch, fresh_auto, capsys):
    monkeypatch.setattr(iso, "find_bwrap", lambda: None)
    with pytest.warns(SandboxIsolationWarning, match="WITHOUT bubblewrap"):
        with Sandbox(workers=1, limits=SMALL) as box:
            r = box.run(sol("return 5"), entry="solution")
    assert r.outcome is O.OK and r.value == 5
    assert r.isolation.startswith("process")
    assert "WARNING" in capsys.readouterr().err


def test_auto_uses_bwrap_where_it_works(require_bwrap, fresh_auto):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SandboxIsolationWarning)
        with Sandbox(workers=1, limits=SMALL) as box:
            assert box.isolation == "bwrap+seccomp"
            assert box.run("pass").isolation == "bwrap+seccomp"


def test_process_fallback_contains_the_basics(fresh_auto):
    with pytest.warns(SandboxIsolationWarning):
        box = Sandbox(workers=2, limits=SMALL, isolation="process")
    with box:
        results = box.run_many(
            [
                sol("import os\nreturn os.getpid()"),
                "while True:\n    pass\n",
                "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n",
                "import os\nos.fork()\n",
                "print('z' * 10000)\n",
            ],
            entry=None,
        )
        pid = box.run(sol("import os\nreturn os.getpid()"), entry="solution")
    assert pid.outcome is O.OK and pid.value != os.getpid() and pid.isolation == "process+seccomp"
    assert [r.outcome for r in results[1:]] == [O.TIMEOUT, O.MEMORY_LIMIT, O.RUNTIME_ERROR, O.OUTPUT_LIMIT]


def test_process_fallback_kills_daemons(fresh_auto):
    """Without a PID namespace the worker is a subreaper and kills every descendant it inherits."""
    daemon = (
        "import os, time\n"
        "r, w = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode())\n"
        "        time.sleep(30)\n"
        "    os._exit(0)\n"
        "pid = int(os.read(r, 20))\n" + sol("return pid")
    )
    limits = Limits(cpu_seconds=1, wall_seconds=3, memory_mb=128, allow_fork=True)
    with pytest.warns(SandboxIsolationWarning):
        box = Sandbox(workers=1, limits=limits, isolation="process")
    with box:
        r = box.run(daemon, entry="solution")
        assert r.outcome is O.OK and r.isolation == "process"
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{r.value}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{r.value}")
