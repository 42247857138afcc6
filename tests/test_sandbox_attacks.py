"""Hostile programs against the sandbox: each is contained, the host keeps working, and the verdict
does not depend on how many workers run at once.

Every attack runs twice, on a pool of 1 worker and on a pool of 2 busy workers, with small limits
(0.5 s of CPU, a 4 s wall-clock backstop, 128 MB) so the whole suite takes seconds. The host-side
evidence (files that must not appear, a localhost listener that must see no connection, secrets
that must not be printed) is checked after the programs ran.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from cotkit.sandbox import Job, Limits, Outcome, Result, Sandbox

REPO = Path(__file__).resolve().parents[1]
O = Outcome



# The wall-clock backstop is 8x the CPU limit so that, even on a loaded machine, CPU-bound attacks
# end on the CPU limit (the verdict must not depend on load); `sleep` pays it in full.
LIMITS = Limits(cpu_seconds=0.5, wall_seconds=4.0, memory_mb=128, max_output_bytes=4096, max_file_mb=4)


@dataclass
class Attack:
    name: str
    code: str
    expect: Outcome
    entry: str | None = None
    check: Callable[[Result, "Host"], None] | None = None


@dataclass
class Host:
    """Things on the host that programs must not reach."""

    tmp: Path  # a host /tmp directory (pytest's), with one existing file
    existing: Path
    home_secret: Path | None  # a secret file in the real home directory
    project_file: Path  # a file name in the project that must not appear
    env_secret: str
    file_secret: str
    port: int  # a TCP listener on 127.0.0.1
    listener: socket.socket

    def targets(self) -> list[str]:
        """Host paths a program tries to create or overwrite."""
        out = [str(self.tmp / "pwned.txt"), str(self.existing), str(self.project_file)]
        if self.home_secret is not None:
            out.append(str(self.home_secret.with_name(self.home_secret.name + "-pwned")))
        return out


def prog(text: str, **fmt: object) -> str:
    text = textwrap.dedent(text).strip() + "\n"
    return text.format(**fmt) if fmt else text


def attacks(h: Host) -> list[Attack]:
    """The attack catalogue (categories of issue 5)."""
    targets = h.targets()

    def host_untouched(r: Result, host: Host) -> None:
        assert not (host.tmp / "pwned.txt").exists()
        assert host.existing.read_text() == "original"
        assert not host.project_file.exists()
        if host.home_secret is not None:
            assert not host.home_secret.with_name(host.home_secret.name + "-pwned").exists()

    def value_is(v: object) -> Callable[[Result, Host], None]:
        def check(r: Result, host: Host) -> None:
            assert r.value == v, r

        return check

    def no_secret(r: Result, host: Host) -> None:
        seen = r.stdout + r.stderr + str(r.value)
        assert host.env_secret not in seen
        assert host.file_secret not in seen
        assert "print(" not in seen  # the project's source is not readable either

    def all_failed(r: Result, host: Host) -> None:
        assert r.value and all(str(v).startswith("failed") for v in r.value), r.value

    return [
        # -- CPU and time ---------------------------------------------------------------------
        Attack("infinite_loop", "while True:\n    pass\n", O.TIMEOUT),
        Attack("sleep", "import time\ntime.sleep(1000)\n", O.TIMEOUT, check=lambda r, h: "wall-clock" in r.error),
        Attack(
            "ignored_signals",
            prog("""
                import signal
                for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM, signal.SIGUSR1):
                    signal.signal(s, signal.SIG_IGN)
                while True:
                    pass
            """),
            O.TIMEOUT,
        ),
        Attack(
            "catch_base_exception",
            prog("""
                while True:
                    try:
                        while True:
                            pass
                    except BaseException:
                        pass
            """),
            O.TIMEOUT,
        ),
        Attack(
            "cpu_in_threads",  # CPU of all threads counts, however many cores run them
            prog("""
                import threading
                def burn():
                    while True:
                        pass
                for _ in range(3):
                    threading.Thread(target=burn, daemon=True).start()
                burn()
            """),
            O.TIMEOUT,
        ),
        # -- memory ---------------------------------------------------------------------------
        Attack("memory_growth", "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n", O.MEMORY_LIMIT),
        Attack("huge_allocation", "def solution():\n    return len(bytearray(10**12))\n", O.MEMORY_LIMIT, entry="solution"),
        Attack("huge_mmap", "import mmap\nm = mmap.mmap(-1, 10**11)\n", O.MEMORY_LIMIT),
        # -- processes ------------------------------------------------------------------------
        Attack("fork_bomb_os_fork", "import os\nwhile True:\n    os.fork()\n", O.RUNTIME_ERROR),
        Attack(
            "fork_bomb_subprocess",
            "import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])\n",
            O.RUNTIME_ERROR,
        ),
        Attack(
            "fork_bomb_multiprocessing",
            prog("""
                import multiprocessing as mp
                def f(x):
                    return x
                if __name__ == "__main__":
                    with mp.Pool(4) as pool:
                        print(pool.map(f, range(100)))
            """),
            O.RUNTIME_ERROR,
        ),
        Attack(
            "fork_through_libc",  # fork(), raw fork/clone3 system calls, vfork: all refused
            prog("""
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                got = [libc.fork(), libc.syscall(57), libc.syscall(435, 0, 0), libc.vfork()]
                def solution():
                    return got
            """),
            O.OK,
            entry="solution",
            check=value_is([-1, -1, -1, -1]),
        ),
        Attack(
            "double_forked_daemon",
            prog("""
                import os, time
                if os.fork() == 0:
                    os.setsid()
                    if os.fork() == 0:
                        time.sleep(1)
                        os.kill(-1, 9)
                    os._exit(0)
                def solution():
                    return 1
            """),
            O.RUNTIME_ERROR,
            entry="solution",
        ),
        # -- output ---------------------------------------------------------------------------
        Attack("stdout_flood", "while True:\n    print('x' * 1000)\n", O.OUTPUT_LIMIT),
        Attack("stderr_flood", "import sys\nwhile True:\n    sys.stderr.write('y' * 1000)\n", O.OUTPUT_LIMIT),
        Attack("big_file", "with open('big', 'wb') as f:\n    f.write(b'x' * (8 << 20))\n", O.OUTPUT_LIMIT),
        Attack(
            "fill_tmpfs",  # many files under the size limit: the tmpfs cap stops it
            "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * (3 << 20))\n    i += 1\n",
            O.RUNTIME_ERROR,
            check=lambda r, h: "No space left" in r.error,
        ),
        Attack(
            "forged_result",  # a value the protocol does not allow, written straight to the channel
            "import os\nos.write(3, b'{\"status\": \"ok\", \"value\": {\"a\": 1}}')\nos._exit(0)\n",
            O.NO_RESULT,
        ),
        Attack(
            "deep_directory_tree",  # too deep for rmtree: the worker is replaced, the verdict stands
            "import os\nfor i in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n" + "def solution():\n    return 5\n",
            O.OK,
            entry="solution",
            check=value_is(5),
        ),
        Attack("result_flood", "import os\nos.write(3, b'[' * 10**6)\nos._exit(0)\n", O.OUTPUT_LIMIT),
        Attack(
            "open_files",
            "handles = [open('/dev/null') for _ in range(100000)]\n",
            O.RUNTIME_ERROR,
            check=lambda r, h: "Too many open files" in r.error,
        ),
        # -- crashes --------------------------------------------------------------------------
        Attack("deep_recursion", "def f(n):\n    return f(n + 1)\nf(0)\n", O.RUNTIME_ERROR, check=lambda r, h: "RecursionError" in r.error),
        Attack(
            "deep_recursion_unlimited",
            # through a C function, so the C stack overflows
            "import sys\nsys.setrecursionlimit(10**8)\nclass A:\n    def __repr__(self):\n        return repr(self)\nrepr(A())\n",
            O.RUNTIME_ERROR,
            check=lambda r, h: "SIGSEGV" in r.error,
        ),
        Attack("segfault_ctypes", "import ctypes\nctypes.string_at(0)\n", O.RUNTIME_ERROR, check=lambda r, h: "SIGSEGV" in r.error),
        Attack("abort", "import os\nos.abort()\n", O.RUNTIME_ERROR, check=lambda r, h: "SIGABRT" in r.error),
        # -- the file system ------------------------------------------------------------------
        Attack(
            "write_outside",
            prog("""
                import os
                out = []
                for i, t in enumerate({targets!r}):
                    try:
                        with open(t, "w") as f:
                            f.write("pwned")
                    except OSError as e:
                        out.append("failed " + type(e).__name__)
                    try:  # through a symlink made in the working directory
                        os.symlink(t, f"link{{i}}")
                        with open(f"link{{i}}", "w") as f:
                            f.write("pwned")
                    except OSError as e:
                        out.append("failed " + type(e).__name__)
                for t in ["/usr/pwned", os.__file__, "/proc/1/root/pwned", "/etc/pwned", "/pwned"]:
                    try:
                        open(t, "a").write("pwned")
                        out.append("wrote " + t)
                    except OSError as e:
                        out.append("failed " + type(e).__name__)
                def solution():
                    return out
            """, targets=targets),
            O.OK,
            entry="solution",
            check=host_untouched,
        ),
        Attack(
            "read_secrets",
            prog("""
                import os
                print(dict(os.environ))
                for p in ["/proc/self/environ", "/proc/1/environ", f"/proc/{{os.getppid()}}/environ", "/proc/1/cmdline",
                          {home!r}, {project!r}, os.path.expanduser("~/.ssh/id_rsa"), "/etc/shadow", "/root/.bash_history"]:
                    try:
                        print(open(p, "rb").read().decode("latin-1"))
                    except OSError as e:
                        print("failed", p, type(e).__name__)
                print(os.listdir("/"), os.listdir("/proc"))
            """, home=str(h.home_secret), project=str(REPO / "cotkit" / "__init__.py")),
            O.OK,
            check=no_secret,
        ),
        # -- signals and the worker -----------------------------------------------------------
        Attack(
            "kill_parent",
            prog("""
                import os, signal
                refused = 0
                for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, signal.SIGINT):
                    for pid in (os.getppid(), 1):
                        try:
                            os.kill(pid, sig)
                        except PermissionError:  # the seccomp filter: no signal to the worker
                            refused += 1
                assert refused == 8
                def solution():
                    return 7
            """),
            O.OK,
            entry="solution",
            check=value_is(7),
        ),
        Attack("kill_process_group", "import os\nos.killpg(0, 9)\n", O.RUNTIME_ERROR, check=lambda r, h: "SIGKILL" in r.error),
        Attack(
            "kill_everything",
            "import os\ntry:\n    os.kill(-1, 9)\nexcept PermissionError:  # refused: there is nothing else it may signal\n    pass\n"
            "def solution():\n    return 7\n",
            O.OK,
            entry="solution",
            check=value_is(7),
        ),
        Attack(
            "hijack_worker",  # write a fake reply into the worker's channel, trace the worker
            prog("""
                import ctypes, os
                out = []
                for p in ["/proc/1/fd/1", "/proc/1/fd/0", "/proc/1/mem"]:
                    try:
                        open(p, "wb").write(b"\\0\\0\\0\\x02{{}}")
                        out.append("wrote " + p)
                    except OSError as e:
                        out.append("failed " + type(e).__name__)
                for fd in range(4, 64):
                    try:
                        os.write(fd, b"x")
                        out.append(f"wrote fd {{fd}}")
                    except OSError:
                        pass
                libc = ctypes.CDLL(None, use_errno=True)
                out.append("failed ptrace" if libc.ptrace(16, 1, 0, 0) == -1 else "attached")
                def solution():
                    return out
            """),
            O.OK,
            entry="solution",
            check=all_failed,
        ),
        # -- network --------------------------------------------------------------------------
        Attack(
            "network",
            prog("""
                import socket
                out = []
                for family, addr in [(socket.AF_INET, ("127.0.0.1", {port})), (socket.AF_INET6, ("::1", {port})),
                                     (socket.AF_INET, ("1.1.1.1", 53)), (socket.AF_INET, ("8.8.8.8", 443))]:
                    try:
                        s = socket.socket(family, socket.SOCK_STREAM)
                        s.settimeout(1)
                        s.connect(addr)
                        out.append("connected " + str(addr))
                    except OSError as e:
                        out.append("failed " + type(e).__name__)
                try:
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("8.8.8.8", 53))
                    out.append("sent udp")
                except OSError as e:
                    out.append("failed " + type(e).__name__)
                try:
                    out.append("resolved " + socket.gethostbyname("example.com"))
                except OSError as e:
                    out.append("failed " + type(e).__name__)
                def solution():
                    return out
            """, port=h.port),
            O.OK,
            entry="solution",
            check=all_failed,
        ),
        # -- guard bypasses (there is no Python-level guard to bypass: the OS does the work) ---
        Attack(
            "bypass_posix",
            prog("""
                import posix
                rc = posix.system("echo pwned > {target}")
                def solution():
                    return rc
            """, target=h.tmp / "pwned.txt"),
            O.OK,
            entry="solution",
            check=lambda r, h: (host_untouched(r, h), r.value != 0),
        ),
        Attack(
            "bypass_reload_os",
            prog("""
                import importlib, os
                importlib.reload(os)
                fd = os.open("{target}", os.O_CREAT | os.O_WRONLY)
            """, target=h.tmp / "pwned.txt"),
            O.RUNTIME_ERROR,
            check=host_untouched,
        ),
        Attack(
            "bypass_ctypes_exec",  # replace the child by a shell: still inside the sandbox
            prog("""
                import ctypes, os
                libc = ctypes.CDLL(None)
                libc.system(b"echo pwned > {target}")
                os.execv("/bin/sh", ["sh", "-c", "echo pwned > {target}; exit 0"])
                def solution():
                    return 1
            """, target=h.tmp / "pwned.txt"),
            O.NO_RESULT,
            entry="solution",
            check=host_untouched,
        ),
        # -- fake results ---------------------------------------------------------------------
        Attack(
            "always_equal",
            prog("""
                class AlwaysEqual:
                    def __eq__(self, other):
                        return True
                    __hash__ = object.__hash__
                def solution():
                    return AlwaysEqual()
            """),
            O.OK,
            entry="solution",
            check=lambda r, h: (isinstance(r.value, str) and r.value_type.endswith("AlwaysEqual")) or pytest.fail(str(r)),
        ),
        Attack(
            "int_subclass_equal",
            "class I(int):\n    def __eq__(self, o):\n        return True\ndef solution():\n    return I(3)\n",
            O.OK,
            entry="solution",
            check=lambda r, h: (type(r.value) is int and r.value == 3) or pytest.fail(str(r)),
        ),
        Attack("nan", "def solution():\n    return float('nan')\n", O.OK, entry="solution",
               check=lambda r, h: (isinstance(r.value, float) and math.isnan(r.value)) or pytest.fail(str(r))),  # fmt: skip
        Attack("huge_integer", "def solution():\n    return 10**5000\n", O.NO_RESULT, entry="solution"),
        Attack("big_integer", "def solution():\n    return 10**200 + 1\n", O.OK, entry="solution", check=value_is(10**200 + 1)),
        Attack(
            "invalid_utf8",
            "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\n')\ndef solution():\n    return '\\udcff\\ud800 x'\n",
            O.OK,
            entry="solution",
            check=lambda r, h: (r.value.encode("utf-8"), r.stdout.encode("utf-8"), "\ufffd" in r.stdout),
        ),
        Attack("garbage_result", "import os\nos.write(3, b'\\xff\\xfe{not json')\nos._exit(0)\n", O.NO_RESULT, entry="solution"),
    ]


@pytest.fixture(scope="module")
def host_side(require_bwrap, tmp_path_factory) -> Host:
    tmp = tmp_path_factory.mktemp("attack-host")
    existing = tmp / "existing.txt"
    existing.write_text("original")
    token = uuid.uuid4().hex
    home_secret = None
    try:
        home_secret = Path.home() / f".cotkit-attack-secret-{token[:8]}"
        home_secret.write_text(f"secret-in-home-{token}")
    except OSError:  # an unwritable home: that part of the attack is left out
        home_secret = None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    env_secret = f"env-secret-{token}"
    os.environ["COTKIT_ATTACK_SECRET"] = env_secret
    h = Host(
        tmp=tmp,
        existing=existing,
        home_secret=home_secret,
        project_file=REPO / f".cotkit-attack-{token[:8]}",
        env_secret=env_secret,
        file_secret=f"secret-in-home-{token}",
        port=listener.getsockname()[1],
        listener=listener,
    )
    yield h
    os.environ.pop("COTKIT_ATTACK_SECRET", None)
    listener.close()
    if home_secret is not None:
        home_secret.unlink(missing_ok=True)
        home_secret.with_name(home_secret.name + "-pwned").unlink(missing_ok=True)
    h.project_file.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def outcomes(host_side: Host) -> dict[int, dict[str, Result]]:
    """Every attack's Result, with a pool of 1 worker and of 2 concurrent workers."""
    catalogue = attacks(host_side)
    out: dict[int, dict[str, Result]] = {}
    for workers in (1, 2):
        with Sandbox(workers=workers, limits=LIMITS, isolation="bwrap", tmpfs_mb=16) as sb:
            results = sb.run_many([Job(a.code, a.entry) for a in catalogue])
            out[workers] = {a.name: r for a, r in zip(catalogue, results)}
            # the host and the pool still work after all of that
            after = sb.run("def solution():\n    return 6 * 7\n", entry="solution")
            assert after.outcome is O.OK and after.value == 42, after
            assert after.attempts == 1
    return out


