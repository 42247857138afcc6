"""How a sandbox worker is started: inside bubblewrap namespaces, or (weaker) as a plain process.

The bubblewrap view of the file system holds only what the interpreter needs, read-only: /usr
(and the /bin, /lib* links or directories beside it), the interpreter's installation, optionally
the current environment's site-packages, and the worker script. Writable: a size-capped tmpfs at
/tmp (the working directory, wiped after every program) and /dev/shm. Everything else of the host
(home, the project, host /tmp, /etc, sockets) does not exist inside; the kernel's settings and
secrets under /proc are masked.

Nothing a program runs as may be privileged on the host. A normal user's bubblewrap maps the
sandbox's `nobody` to that user. Root's would map it to host root (which may write /proc/sys,
read root's keyring, ...), so under root there is no user namespace: the worker starts with only
the capabilities to change its ids and gives up root for an unused uid before any program runs
(`unprivileged_ids`); the process fallback does the same.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from cotkit.errors import ConfigError

WORKER = Path(__file__).with_name("worker.py")
SANDBOX_WORKER = "/cotkit-sandbox/worker.py"
SANDBOX_UID = 65534  # "nobody" inside the user namespace (cotkit run by a normal user)
#: When cotkit runs as root, programs run as an unprivileged host uid (and gid): this one if set,
#: else a fresh one per worker from HOST_UIDS, a range no account uses, so that workers share
#: no uid (process counts, signals) with each other or with anything else on the host.
HOST_UID_ENV = "COTKIT_SANDBOX_HOST_UID"
HOST_UIDS = range(2_000_000_000, 2_000_000_000 + (1 << 24))
#: What a sandbox's /proc hides: kernel settings and triggers under empty read-only directories,
#: kernel memory, logs, keys and timers under /dev/null (container runtimes mask the same).
PROC_MASKED_DIRS = ("sys", "fs", "bus", "irq", "acpi", "scsi", "asound", "driver")
PROC_MASKED_FILES = (
    "sysrq-trigger", "kcore", "kmsg", "keys", "key-users", "timer_list", "sched_debug",
    "latency_stats", "kallsyms", "kpagecount", "kpageflags", "kpagecgroup",
)  # fmt: skip
#: Environment variable that picks the isolation level: auto (default), bwrap or process.
ISOLATION_ENV = "COTKIT_SANDBOX_ISOLATION"
ISOLATIONS = ("auto", "bwrap", "process")
MINIMAL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0"}


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to launch one worker: argv, environment, working directory."""

    isolation: str  # "bwrap" or "process"
    argv: list[str]
    env: dict[str, str]
    cwd: str | None


def interpreter() -> str:
    """The real interpreter binary (not a virtual environment's symlink to it)."""
    return os.path.realpath(sys.executable)


def python_roots() -> list[str]:
    """Directories the interpreter needs read-only: its installation (stdlib, libpython)."""
    roots: list[str] = []
    for p in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(interpreter()))):
        p = os.path.realpath(p)
        if p not in roots and not any(p == r or p.startswith(r + os.sep) for r in roots):
            roots.append(p)
    return [r for r in roots if r != "/" and os.path.isdir(r)]


def site_packages() -> list[str]:
    """The current environment's site-packages directories (for numpy/sympy in programs)."""
    paths = sysconfig.get_paths()
    out: list[str] = []
    for key in ("purelib", "platlib"):
        p = os.path.realpath(paths[key])
        if os.path.isdir(p) and p not in out:
            out.append(p)
    return out


def unprivileged_ids() -> tuple[int, int] | None:
    """The host (uid, gid) a worker started by root must switch to; None when cotkit is not root.

    A user namespace made by root maps the sandbox's user to host root: files, /proc/sys and the
    kernel keyring would then treat a program as root. So under root the worker itself gives up
    root for this uid before any program runs.
    """
    if os.geteuid() != 0:
        return None
    value = os.environ.get(HOST_UID_ENV)
    if value is None:
        import secrets

        uid = HOST_UIDS.start + secrets.randbelow(len(HOST_UIDS))
        return uid, uid
    try:
        uid = int(value)
    except ValueError:
        uid = 0
    if not 0 < uid < 2**32 - 1:
        raise ConfigError(f"{HOST_UID_ENV} must be a non-root uid (1 to 4294967294), got {value!r}")
    return uid, uid


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@functools.lru_cache(maxsize=4)
def bwrap_features(bwrap: str) -> frozenset[str]:
    """The optional flags this bubblewrap supports (older versions lack some)."""
    try:
        text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(f for f in ("--disable-userns", "--size", "--as-pid-1", "--die-with-parent", "--perms") if f in text)


