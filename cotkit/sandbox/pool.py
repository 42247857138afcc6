"""The host side: a small pool of long-lived sandboxed workers, each forking one child per program.

Isolation (namespaces, mounts, interpreter start-up) is paid once per worker; a program costs a
fork. The host never runs model code and never unpickles anything: it sends the program as JSON
and reads back a JSON description whose result value is validated to plain types before use.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from cotkit.errors import ConfigError, CotkitError
from cotkit.sandbox import isolation as iso
from cotkit.sandbox.result import Limits, Outcome, Result, clean_value

log = logging.getLogger("cotkit.sandbox")

HEADER = struct.Struct(">I")
MAX_REPLY = 4 << 20  # a worker reply is a few caps' worth of text; more means a broken worker
MAX_CODE = 1 << 20
START_TIMEOUT = 60.0  # seconds for a worker to become ready (preloading sympy on a busy machine)
REPLY_GRACE = 15.0  # seconds past the wall-clock limit before the host gives up on a worker


class SandboxIsolationWarning(RuntimeWarning):
    """Model code runs with weaker isolation than bubblewrap namespaces."""


class SandboxStartError(CotkitError):
    """The sandbox cannot start a worker at all (the message holds bubblewrap's or Python's stderr)."""


@dataclass(frozen=True)
class Job:
    """One program to run: code, the function to call (or None for a script), and whether to report names."""

    code: str
    entry: str | None = None
    names: bool = False


# Which isolation "auto" resolved to in this process, per bwrap path: (level, why not bwrap).
_AUTO: dict[str | None, tuple[str, str | None]] = {}
_WARNED: set[str] = set()


def warn_weak_isolation(reason: str) -> None:
    """Say loudly, once per reason and process, that programs run without namespaces."""
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    readable = "files any user can read" if os.geteuid() == 0 else "your files"
    msg = (
        "cotkit sandbox: model-written programs run WITHOUT bubblewrap namespaces, as plain processes "
        f"with resource limits: they can read {readable} and reach the network. "
        f"Reason: {reason}. For full isolation install bubblewrap (Debian/Ubuntu: apt-get install "
        f"bubblewrap) where user namespaces are allowed; set {iso.ISOLATION_ENV}=bwrap to make this an error."
    )
    warnings.warn(msg, SandboxIsolationWarning, stacklevel=3)
    try:
        from cotkit.console import err

        err.print(f"[bold red]WARNING[/]: {msg}", highlight=False)
    except Exception:  # the warning above already went out
        print(f"WARNING: {msg}", file=sys.stderr)


_LAUNCHER: ThreadPoolExecutor | None = None
_LAUNCHER_PID = 0
_LAUNCHER_LOCK = threading.Lock()


def _launcher() -> ThreadPoolExecutor:
    """One long-lived thread that starts every worker.

    bwrap's --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that forked it ends, not
    the process; starting workers from this thread keeps them alive when a caller's short-lived
    thread ends, and still takes them down with the host process.
    """
    global _LAUNCHER, _LAUNCHER_PID
    with _LAUNCHER_LOCK:
        if _LAUNCHER is None or _LAUNCHER_PID != os.getpid():  # a forked child has no such thread
            _LAUNCHER = ThreadPoolExecutor(1, thread_name_prefix="cotkit-sandbox-launcher")
            _LAUNCHER_PID = os.getpid()
        return _LAUNCHER


class _Worker:
    """One sandboxed worker process and its framed pipes."""

    def __init__(self, spec: iso.WorkerSpec, workroot: str | None = None):
        self.spec = spec
        self.workroot = workroot
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        self.buf = bytearray()
        self.runs = 0
        self.info: dict[str, Any] = {}
        popen = functools.partial(
            subprocess.Popen,
            spec.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=spec.env,
            cwd=spec.cwd,
            close_fds=True,
            start_new_session=True,
            bufsize=0,
        )
        self.proc = _launcher().submit(popen).result()
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)

    # -- frames ------------------------------------------------------------------------------

    def send(self, obj: dict[str, Any]) -> None:
        import json

        body = json.dumps(obj).encode("utf-8")
        assert self.proc.stdin is not None
        self.proc.stdin.write(HEADER.pack(len(body)) + body)

    def pump(self) -> list[dict[str, Any]] | None:
        """Read what is available; complete frames, or None at end of file."""
        import json

        eof = False
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self.buf += chunk
            if len(self.buf) > MAX_REPLY + HEADER.size:
                raise ValueError("worker reply too large")
        frames = []
        while len(self.buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buf)
            if size > MAX_REPLY:
                raise ValueError(f"worker frame of {size} bytes")
            if len(self.buf) < HEADER.size + size:
                break
            body = bytes(self.buf[HEADER.size : HEADER.size + size])
            del self.buf[: HEADER.size + size]
            obj = json.loads(body.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("worker frame is not an object")
            frames.append(obj)
        if eof and not frames:
            return None
        return frames

    def wait_ready(self, deadline: float) -> None:
        """Block until the worker's ready frame, or raise SandboxStartError."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise SandboxStartError(f"worker not ready after {START_TIMEOUT:.0f} s")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            try:
                frames = self.pump()
            except ValueError as e:
                self.kill()
                raise SandboxStartError(str(e)) from e
            if frames is None:
                self.kill()
                raise SandboxStartError(self.stderr_text() or f"worker exited with status {self.proc.poll()}")
            if frames:
                if not frames[0].get("ready"):
                    self.kill()
                    raise SandboxStartError(f"unexpected first frame from worker: {frames[0]!r:.200}")
                self.info = frames[0]
                return

    def stderr_text(self) -> str:
        try:
            self.stderr.seek(0)
            return self.stderr.read(4000).decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        """Stop the worker and everything in its sandbox."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdout, self.stderr):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        if self.workroot:
            shutil.rmtree(self.workroot, ignore_errors=True)
            if os.path.exists(self.workroot):  # a tree too deep for rmtree
                subprocess.run(["rm", "-rf", "--", self.workroot], check=False, capture_output=True)

    def close(self) -> None:
        """Ask the worker to exit (end of input), then make sure it did."""
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class Sandbox:
    """Runs untrusted Python programs in a pool of isolated workers.

    >>> with Sandbox(workers=2, cpu_seconds=1) as sb:
    ...     sb.run("def solution():\\n    return 6 * 7", entry="solution").value
    42

    `isolation`: "auto" (bubblewrap if it works here, else the process fallback with a loud
    warning), "bwrap" (fail if unavailable) or "process"; default from COTKIT_SANDBOX_ISOLATION.
    `site_packages`: make the current environment's packages importable (read-only), so programs
    may use numpy or sympy. `preload`: modules each worker imports once, so that programs which
    import them start fast (children inherit them through fork). Thread-safe: concurrent calls
    are served one batch at a time.
    """

    #: Modules every worker imports unless told otherwise (cheap, and common in PAL programs).
    DEFAULT_PRELOAD: tuple[str, ...] = ("math", "fractions", "decimal", "itertools", "collections", "datetime", "re")

    def __init__(
        self,
        workers: int = 2,
        cpu_seconds: float = 2.0,
        memory_mb: int = 512,
        wall_seconds: float | None = None,
        *,
        limits: Limits | None = None,
        isolation: str | None = None,
        site_packages: bool = True,
        preload: Sequence[str] | None = None,
        retries: int = 2,
        max_runs_per_worker: int = 10000,
        tmpfs_mb: int = 64,
    ):
        if workers < 1:
            raise ConfigError(f"sandbox workers must be at least 1, got {workers}")
        if retries < 0 or max_runs_per_worker < 1 or tmpfs_mb < 1:
            raise ConfigError("sandbox retries must be >= 0, max_runs_per_worker and tmpfs_mb >= 1")
        self.limits = limits or Limits(cpu_seconds=cpu_seconds, memory_mb=memory_mb, wall_seconds=wall_seconds)
        self.n_workers = workers
        self.requested = iso.requested_isolation(isolation)
        self.site_packages = site_packages
        self.preload = list(self.DEFAULT_PRELOAD if preload is None else preload)
        self.retries = retries
        self.max_runs = max_runs_per_worker
        self.tmpfs_mb = tmpfs_mb
        self._workers: list[_Worker] = []
        self._level: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        if self.requested == "process":
            warn_weak_isolation(f"isolation 'process' was asked for (argument or {iso.ISOLATION_ENV})")
        self._next_id = 0

    # -- public API --------------------------------------------------------------------------

    @property
    def isolation(self) -> str:
        """The isolation level programs run under: `bwrap` or `process`, `+seccomp` when forks are refused.

        Starts a worker if none runs yet (that is how `auto` finds out whether bubblewrap works).
        """
        with self._lock:
            level = self._resolve()
            self._spawn(1, level)
            return self._label(self._workers[0], self.limits)

    def run(self, code: str, entry: str | None = None, names: bool = False, limits: Limits | None = None) -> Result:
        """Run one program; call `entry()` after it if given; report bound names if `names`."""
        return self.run_many([Job(code, entry, names)], limits=limits)[0]

    def run_many(
        self,
        codes: Iterable[str | Job],
        entry: str | None = None,
        names: bool = False,
        limits: Limits | None = None,
    ) -> list[Result]:
        """Run programs on all workers at once; results in input order, one per program."""
        jobs = [c if isinstance(c, Job) else Job(c, entry, names) for c in codes]
        for j in jobs:
            if not isinstance(j.code, str):
                raise TypeError(f"a program must be a str, got {type(j.code).__name__}")
        if not jobs:
            return []
        with self._lock:
            if self._closed:
                raise RuntimeError("this Sandbox is closed")
            return self._dispatch(jobs, limits or self.limits)

    def close(self) -> None:
        """Stop every worker (and every process inside its sandbox)."""
        with self._lock:
            self._closed = True
            for w in self._workers:
                w.close()
            self._workers.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            for w in self._workers:
                w.kill()
        except Exception:
            pass

    # -- isolation ---------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {"preload": self.preload}

    def _spec(self, level: str) -> tuple[iso.WorkerSpec, str | None]:
        if level == "bwrap":
            bwrap = iso.find_bwrap()
            if bwrap is None:
                raise SandboxStartError("bwrap not found on PATH")
            return iso.bwrap_spec(bwrap, self._config(), self.tmpfs_mb, self.site_packages), None
        root = tempfile.mkdtemp(prefix="cotkit-sandbox-")
        return iso.process_spec(self._config(), root, self.site_packages), root

    def _resolve(self) -> str:
        """Decide bwrap or process once (probing bwrap by starting a worker under `auto`)."""
        if self._level is not None:
            return self._level
        if self.requested != "auto":
            self._level = self.requested
            return self._level
        key = iso.find_bwrap()
        if key not in _AUTO:
            if key is None:
                _AUTO[key] = ("process", "bwrap is not installed")
            else:
                try:
                    w = self._start("bwrap")
                    self._workers.append(w)
                    self._started = True
                    _AUTO[key] = ("bwrap", None)
                except (SandboxStartError, ConfigError, OSError) as e:
                    _AUTO[key] = ("process", f"bwrap failed to start a sandbox: {e}")
        level, why = _AUTO[key]
        if why:
            warn_weak_isolation(why)
        self._level = level
        return level

    @staticmethod
    def _label(w: _Worker, limits: Limits) -> str:
        """The isolation level a program got on worker `w` under `limits`."""
        seccomp = bool(w.info.get("seccomp")) and not limits.allow_fork
        return w.spec.isolation + ("+seccomp" if seccomp else "")

    def _ready(self, w: _Worker) -> None:
        problems = [str(p) for p in w.info.get("problems", [])]
        if not w.info.get("seccomp"):
            warn_weak_isolation(
                "the seccomp filter that refuses new processes cannot be loaded "
                f"({'; '.join(problems) or 'unknown reason'}); only RLIMIT_NPROC bounds processes"
            )
        elif problems:
            log.warning("cotkit sandbox worker: %s", "; ".join(problems))

    def _start(self, level: str) -> _Worker:
        spec, root = self._spec(level)
        try:
            w = _Worker(spec, root)
        except OSError as e:
            if root:
                shutil.rmtree(root, ignore_errors=True)
            raise SandboxStartError(f"cannot start {spec.argv[0]}: {e}") from e
        w.wait_ready(time.monotonic() + START_TIMEOUT)
        self._ready(w)
        return w

    def _spawn(self, n: int, level: str) -> None:
        """Bring the pool up to n workers, starting them side by side."""
        starting: list[_Worker] = []
        errors: list[str] = []
        while len(self._workers) + len(starting) < n:
            spec, root = self._spec(level)
            try:
                starting.append(_Worker(spec, root))
            except OSError as e:
                errors.append(str(e))
                break
        deadline = time.monotonic() + START_TIMEOUT
        for w in starting:
            try:
                w.wait_ready(deadline)
                self._ready(w)
                self._workers.append(w)
                self._started = True
            except SandboxStartError as e:
                errors.append(str(e))
        if not self._workers and errors:
            raise SandboxStartError(errors[0])

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, jobs: list[Job], limits: Limits, check_blame: bool = True) -> list[Result]:
        """Run `jobs`; a job whose worker failed on every attempt is blamed on the sandbox only if
        a fresh worker cannot run a trivial program either (`check_blame`)."""
        level = self._resolve()
        label = level
        results: list[Result | None] = [None] * len(jobs)
        attempts = [0] * len(jobs)
        last_error: list[str] = [""] * len(jobs)
        queue = deque(range(len(jobs)))
        busy: dict[_Worker, tuple[int, float]] = {}
        req_limits = limits.request()

        def fail(i: int, why: str) -> None:
            last_error[i] = why
            if attempts[i] <= self.retries:
                queue.appendleft(i)
            else:
                results[i] = Result(Outcome.SANDBOX_ERROR, label, error=why, attempts=attempts[i])

        def drop(w: _Worker) -> None:
            w.kill()
            if w in self._workers:
                self._workers.remove(w)

        while queue or busy:
            # hand out work
            if queue and len(busy) < self.n_workers:
                try:
                    self._spawn(min(self.n_workers, len(busy) + len(queue)), level)
                except (SandboxStartError, ConfigError) as e:
                    if not self._started:  # never worked here: a setup problem, not a program's
                        raise SandboxStartError(f"the {level} sandbox cannot start: {e}") from e
                    if not busy:  # nothing else can make progress: this attempt failed
                        i = queue.popleft()
                        attempts[i] += 1
                        fail(i, f"cannot start a sandbox worker: {e}")
                        continue
            for w in [w for w in self._workers if w not in busy]:
                if not queue:
                    break
                i = queue.popleft()
                job = jobs[i]
                attempts[i] += 1
                if len(job.code) > MAX_CODE:
                    results[i] = Result(
                        Outcome.RUNTIME_ERROR, label, error=f"program of {len(job.code)} characters; the limit is {MAX_CODE}"
                    )
                    continue
                self._next_id += 1
                req = {"id": self._next_id, "code": job.code, "entry": job.entry, "names": job.names, "limits": req_limits}
                try:
                    w.send(req)
                except (OSError, ValueError) as e:
                    drop(w)
                    fail(i, f"worker died before the program was sent: {e}")
                    continue
                busy[w] = (i, time.monotonic() + limits.wall + REPLY_GRACE)
            if not busy:
                continue
            # wait for replies
            now = time.monotonic()
            timeout = max(0.0, min(d for _, d in busy.values()) - now)
            ready, _, _ = select.select([w.fd for w in busy], [], [], timeout)
            ready_fds = set(ready)
            for w in list(busy):
                i, deadline = busy[w]
                if w.fd in ready_fds:
                    try:
                        frames = w.pump()
                    except (ValueError, UnicodeDecodeError) as e:
                        frames = None
                        why = f"garbled reply from the worker: {e}"
                    else:
                        why = f"worker died: {w.stderr_text() or f'exit status {w.proc.poll()}'}"
                    if frames is None:
                        del busy[w]
                        drop(w)
                        fail(i, why)
                        continue
                    if not frames:
                        continue
                    del busy[w]
                    reply = frames[0]
                    w.runs += 1
                    try:
                        result = self._result(reply, self._label(w, limits), attempts[i])
                    except (ValueError, TypeError, KeyError) as e:
                        drop(w)
                        fail(i, f"malformed reply from the worker: {e}")
                        continue
                    if result.outcome is Outcome.SANDBOX_ERROR:
                        drop(w)
                        fail(i, result.error or "sandbox error")
                        continue
                    results[i] = result
                    if reply.get("recycle") or w.runs >= self.max_runs or len(frames) > 1:
                        drop(w)
                elif time.monotonic() > deadline:
                    del busy[w]
                    drop(w)
                    fail(i, f"worker gave no answer within {limits.wall + REPLY_GRACE:.0f} s")
        failed = [i for i, r in enumerate(results) if r is not None and r.outcome is Outcome.SANDBOX_ERROR]
        if failed and check_blame and self._sandbox_works(limits):
            for i in failed:  # the same program broke fresh workers while others run: its own failure
                results[i] = Result(
                    Outcome.RUNTIME_ERROR,
                    label,
                    error=f"the program broke its sandbox worker on each of {attempts[i]} attempts ({last_error[i]})",
                    attempts=attempts[i],
                )
        return [r if r is not None else Result(Outcome.SANDBOX_ERROR, label, error="not run") for r in results]

    def _sandbox_works(self, limits: Limits) -> bool:
        """Whether a fresh worker runs a trivial program: the check that tells a program's fault from the sandbox's."""
        for w in list(self._workers):  # the canary must not run on a worker a program may have damaged
            w.kill()
        self._workers.clear()
        canary = self._dispatch([Job("def solution():\n    return 1\n", "solution")], limits, check_blame=False)[0]
        return canary.outcome is Outcome.OK and canary.value == 1

    @staticmethod
    def _result(reply: dict[str, Any], label: str, attempts: int) -> Result:
        outcome = Outcome(reply["outcome"])
        names = reply.get("names")
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("names is not a list of strings")
            names = tuple(clean_value(n) for n in names)

        def text(key: str) -> str | None:
            v = reply.get(key)
            if v is None:
                return None
            if not isinstance(v, str):
                raise ValueError(f"{key} is not a string")
            return clean_value(v)  # type: ignore[return-value]

        return Result(
            outcome=outcome,
            isolation=label,
            value=clean_value(reply.get("value")),
            has_value=bool(reply.get("has_value")),
            value_type=text("value_type"),
            stdout=text("stdout") or "",
            stderr=text("stderr") or "",
            error=text("error"),
            traceback=text("traceback"),
            names=names,
            cpu_seconds=float(reply.get("cpu", 0.0)),
            wall_seconds=float(reply.get("wall", 0.0)),
            attempts=attempts,
        )