ATTACK_NAMES = [a.name for a in attacks(Host(Path("/x"), Path("/x/e"), None, Path("/p"), "", "", 1, None))]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_is_contained(name, outcomes, host_side):
    attack = {a.name: a for a in attacks(host_side)}[name]
    result = outcomes[2][name]
    assert result.outcome is attack.expect, f"{name}: {result.summary()}\nstdout={result.stdout[:500]!r}"
    assert result.isolation == "bwrap+seccomp"
    assert result.attempts == 1, "an attack must not pass for a sandbox failure"
    if attack.check:
        attack.check(result, host_side)


def test_verdicts_do_not_depend_on_concurrency(outcomes):
    def verdict(r: Result) -> tuple:
        # object reprs hold addresses and NaN != NaN: compare those by type
        stable = isinstance(r.value, (int, list)) or r.value is None
        error_class = (r.error or "").split(":")[0] if r.outcome is O.RUNTIME_ERROR else None
        return r.outcome, r.value if stable else r.value_type, error_class

    assert {k: verdict(r) for k, r in outcomes[1].items()} == {k: verdict(r) for k, r in outcomes[2].items()}


def test_localhost_listener_saw_no_connection(outcomes, host_side):
    with pytest.raises(BlockingIOError):
        host_side.listener.accept()


