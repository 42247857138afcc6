"""A hard time limit for trusted computations that may hang (sympy), usable from any thread.

The work runs in a small pool of worker processes. A call that overruns its limit gets its
worker killed (SIGKILL) and replaced, so nothing in the caller depends on the computation
cooperating: no SIGALRM (main-thread only, and useless inside a C loop), no leaked thread.
Callers wait on a pipe with a timeout, which works from the main thread, a `threading.Thread`
or a `ThreadPoolExecutor` alike.

Workers are separate interpreters started with `python -c` (not fork: forking a process that
has threads can deadlock; not multiprocessing's spawn: that re-imports the caller's `__main__`).
They start on first use, receive the parent's `sys.path`, exit when the parent goes away, and
`close()` stops them. Functions and their arguments travel by pickle, so a function must be
importable by module and name; results come back as plain data.

Only trusted code runs here: the time limit contains hangs, not malice (that is the sandbox's job).
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = [
    "TimeLimitError",
    "TimeLimitExceeded",
    "WorkerFailed",
    "WorkerCrashed",
    "CallResult",
    "WorkerPool",
]

_SYSPATH_ENV = "COTKIT_TIMELIMIT_SYSPATH"
_WORKER_CODE = (
    "import json, os, sys; "
    f"sys.path[:0] = [p for p in json.loads(os.environ.pop({_SYSPATH_ENV!r}, '[]')) if p not in sys.path]; "
    "from cotkit.reading.timelimit import _serve; _serve(int(sys.argv[1]))"
)


class TimeLimitError(Exception):
    """Base of what a pool call raises instead of returning a value."""


class TimeLimitExceeded(TimeLimitError):
    """The call ran past its time limit; its worker was killed and will be replaced."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"time limit of {seconds:g}s exceeded")


class WorkerFailed(TimeLimitError):
    """The function raised inside the worker; carries the exception's type name, message and traceback."""

    def __init__(self, exc_type: str, message: str, tb: str = ""):
        self.exc_type, self.message, self.traceback = exc_type, message, tb
        super().__init__(f"{exc_type}: {message}")


class WorkerCrashed(TimeLimitError):
    """The worker process died or could not start (out of memory, a crash in C code, a bad import)."""


