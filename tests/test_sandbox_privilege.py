"""Attacks on the host's privileges, its kernel keyring and the worker that judges a program.

These are the categories of the security issue found with cotkit running as root: a sandboxed
program that held host root's identity (it wrote kernel.core_pattern), read host root's keyring,
and killed or re-limited its worker so that its wrong answer became an uncounted error. Each test
runs under bubblewrap and under the process fallback, and runs as whatever user the suite runs as
(CI: root). No attack changes the host if it succeeds: writable kernel files are only opened,
never written.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import textwrap
import time
from pathlib import Path

import pytest

from cotkit.sandbox import Job, Limits, Outcome, Sandbox
from cotkit.sandbox import isolation as iso
from cotkit.sandbox import pool as sandbox_pool

O = Outcome
LIMITS = Limits(cpu_seconds=1.0, wall_seconds=6.0, memory_mb=128)


@pytest.fixture(scope="module", params=["bwrap", "process"])
def sb(request):
    if request.param == "bwrap":
        request.getfixturevalue("require_bwrap")
    with pytest.warns(sandbox_pool.SandboxIsolationWarning) if request.param == "process" else contextlib.nullcontext():
        box = Sandbox(workers=1, limits=LIMITS, isolation=request.param)
        box.run("pass")
    yield box
    box.close()


def run(sb: Sandbox, body: str):
    """Run `def solution(): <body>` and return the result."""
    code = "def solution():\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
    return sb.run(code, entry="solution")


def value(sb: Sandbox, body: str):
    r = run(sb, body)
    assert r.outcome is O.OK, r.summary()
    return r.value


def worker_targets(sb: Sandbox) -> str:
    """How a program names its worker: its parent, and PID 1 where it is the namespace's init.

    In the process fallback PID 1 is the host's init: never a target, should a filter ever fail.
    """
    return "{os.getppid(), 1}" if sb.isolation.startswith("bwrap") else "{os.getppid()}"


def worker_pids(sb: Sandbox) -> list[int]:
    """Host pids of the worker processes (bwrap's child, or the worker itself in the fallback)."""
    pids = []
    for w in sb._workers:
        if w.spec.isolation == "bwrap":
            pids += [int(p) for p in Path(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children").read_text().split()]
        else:
            pids.append(w.proc.pid)
    return pids


# -------------------------------------------------------------------------- host-root identity


def test_worker_and_program_hold_no_host_privilege(sb):
    """Seen from the host, the worker (and so every program) is not uid 0 and has no capability."""
    for pid in worker_pids(sb):
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        uids = [int(u) for u in status["Uid"].split()]
        assert 0 not in uids
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapAmb"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
    got = value(
        sb,
        """
        import os
        status = open("/proc/self/status").read().split("\\n")
        caps = [int(l.split()[1], 16) for l in status if l.startswith(("CapEff", "CapPrm", "CapAmb"))]
        try:
            os.setuid(0)
            regained = True
        except PermissionError:
            regained = False
        return [os.getuid(), os.geteuid(), caps, regained]
        """,
    )
    uid = got[0]
    assert uid != 0 and got[1] == uid and got[2] == [0, 0, 0] and got[3] is False


def test_kernel_settings_and_triggers_cannot_be_opened_for_writing(sb):
    """core_pattern (a pipe to a host command), drop_caches, sysrq-trigger: not writable; only opened."""
    got = value(
        sb,
        """
        out = []
        for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger",
                     "/proc/sys/kernel/modprobe", "/proc/sys/fs/binfmt_misc/register"):
            try:
                open(path, "r+b").close()  # opened only: nothing is written even if this succeeds
                out.append("WRITABLE " + path)
            except OSError as e:
                out.append(type(e).__name__)
        return out
        """,
    )
    assert not [g for g in got if g.startswith("WRITABLE")], got


def test_a_crashing_program_leaves_the_host_core_pattern_alone(sb):
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    r = run(
        sb,
        """
        import os, resource
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (1 << 30, 1 << 30))
        except (ValueError, OSError):
            pass
        try:
            with open("/proc/sys/kernel/core_pattern", "w") as f:
                f.write("|/bin/touch /tmp/cotkit-core-pwned")
        except OSError:
            pass
        os.abort()
        """,
    )
    assert r.outcome is O.RUNTIME_ERROR and "SIGABRT" in (r.error or "")
    time.sleep(0.2)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    assert not Path("/tmp/cotkit-core-pwned").exists()


def test_sensitive_proc_files_are_masked(require_bwrap):
    """Under bubblewrap, /proc/sys is an empty read-only directory; kernel memory and keys read empty."""
    with Sandbox(workers=1, limits=LIMITS, isolation="bwrap") as box:
        got = value(
            box,
            """
            import os
            out = {"sys": os.listdir("/proc/sys")}
            for name in ("keys", "key-users", "kallsyms", "timer_list", "kmsg"):
                try:
                    out[name] = len(open("/proc/" + name, "rb").read(4096))
                except OSError as e:
                    out[name] = type(e).__name__
            return [out["sys"], [out[n] for n in ("keys", "key-users", "kallsyms", "timer_list", "kmsg")]]
            """,
        )
    assert got[0] == []
    assert all(v in (0, "FileNotFoundError", "PermissionError") for v in got[1]), got


# ------------------------------------------------------------------------------ kernel keyring

KEYRING_ATTACK = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
NR = {nr}
KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING = -4, -3
calls = {{
    # link the user keyring (host root's, when the uid maps to root) into the session keyring
    "keyctl_link": (NR["keyctl"], 8, KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING),
    "keyctl_search": (NR["keyctl"], 10, KEY_SPEC_USER_KEYRING, b"user", b"cotkit-host-secret", 0),
    "add_key": (NR["add_key"], b"user", b"cotkit-planted", b"planted", 7, KEY_SPEC_USER_KEYRING),
    "request_key": (NR["request_key"], b"user", b"cotkit-host-secret", None, KEY_SPEC_SESSION_KEYRING),
}}
out = {{}}
for name, (nr, *args) in calls.items():
    rc = libc.syscall(nr, *args)
    out[name] = "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
def solution():
    return sorted(out.items())
"""


def syscall_numbers() -> dict[str, int]:
    machine = os.uname().machine
    if machine not in ("x86_64", "aarch64"):
        pytest.skip(f"no syscall table for {machine}")
    return {
        "x86_64": {"add_key": 248, "keyctl": 250, "request_key": 249, "unshare": 272, "mount": 165, "bpf": 321,
                   "perf_event_open": 298, "io_uring_setup": 425, "userfaultfd": 323, "ptrace": 101,
                   "open_by_handle_at": 304, "setns": 308, "init_module": 175, "kexec_load": 246, "tkill": 200,
                   "tgkill": 234},
        "aarch64": {"add_key": 217, "keyctl": 219, "request_key": 218, "unshare": 97, "mount": 40, "bpf": 280,
                    "perf_event_open": 241, "io_uring_setup": 425, "userfaultfd": 282, "ptrace": 117,
                    "open_by_handle_at": 265, "setns": 268, "init_module": 105, "kexec_load": 104, "tkill": 130,
                    "tgkill": 131},
    }[machine]  # fmt: skip


def host_key(description: bytes) -> int:
    """The serial of a 'user' key in the host's user keyring, or -1 (searched from the test process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(syscall_numbers()["keyctl"], 10, -4, b"user", description, 0)


def test_keyring_system_calls_are_refused(sb):
    nr = syscall_numbers()
    libc = ctypes.CDLL(None, use_errno=True)
    secret = libc.syscall(nr["add_key"], b"user", b"cotkit-host-secret", b"s3cret-on-the-host", 18, -4)
    try:
        r = sb.run(KEYRING_ATTACK.format(nr=nr), entry="solution")
        assert r.outcome is O.OK, r.summary()
        assert dict(r.value) == {"add_key": "EPERM", "keyctl_link": "EPERM", "keyctl_search": "EPERM", "request_key": "EPERM"}
        assert host_key(b"cotkit-planted") == -1  # nothing planted where the host looks
    finally:
        if secret >= 0:
            libc.syscall(nr["keyctl"], 21, secret)  # KEYCTL_INVALIDATE


def test_calls_container_runtimes_refuse_are_refused(sb):
    """Namespaces, mounts, bpf, perf, io_uring, userfaultfd, ptrace, handles, modules, kexec: EPERM."""
    nr = syscall_numbers()
    got = value(
        sb,
        f"""
        import ctypes, errno
        libc = ctypes.CDLL(None, use_errno=True)
        NR = {nr!r}
        calls = {{
            "unshare": (0x10000000,),  # CLONE_NEWUSER
            "setns": (0, 0),
            "mount": (b"none", b"/tmp", b"tmpfs", 0, None),
            "bpf": (0, None, 0),
            "perf_event_open": (None, 0, -1, -1, 0),
            "io_uring_setup": (1, None),
            "userfaultfd": (0,),
            "ptrace": (16, 1, 0, 0),  # PTRACE_ATTACH to the worker
            "open_by_handle_at": (-100, None, 0),
            "init_module": (None, 0, b""),
            "kexec_load": (0, 0, None, 0),
        }}
        out = []
        for name, args in calls.items():
            rc = libc.syscall(NR[name], *args)
            out.append([name, errno.errorcode.get(ctypes.get_errno(), "?") if rc < 0 else "ok"])
        return out
        """,
    )
    assert {name: e for name, e in got} == {name: "EPERM" for name, _ in got}


# ------------------------------------------------------------------ the worker and the verdict


def test_signals_to_the_worker_are_refused_and_it_keeps_working(sb):
    nr = syscall_numbers()
    got = value(
        sb,
        f"""
        import ctypes, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        out = []
        for pid in {worker_targets(sb)}:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGSTOP, signal.SIGUSR1):
                try:
                    os.kill(pid, sig)
                    out.append("sent")
                except OSError as e:
                    out.append(type(e).__name__)
                for call, args in (("tgkill", (pid, pid, sig)), ("tkill", (pid, sig))):
                    out.append("sent" if libc.syscall({nr}[call], *args) == 0 else "refused")
            try:
                os.killpg(pid, signal.SIGINT)
                out.append("sent")
            except OSError as e:
                out.append(type(e).__name__)
        return out
        """,
    )
    assert "sent" not in got, got
    assert value(sb, "return 41 + 1") == 42


def test_the_worker_cannot_be_re_limited_reniced_or_pinned(sb):
    """prlimit, setpriority, sched_setaffinity on the worker are refused; the next program is unaffected."""
    got = value(
        sb,
        f"import os\nTARGETS = {worker_targets(sb)}\n"
        + textwrap.dedent(
            """
        import os, resource
        out = []
        for pid in TARGETS:
            for attempt in (
                lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, 3)),
                lambda: resource.prlimit(pid, resource.RLIMIT_AS, (1 << 20, 1 << 20)),
                lambda: os.setpriority(os.PRIO_PROCESS, pid, 19),
                lambda: os.setpriority(os.PRIO_USER, 0, 19),
                lambda: os.setpriority(os.PRIO_PGRP, 0, 19),
                lambda: os.sched_setaffinity(pid, {0}),
            ):
                try:
                    attempt()
                    out.append("done")
                except OSError as e:
                    out.append(type(e).__name__)
        return out
        """
        ),
    )
    assert "done" not in got, got
    after = value(sb, "import os, resource\nreturn [resource.getrlimit(resource.RLIMIT_NOFILE)[0], os.getpriority(os.PRIO_PROCESS, 0)]")
    assert after == [LIMITS.max_open_files, 0]


def test_a_program_may_still_limit_and_signal_itself(sb):
    got = value(
        sb,
        """
        import os, resource, signal
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
        os.setpriority(os.PRIO_PROCESS, 0, 5)
        hits = []
        signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))
        os.kill(os.getpid(), signal.SIGUSR1)
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            hits.append(2)
        return [resource.getrlimit(resource.RLIMIT_NOFILE)[0], os.getpriority(os.PRIO_PROCESS, 0), hits]
        """,
    )
    assert got == [16, 5, [1, 2]]


ATTACKS_ON_THE_WORKER = [  # the worker is the program's parent, and PID 1 under bubblewrap
    "import os, signal\nos.kill(os.getppid(), signal.SIGINT)\n",
    "import os, signal\nos.kill(os.getppid(), signal.SIGTERM)\n",
    "import os, resource\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (3, 3))\n",
]


def test_wrong_programs_that_attack_their_worker_get_their_own_verdict(sb):
    """1 correct program and 3 wrong ones that attack the worker: the wrong ones are wrong, not errors."""
    jobs = [Job("def solution():\n    return 72\n", "solution")]
    jobs += [Job(attack + "def solution():\n    return 71\n", "solution") for attack in ATTACKS_ON_THE_WORKER]
    results = sb.run_many(jobs)
    assert results[0].outcome is O.OK and results[0].value == 72
    for r in results[1:]:
        assert r.outcome is not O.SANDBOX_ERROR, r.summary()
        assert r.attempts == 1
    assert sb.run_many(jobs[:1])[0].value == 72


def test_program_verifier_counts_attacking_programs_as_incorrect(require_bwrap):
    """Through the `program` verifier: 1 correct + 3 attacking wrong programs is 1 of 4 correct, no errors."""
    from cotkit_plugins.verifiers.program import ProgramVerifier

    from cotkit.types import AnswerKind, Example, Sample, Status

    example = Example("x", "gsm8k", "How many?", "72", AnswerKind.NUMBER)
    completions = ["```python\ndef solution():\n    return 72\n```"]
    completions += [f"```python\n{attack}def solution():\n    return 71\n```" for attack in ATTACKS_ON_THE_WORKER]
    v = ProgramVerifier(cpu_seconds=1.0, memory_mb=128, isolation="bwrap")
    try:
        got = v.verify([Sample(example, c) for c in completions])
    finally:
        v.close()
    assert [g.status for g in got] == [Status.CORRECT, Status.INCORRECT, Status.INCORRECT, Status.INCORRECT]


def test_a_program_that_breaks_every_worker_is_its_own_runtime_error(require_bwrap, monkeypatch):
    """Only a failure a fresh worker reproduces on a trivial program is the sandbox's (`sandbox_error`)."""
    real_send = sandbox_pool._Worker.send

    def send_then_break(self, obj):  # stands for a program that takes its worker down
        real_send(self, obj)
        if "BREAKS_ITS_WORKER" in obj.get("code", ""):
            for pid in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split():
                os.kill(int(pid), 9)
            os.killpg(self.proc.pid, 9)

    monkeypatch.setattr(sandbox_pool._Worker, "send", send_then_break)
    with Sandbox(workers=1, limits=LIMITS, isolation="bwrap", retries=1) as box:
        bad, good = box.run_many(["BREAKS_ITS_WORKER = 1\n", "def solution():\n    return 5\n"], entry="solution")
    assert bad.outcome is O.RUNTIME_ERROR and bad.attempts == 2
    assert "broke its sandbox worker" in bad.error
    assert good.outcome is O.OK and good.value == 5


def test_uid_override_is_validated(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the host uid is only chosen when cotkit runs as root")
    monkeypatch.setenv(iso.HOST_UID_ENV, "0")
    with pytest.raises(Exception, match="non-root uid"):
        iso.unprivileged_ids()
    monkeypatch.setenv(iso.HOST_UID_ENV, "4321")
    assert iso.unprivileged_ids() == (4321, 4321)
    monkeypatch.delenv(iso.HOST_UID_ENV)
    assert iso.unprivileged_ids()[0] in iso.HOST_UIDS