def test_timeouts_are_cpu_time_not_wall_time(outcomes):
    loop = outcomes[2]["infinite_loop"]
    assert LIMITS.cpu_seconds <= loop.cpu_seconds < LIMITS.cpu_seconds + 0.3
    assert "CPU time" in loop.error
    threads = outcomes[2]["cpu_in_threads"]
    assert threads.cpu_seconds < LIMITS.cpu_seconds + 0.3


# ------------------------------------------------------------- with forking allowed (NPROC, tree kill)


FORKING = Limits(cpu_seconds=1.0, wall_seconds=3.0, memory_mb=128, max_processes=6, allow_fork=True)


def test_fork_bomb_with_forks_allowed_is_stopped(require_bwrap):
    with Sandbox(workers=1, limits=FORKING, isolation="bwrap") as sb:
        r = sb.run("import os\nwhile True:\n    os.fork()\n")
        assert r.outcome in (O.RUNTIME_ERROR, O.TIMEOUT), r.summary()
        assert r.isolation == "bwrap"
        assert sb.run("def solution():\n    return 1\n", entry="solution").value == 1


def test_daemon_dies_with_its_program(require_bwrap):
    """A double-forked daemon that would act later is killed when its program ends."""
    daemon = prog("""
        import os, time
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.write(w, str(os.getpid()).encode())
                time.sleep(0.5)
                open("/tmp/daemon-was-here", "w").write("x")
                os.kill(-1, 9)
                os._exit(0)
            os._exit(0)
        pid = int(os.read(r, 20))
        def solution():
            return pid
    """)
    later = prog("""
        import os, time
        time.sleep(1.0)
        def solution():
            return [os.path.exists("/proc/{pid}"), os.path.exists("/tmp/daemon-was-here"), sorted(os.listdir("/proc"))[:0]]
    """)
    with Sandbox(workers=1, limits=FORKING, isolation="bwrap") as sb:
        first = sb.run(daemon, entry="solution")
        assert first.outcome is O.OK and isinstance(first.value, int), first.summary()
        second = sb.run(later.replace("{pid}", str(first.value)), entry="solution")
        assert second.outcome is O.OK, second.summary()
        assert second.value == [False, False, []]