@dataclass
class CallResult:
    """The result of one task of `WorkerPool.map`: a value, or the error that replaced it."""

    value: Any = None
    error: TimeLimitError | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the call returned a value."""
        return self.error is None


# ------------------------------------------------------------------------------ worker side


def _serve(fd: int) -> None:
    """Worker main loop: handshake, then run (fn, args, kwargs) tasks until told to stop."""
    conn = Connection(fd)
    parent = os.getppid()
    try:
        config = conn.recv()
        memory_mb = config.get("memory_mb")
        if memory_mb:
            import resource

            limit = int(memory_mb) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        _watch_parent(conn, parent)
        import importlib

        for name in config.get("preload", ()):
            importlib.import_module(name)
    except BaseException as e:  # report why the worker cannot start, then exit
        _send_quietly(conn, ("startup_error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        os._exit(1)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            break
        try:
            task = pickle.loads(data)
        except BaseException as e:
            _send_quietly(conn, ("err", type(e).__name__, f"cannot load the task in the worker: {e}", ""))
            continue
        if task is None:
            break
        fn, args, kwargs = task
        # The limit starts now: importing fn's module on first use is not the task's own time.
        conn.send(("started",))
        try:
            reply = ("ok", fn(*args, **kwargs))
        except MemoryError:
            reply = ("err", "MemoryError", "memory limit reached", "")
        except BaseException as e:
            reply = ("err", type(e).__name__, str(e), traceback.format_exc())
        try:
            conn.send(reply)
        except Exception as e:  # an unpicklable result
            _send_quietly(conn, ("err", type(e).__name__, f"cannot send the result back: {e}", ""))
    os._exit(0)


def _watch_parent(conn: Connection, parent: int) -> None:
    """Make this worker die with its parent, even in the middle of a hung computation.

    A hung task never reads the pipe, and a thread cannot help while C code holds the GIL, so a
    forked watchdog process (its own interpreter) waits for the parent's end of the pipe to close
    and then kills the worker. PR_SET_PDEATHSIG is no substitute: it fires when the *thread* that
    started the worker ends, and callers start workers from short-lived threads.
    """
    import select
    import signal

    if not hasattr(select, "POLLRDHUP") or not hasattr(os, "fork"):
        threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
        return
    worker = os.getpid()
    if os.fork() != 0:
        return
    try:  # the watchdog: never returns
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLRDHUP)
        while True:
            hung_up = poller.poll(250)
            if os.getppid() != worker:  # the worker already ended (killed on a timeout, or closed)
                break
            if hung_up:
                os.kill(worker, signal.SIGKILL)
                break
    finally:
        os._exit(0)


def _exit_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _send_quietly(conn: Connection, msg: Any) -> None:
    try:
        conn.send(msg)
    except Exception:
        pass


# ------------------------------------------------------------------------------ parent side


class _Worker:
    """One worker process and its pipe; used by one caller at a time."""

    def __init__(self, memory_mb: int | None, preload: Sequence[str], start_timeout: float):
        self.memory_mb = memory_mb
        self.preload = tuple(preload)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self._ready = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self) -> None:
        """Start the process (without waiting for it to be ready)."""
        if self.alive:
            return
        self.discard()
        parent_end, child_end = Pipe(duplex=True)
        env = dict(os.environ)
        env[_SYSPATH_ENV] = json.dumps([p for p in sys.path if isinstance(p, str)])
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        finally:
            child_end.close()
        self.conn = parent_end
        self._ready = False
        self.conn.send({"memory_mb": self.memory_mb, "preload": self.preload})

    def wait_ready(self) -> None:
        """Block until the worker finished its imports; raise WorkerCrashed if it cannot start."""
        if self._ready:
            return
        assert self.conn is not None and self.proc is not None
        try:
            if not self.conn.poll(self.start_timeout):
                self.discard()
                raise WorkerCrashed(f"worker did not start within {self.start_timeout:g}s")
            msg = self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.discard()
            raise WorkerCrashed(f"worker exited while starting (exit code {code})") from e
        if msg[0] != "ready":
            self.discard()
            raise WorkerCrashed(f"worker failed to start: {msg[1]}\n{msg[2]}")
        self._ready = True

    def start(self) -> None:
        """Make sure a ready worker process is running."""
        if not self.alive:
            self.launch()
        self.wait_ready()

    def submit(self, fn: Callable, args: tuple, kwargs: dict) -> None:
        assert self.conn is not None
        if getattr(fn, "__module__", None) == "__main__":
            raise ValueError(f"{fn.__qualname__} is defined in __main__: a worker can only run functions it can import")
        try:
            self.conn.send((fn, args, kwargs))
        except (OSError, EOFError) as e:
            code = self.discard()
            raise WorkerCrashed(f"worker died before the task was sent (exit code {code})") from e

    def read(self) -> tuple:
        """The next message from the worker (the pipe is known to be readable)."""
        assert self.conn is not None
        try:
            return self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.discard()
            raise WorkerCrashed(f"worker died while running the task (exit code {code})") from e

    def result(self, reply: tuple) -> Any:
        """The value of a reply, or the exception it reports."""
        if reply[0] == "ok":
            return reply[1]
        _, exc_type, message, tb = reply
        if exc_type == "MemoryError":  # the heap may be in a bad state: start afresh next time
            self.discard()
        raise WorkerFailed(exc_type, message, tb)

    def discard(self) -> int | None:
        """Kill the process (if any) and forget it; returns its exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a zombie the kernel keeps
                code = None
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn, self._ready = None, None, False
        return code

    def stop(self) -> None:
        """Ask the worker to exit, and kill it if it does not."""
        if self.alive and self._ready and self.conn is not None:
            try:
                self.conn.send(None)
                self.proc.wait(timeout=2)  # type: ignore[union-attr]
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.discard()


def _stop_all(workers: list[_Worker]) -> None:
    for w in list(workers):
        w.stop()