def bwrap_spec(
    bwrap: str,
    config: dict,
    tmpfs_mb: int,
    with_site_packages: bool,
) -> WorkerSpec:
    """The bubblewrap command line for one worker."""
    feats = bwrap_features(bwrap)
    missing = {"--as-pid-1", "--die-with-parent"} - feats
    if missing:
        raise ConfigError(f"{bwrap} is too old (lacks {', '.join(sorted(missing))}); bubblewrap 0.5 or newer is needed")
    py = interpreter()
    roots = python_roots()
    extra = site_packages() if with_site_packages else []
    # The sandbox's /tmp is a fresh tmpfs, which would hide a virtual environment living under the
    # host's /tmp: such site-packages are mounted elsewhere (sys.path is set from `paths`, so the
    # directory's own name does not matter).
    inside = {p: (f"/cotkit-site/{i}" if _under(p, ["/tmp"]) else p) for i, p in enumerate(extra)}
    ids = unprivileged_ids()
    config = dict(config, workroot="/tmp", scratch=["/dev/shm"], paths=[inside[p] for p in extra], drop=ids)
    argv = [bwrap]
    if ids is None:
        argv += ["--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        argv += ["--cap-drop", "ALL"]
        if "--disable-userns" in feats:
            argv += ["--disable-userns"]
    else:  # root: no user namespace (it would map to host root); the worker drops to `ids` itself
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_CHOWN"]
    argv += [
        "--hostname", "sandbox",
        # The sandbox dies with bwrap, and bwrap with the thread that started it: pool.py starts
        # every worker from one long-lived launcher thread.
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",  # the worker is PID 1: unkillable from inside, reaps and kills everything
        "--clearenv",
    ]  # fmt: skip
    for key, value in {**MINIMAL_ENV, "HOME": "/tmp", "TMPDIR": "/tmp"}.items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = f"/{name}"
        if os.path.islink(p):
            argv += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            argv += ["--ro-bind", p, p]
    made: set[str] = set()
    for p in [*roots, *extra]:
        if not _under(p, ["/usr", *[r for r in roots if r != p]]):
            # bwrap gives the directories it creates on the way the host's modes: under root,
            # /root (0700) would then hide the interpreter from the unprivileged worker.
            for parent in reversed(Path(inside.get(p, p)).parents[:-1]):
                if str(parent) not in made and "--perms" in feats:
                    argv += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
            argv += ["--ro-bind", p, inside.get(p, p)]
    if os.path.exists("/etc/ld.so.cache"):
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    argv += ["--ro-bind", str(WORKER), SANDBOX_WORKER]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for name in PROC_MASKED_DIRS:
        if os.path.isdir(f"/proc/{name}"):
            argv += ["--tmpfs", f"/proc/{name}", "--remount-ro", f"/proc/{name}"]
    for name in PROC_MASKED_FILES:
        if os.path.exists(f"/proc/{name}"):
            argv += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    size = str(tmpfs_mb << 20)
    if "--size" in feats:
        argv += ["--size", size, "--tmpfs", "/tmp", "--size", str(min(tmpfs_mb, 16) << 20), "--tmpfs", "/dev/shm"]
    else:  # without --size the tmpfs is only bounded by the CPU limit on writing into it
        argv += ["--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    argv += ["--", py, "-I", "-S", "-B", SANDBOX_WORKER, json.dumps(config)]
    return WorkerSpec("bwrap", argv, {"PATH": os.environ.get("PATH", MINIMAL_ENV["PATH"])}, None)


def process_spec(config: dict, workroot: str, with_site_packages: bool) -> WorkerSpec:
    """The fallback: a plain worker process with rlimits, its own session, a temp dir, a scrubbed env."""
    config = dict(config, workroot=workroot, scratch=[], paths=site_packages() if with_site_packages else [], drop=unprivileged_ids())
    argv = [interpreter(), "-I", "-S", "-B", str(WORKER), json.dumps(config)]
    env = {**MINIMAL_ENV, "HOME": workroot, "TMPDIR": workroot}
    return WorkerSpec("process", argv, env, workroot)


def find_bwrap() -> str | None:
    """The bubblewrap binary, or None."""
    return shutil.which("bwrap")


def requested_isolation(isolation: str | None) -> str:
    """The isolation asked for by argument, else by COTKIT_SANDBOX_ISOLATION, else `auto`."""
    value = isolation or os.environ.get(ISOLATION_ENV) or "auto"
    if value not in ISOLATIONS:
        raise ConfigError(f"sandbox isolation must be one of {', '.join(ISOLATIONS)}, got {value!r}")
    return value


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str) -> str | None:
    spec = bwrap_spec(bwrap, {}, 1, False)
    argv = spec.argv[: spec.argv.index("--") + 1] + [interpreter(), "-I", "-S", "-c", "pass"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=spec.env)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{bwrap} failed to run: {e}"
    if proc.returncode != 0:
        return f"{bwrap} failed: {proc.stderr.strip() or f'exit status {proc.returncode}'}"
    return None


def bwrap_problem() -> str | None:
    """Why bubblewrap isolation cannot be used on this machine, or None if it works."""
    bwrap = find_bwrap()
    if bwrap is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        return _probe(bwrap)
    except ConfigError as e:
        return str(e)