def test_no_state_survives_between_programs(require_bwrap):
    write = prog("""
        import os
        open("/tmp/left-behind", "w").write("x")
        open("/dev/shm/left-behind", "w").write("x")
        os.makedirs("deep/er", exist_ok=True)
        os.chmod("deep", 0)
        os.environ["LEFT"] = "1"
        def solution():
            return os.getcwd()
    """)
    read = prog("""
        import os
        def solution():
            return [os.path.exists("/tmp/left-behind"), os.path.exists("/dev/shm/left-behind"), os.listdir("."), "LEFT" in os.environ]
    """)
    with Sandbox(workers=1, limits=LIMITS, isolation="bwrap") as sb:
        first = sb.run(write, entry="solution")
        assert first.outcome is O.OK, first.summary()
        second = sb.run(read, entry="solution")
        assert second.value == [False, False, [], False]


def test_signals_from_the_program_cannot_reach_the_host(require_bwrap):
    """Even a program that kills everything it can see leaves the host process alive."""
    me = os.getpid()
    with Sandbox(workers=1, limits=LIMITS, isolation="bwrap") as sb:
        r = sb.run(f"import os\nfor pid in ({me}, {os.getppid()}):\n    try:\n        os.kill(pid, 9)\n    except OSError as e:\n        print(type(e).__name__)\n")
    assert r.outcome is O.OK
    assert r.stdout.split() == ["PermissionError", "PermissionError"]  # refused before the kernel looks
    os.kill(me, 0)
    assert signal.getsignal(signal.SIGINT) is not None