class WorkerPool:
    """A pool of worker processes that run importable functions under a hard time limit.

    `call(fn, *args)` returns fn's result or raises TimeLimitExceeded / WorkerFailed /
    WorkerCrashed; `map(fn, argument_tuples)` runs tasks on all free workers at once and returns
    one `CallResult` per task. Both are thread-safe: each worker serves one caller at a time, and a
    caller waits for a free worker. Workers start on first use; `close()` stops them (a later call
    starts new ones).
    """

    def __init__(
        self,
        workers: int = 1,
        timeout: float = 5.0,
        *,
        memory_mb: int | None = None,
        preload: Sequence[str] = (),
        start_timeout: float = 120.0,
    ):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.size = workers
        self.timeout = float(timeout)
        self._spec = (memory_mb, tuple(preload), start_timeout)
        self._lock = threading.Lock()
        self._build()
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def _build(self) -> None:
        self._owner_pid = os.getpid()
        self._workers: list[_Worker] = [_Worker(*self._spec) for _ in range(self.size)]
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        for w in self._workers:
            self._idle.put(w)

    # -- workers -----------------------------------------------------------------------------

    def _acquire(self, block: bool = True) -> _Worker | None:
        if os.getpid() != self._owner_pid:  # a forked copy must not touch the parent's workers
            with self._lock:
                if os.getpid() != self._owner_pid:
                    self._build()
                    self._finalizer.detach()
                    self._finalizer = weakref.finalize(self, _stop_all, self._workers)
        try:
            return self._idle.get(block=block)
        except queue.Empty:
            return None

    def _release(self, worker: _Worker) -> None:
        self._idle.put(worker)

    def pids(self) -> list[int]:
        """Process ids of the running workers (for tests and diagnostics)."""
        return [w.proc.pid for w in self._workers if w.alive and w.proc is not None]

    # -- running -----------------------------------------------------------------------------

    def call(self, fn: Callable, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) in a worker, or an exception if it overran `timeout` or failed."""
        limit = self.timeout if timeout is None else float(timeout)
        worker = self._acquire()
        assert worker is not None
        try:
            worker.start()
            worker.submit(fn, args, kwargs)
            assert worker.conn is not None
            if not worker.conn.poll(worker.start_timeout):
                worker.discard()
                raise WorkerCrashed(f"the worker did not load the task within {worker.start_timeout:g}s")
            reply = worker.read()
            if reply[0] != "started":  # the task could not be loaded
                return worker.result(reply)
            if not worker.conn.poll(limit):
                worker.discard()
                raise TimeLimitExceeded(limit)
            return worker.result(worker.read())
        finally:
            self._release(worker)

    def map(self, fn: Callable, items: Iterable[tuple], timeout: float | None = None) -> list[CallResult]:
        """fn(*item) for every item, spread over the free workers, each under its own time limit."""
        limit = self.timeout if timeout is None else float(timeout)
        tasks = list(items)
        outcomes: list[CallResult | None] = [None] * len(tasks)
        if not tasks:
            return []
        first = self._acquire()
        assert first is not None
        held = [first]
        while len(held) < min(self.size, len(tasks)):
            w = self._acquire(block=False)
            if w is None:
                break
            held.append(w)
        try:
            self._run_tasks(fn, tasks, held, limit, outcomes)
        finally:
            for w in held:
                self._release(w)
        return [o if o is not None else CallResult(error=WorkerCrashed("task was not run")) for o in outcomes]

    def _run_tasks(self, fn: Callable, tasks: list[tuple], held: list[_Worker], limit: float, outcomes: list) -> None:
        pending = deque(range(len(tasks)))
        free: list[_Worker] = []
        starting: dict[Connection, _Worker] = {}
        # conn -> (worker, task index, when it was sent, when it started running or None)
        busy: dict[Connection, tuple[_Worker, int, float, float | None]] = {}
        last_start_error: WorkerCrashed | None = None

        def launch(w: _Worker) -> None:
            # Workers start side by side and in the background: a start is an interpreter plus
            # imports, and must not eat into the time limit of the tasks already running.
            nonlocal last_start_error
            try:
                w.launch()
            except OSError as e:
                last_start_error = WorkerCrashed(f"cannot start a worker: {e}")
                return
            assert w.conn is not None
            starting[w.conn] = w

        def deadline(sent: float, started: float | None, w: _Worker) -> float:
            return started + limit if started is not None else sent + w.start_timeout

        for w in held:
            if w.alive and w._ready:
                free.append(w)
            else:
                launch(w)
        while pending or busy:
            while pending and free:
                w = free.pop()
                i = pending.popleft()
                try:
                    w.submit(fn, tuple(tasks[i]), {})
                except WorkerCrashed as e:
                    outcomes[i] = CallResult(error=e)
                    launch(w)
                    continue
                assert w.conn is not None
                busy[w.conn] = (w, i, time.monotonic(), None)
            if not busy and not starting:
                # every worker failed to start: nothing can run the rest
                err = last_start_error or WorkerCrashed("no worker could start")
                for i in pending:
                    outcomes[i] = CallResult(error=err)
                return
            deadlines = [deadline(sent, started, w) for w, _, sent, started in busy.values()]
            wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = wait([*busy, *starting], timeout=wait_for)
            now = time.monotonic()
            for conn in ready:
                if conn in starting:
                    w = starting.pop(conn)  # type: ignore[arg-type]
                    try:
                        w.wait_ready()
                        free.append(w)
                    except WorkerCrashed as e:
                        last_start_error = e
                    continue
                w, i, sent, started = busy.pop(conn)  # type: ignore[arg-type]
                try:
                    reply = w.read()
                    if reply[0] == "started":
                        busy[conn] = (w, i, sent, now)  # type: ignore[index]
                        continue
                    outcomes[i] = CallResult(value=w.result(reply), seconds=now - (started or sent))
                except TimeLimitError as e:
                    outcomes[i] = CallResult(error=e, seconds=now - (started or sent))
                if w.alive:
                    free.append(w)
                else:
                    launch(w)
            for conn, (w, i, sent, started) in list(busy.items()):
                if deadline(sent, started, w) <= now:
                    del busy[conn]
                    w.discard()
                    if started is None:
                        outcomes[i] = CallResult(error=WorkerCrashed("the worker did not load the task in time"))
                    else:
                        outcomes[i] = CallResult(error=TimeLimitExceeded(limit), seconds=now - started)
                    if pending:
                        launch(w)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker process (idle or busy); the pool starts new ones if used again."""
        with self._lock:
            _stop_all(self._workers)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
