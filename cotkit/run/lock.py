"""One process at a time in a run directory: an OS-level lock on `RUN_DIR/run.lock`.

The lock is `flock(2)` on the file, not the file's existence: the kernel drops it when the holder
exits for any reason (SIGKILL included), so a lock left by a killed run is simply free and the next
run takes it over. The file also records the holder's pid, host and start time, only so that a
refusal can say who holds the directory.

Under a data-parallel launch (torchrun, accelerate) only the main process takes the lock: the
other ranks of the same launch work in the directory with it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cotkit.errors import CotkitError

LOCK_NAME = "run.lock"

#: File descriptors of the locks this process holds; a forked child closes its copies (below).
_held_fds: set[int] = set()


def _close_inherited_locks() -> None:
    # A child made by fork() shares the parent's open lock file; if it outlived a killed parent it
    # would keep the directory locked. Closing the child's copy leaves the parent's lock intact.
    for fd in list(_held_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


class RunDirLockedError(CotkitError):
    """Another live process works in this run directory."""


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # exists but is someone else's (or we cannot tell): assume alive
    return True


def describe_holder(holder: dict[str, Any]) -> str:
    """`pid 123 on host h, started 2024-...` from what a lock file records."""
    if not holder.get("pid"):
        return "another process"
    text = f"pid {holder['pid']}"
    if holder.get("host"):
        text += f" on host {holder['host']}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    return text


class RunLock:
    """The exclusive lock of one run directory, held from `acquire()` to `release()`."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None
        #: What the lock file said when we took it over from a process that is gone (else None).
        self.taken_over: dict[str, Any] | None = None
        #: False when the filesystem does not support locks (the run goes on unlocked).
        self.supported = True

    def acquire(self) -> RunLock:
        """Take the lock now or raise RunDirLockedError naming the holder; never waits."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise RunDirLockedError(self._busy_message(holder)) from None
                # A filesystem without lock support (some network or FUSE mounts): run unlocked
                # rather than refuse every run there.
                self.supported = False
            # The holder before us may have removed the file between our open and our flock; a
            # lock on a file no longer at `path` protects nothing, so open the new one and retry.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same and self.supported:
                os.close(fd)
                continue
            break
        previous = _read_holder(fd)
        if previous.get("pid"):
            self.taken_over = previous
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        self.fd = fd
        _held_fds.add(fd)
        return self

    def _open(self) -> int:
        """The lock file, created with the run directory if need be; a path that cannot hold one is a clear error."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise  # the run's disk-full handling says what to do
            why = "it is a file" if self.run_dir.exists() and not self.run_dir.is_dir() else (e.strerror or str(e))
            raise CotkitError(f"run directory {self.run_dir}: cannot create {LOCK_NAME} there ({why})") from None

    def release(self) -> None:
        """Remove the lock file and drop the lock (unlink first, so no one locks a file on its way out)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or vanished directory: the lock still ends when the fd closes
        _held_fds.discard(self.fd)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _busy_message(self, holder: dict[str, Any]) -> str:
        who = describe_holder(holder)
        message = f"run directory {self.run_dir} is in use by another cotkit process ({who})"
        same_host = holder.get("host") == socket.gethostname()
        if holder.get("pid") and same_host and not _pid_alive(holder["pid"]):
            # The recorded process is gone but the lock is held: a child it started lives on.
            return (
                f"{message}, which has exited but left a child process holding {self.path} "
                f"(`fuser {self.path}` shows it); stop it, then run again"
            )
        return f"{message}; wait for it to finish or choose another --output-dir"
