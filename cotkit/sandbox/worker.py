"""The sandbox worker: a long-lived process that runs INSIDE the sandbox and forks one child per program.

This file is executed by a bare interpreter (`python -I -S -B worker.py CONFIG`) inside the
bubblewrap namespace (or, in the weaker fallback, as a plain process). cotkit itself is not
visible there, so this module uses the standard library only and is never imported by the host.

Protocol (the host is `cotkit.sandbox.pool`): frames of a 4-byte big-endian length followed by
UTF-8 JSON. Requests arrive on fd 0, responses leave on fd 1. The program's own stdout/stderr go
to pipes the worker drains with caps, and its result comes back on a third pipe as JSON, which
the worker parses and re-encodes: nothing from a program is ever unpickled or trusted as code.

In bubblewrap mode the worker is PID 1 of its own PID namespace, which gives two guarantees no
signal-and-fork harness has: the kernel drops signals sent to PID 1 from inside the namespace
(a program cannot kill its worker), and `kill(-1, SIGKILL)` from PID 1 reaches every other
process in the namespace, however it daemonized.
"""

import builtins
import errno
import json
import linecache
import math
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback

HEADER = struct.Struct(">I")
MAX_REQUEST = 64 << 20
RESULT_CAP = 64 << 10  # bytes of result JSON a program may send back
LIST_CAP = 1000  # items in a returned list or tuple
STRING_CAP = 10000  # characters of a returned string (or str() of another object)
NAMES_CAP = 1000
TRACEBACK_CAP = 4000
POLL = 0.01  # seconds between CPU-time checks (the kernel counts CPU time in 10 ms ticks)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

CONFIG = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
WORKROOT = CONFIG.get("workroot", "/tmp")
SCRATCH = CONFIG.get("scratch", [])
IS_INIT = os.getpid() == 1  # only then is kill(-1) confined to our own namespace


# ------------------------------------------------------------------------------------ framing


def read_exact(fd, n):
    chunks = []
    while n:
        try:
            chunk = os.read(fd, min(n, 1 << 20))
        except InterruptedError:
            continue
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_REQUEST:
        raise ValueError(f"request frame of {size} bytes")
    body = read_exact(fd, size)
    return None if body is None else json.loads(body)


def write_frame(fd, obj):
    body = json.dumps(obj, ensure_ascii=True).encode("ascii")
    data = memoryview(HEADER.pack(len(body)) + body)
    while data:
        try:
            n = os.write(fd, data)
        except InterruptedError:
            continue
        data = data[n:]


# ------------------------------------------------------------------------ the child (program)


def plain(x, depth=0):
    """A JSON-ready copy of a returned value: exact built-in types, or a str() of anything else."""
    t = type(x)
    if x is None or t is bool or t is float:
        return x
    if t is int:
        if x.bit_length() > 14000:  # about 4200 digits: Python's own int-to-str limit
            raise ValueError("integer result with more than 4000 digits")
        return x
    if t is str:
        return x[:STRING_CAP]
    if t in (list, tuple) and depth < 4:
        return [plain(v, depth + 1) for v in x[:LIST_CAP]]
    import numbers

    if isinstance(x, numbers.Integral):
        return plain(int(x), depth)
    if isinstance(x, numbers.Rational):
        return f"{int(x.numerator)}/{int(x.denominator)}"
    if t.__module__ == "decimal":
        return str(x)[:STRING_CAP]
    if isinstance(x, numbers.Real):
        return float(x)
    if (getattr(t, "__module__", None) or "").startswith("sympy.") and "sympy" in sys.modules:
        return sys.modules["sympy"].latex(x)[:STRING_CAP]  # sqrt(2)/2 -> \frac{\sqrt{2}}{2}
    return str(x)[:STRING_CAP]


def type_name(x):
    t = type(x)
    mod = getattr(t, "__module__", "") or ""
    name = getattr(t, "__qualname__", "") or "?"
    return name if mod == "builtins" else f"{mod}.{name}"


def child(req, workdir, out_w, err_w, res_w):
    """Runs in the forked child: confine, run the program, send the result, _exit. Never returns.

    The steps, in this order: own session and stdio, resource limits, the seccomp filter, run,
    report. There is no privilege drop here: the worker gave up root (`drop_privileges`) before it
    forked any child. What is the same for every program (stdio objects, signal dispositions,
    environment, fixed limits) was set once in the worker by `prepare_children`; a fork copies
    every page it touches, so the less done here, the faster.
    """
    # Bound before the program runs: it may replace os._exit, os.write or json.dumps.
    dumps, write, _exit = json.dumps, os.write, os._exit
    me = os.getpid()
    lim = req["limits"]
    take_session_and_stdio(out_w, err_w, res_w)
    set_program_limits(lim)
    if Seccomp.ok:
        load_filter(child_filter(me, os.getppid(), bool(lim.get("allow_fork"))))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the worker ignores it; a program may not
    os.chdir(workdir)
    message = run_program(req)
    flush_program_stdio()
    if os.getpid() != me:  # a process the program forked ran off the end: only the program reports
        _exit(0)
    send_result(message, dumps, write)
    _exit(0)


def take_session_and_stdio(out_w, err_w, res_w):
    """A session of its own; fds 0-3 are /dev/null and the output and result pipes, nothing else."""
    os.setsid()
    os.dup2(DEVNULL[0], 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(res_w, 3)
    os.closerange(4, 1 << 16)  # the host channel and every other worker fd


def set_program_limits(lim):
    """The request's per-program rlimits (the fixed ones were set once by `prepare_children`)."""
    cpu = max(1, math.ceil(lim["cpu"]))
    for which, soft, hard in (
        (resource.RLIMIT_CPU, cpu + 1, cpu + 2),  # a backstop: the worker kills at the exact limit
        (resource.RLIMIT_AS, lim["address_space"], lim["address_space"]),
        (resource.RLIMIT_FSIZE, lim["fsize"], lim["fsize"]),
        (resource.RLIMIT_NPROC, lim["nproc"] + 1, lim["nproc"] + 1),  # + the worker (same uid)
        (resource.RLIMIT_NOFILE, lim["nofile"], lim["nofile"]),
    ):
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):  # a hard limit already below ours: keep the lower one
            resource.setrlimit(which, (min(soft, resource.getrlimit(which)[1]), resource.getrlimit(which)[1]))


def run_program(req):
    """Run the program (and its entry function, if the request names one); the result message."""
    entry = req.get("entry")
    want_names = bool(req.get("names"))
    glob = {"__name__": "__main__", "__builtins__": builtins, "__file__": "<program>"}
    start_names = set(glob)
    entry_locals = []
    source = req["code"]
    linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")  # source lines in tracebacks
    message, exc = execute(source, glob, entry, entry_locals if want_names else None)
    if want_names:  # before an exception's message, which may clear the program's globals
        names = defined_names(glob, start_names, entry_locals)
    if exc is not None:
        message = exception_message(exc, glob)
    if "value" in message:
        message = value_message(message["value"])
    if want_names:
        message["names"] = names
    return message


def execute(source, glob, entry, entry_locals):
    """exec the program in `glob`, then call `entry()`: (message, the exception it raised or None).

    With a list for `entry_locals`, the entry function's local names are put there as it returns.
    The exception is caught here, in the frame that runs the program, so that its traceback's
    second frame is the program's own.
    """
    message = {}

    def profiler(frame, event, arg):
        if event == "return" and entry_code is not None and frame.f_code is entry_code:
            entry_locals[:] = list(frame.f_locals)[:NAMES_CAP]

    entry_code = None
    stage = "exec"
    try:
        code = compile(source, "<program>", "exec")
        exec(code, glob)
        if entry:
            stage = "entry"
            fn = glob.get(entry)
            if not callable(fn):
                message = {"status": "no_entry", "error": f"the program defines no function {entry}()"}
            else:
                entry_code = getattr(fn, "__code__", None)
                if entry_locals is not None:
                    sys.setprofile(profiler)
                value = fn()
                sys.setprofile(None)
                if value is None:
                    message = {"status": "no_result", "error": f"{entry}() returned None"}
                else:
                    message = {"status": "ok", "value": value}
        else:
            message = {"status": "ok"}
    except SystemExit as e:
        sys.setprofile(None)
        if e.code in (None, 0) and stage == "exec" and not entry:
            message = {"status": "ok"}
        elif e.code in (None, 0):
            message = {"status": "no_result", "error": "the program called sys.exit() before returning a result"}
        else:
            message = {"status": "exception", "exc_type": "SystemExit", "error": f"SystemExit: {str(e.code)[:200]}"}
    except BaseException as e:  # everything the program raises, KeyboardInterrupt included
        sys.setprofile(None)
        return message, e
    return message, None


def defined_names(glob, start_names, entry_locals):
    """The names the program defined (globals, then the entry function's locals), capped."""
    try:
        names = [k for k in glob if k not in start_names and not (k.startswith("__") and k.endswith("__"))]
        names += [k for k in entry_locals if k not in names]
        return [str(k) for k in names[:NAMES_CAP]]
    except BaseException:
        return []


def exception_message(exc, glob):
    """The result message of a program that raised `exc` (MemoryError for the address-space limit)."""
    name = "Exception"
    try:
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and type(exc.errno) is int and exc.errno == errno.ENOMEM):
            name = "MemoryError"  # mmap and friends report the address-space limit as ENOMEM
            glob.clear()  # let go of what the program holds before formatting anything
        else:
            name = str(type(exc).__name__)
        text = str(exc)[:1000]
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None))
    except BaseException:
        text, tb = "(unprintable exception)", ""
    return {"status": "exception", "exc_type": name, "error": f"{name}: {text}" if text else name, "traceback": tb[-TRACEBACK_CAP:]}


def value_message(value):
    """The result message of a returned value, as plain JSON (or why it cannot be)."""
    try:  # str() or int() of a program's object runs its code: still inside the limits
        return {"status": "ok", "value": plain(value), "type": type_name(value)}
    except BaseException as e:
        try:
            why = f"{type(e).__name__}: {str(e)[:300]}"
        except BaseException:
            why = "unprintable"
        return {"status": "no_result", "error": f"the returned value cannot be represented ({why})"}


def flush_program_stdio():
    """Whatever the program left in sys.stdout and sys.stderr's buffers goes out to its pipes."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass


def send_result(message, dumps, write):
    """The message as one JSON document on fd 3, the result channel the worker reads."""
    try:
        data = dumps(message, ensure_ascii=True).encode("ascii")
    except BaseException as e:
        data = dumps({"status": "no_result", "error": f"result not representable: {type(e).__name__}: {e}"[:500]}).encode()
    try:
        while data:
            data = data[write(3, data) :]
    except BaseException:
        pass


# -------------------------------------------------------------------- the worker (supervisor)


def proc_cpu(pid):
    """CPU seconds of a live process plus its waited-for children (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def tree_usage(pid, base):
    """(CPU seconds used by the program's whole process tree since it started, live processes)."""
    total = children_cpu() - base  # processes already reaped by the worker
    count = 1
    if IS_INIT:
        me = str(os.getpid())
        count = 0
        for name in os.listdir("/proc"):
            if name.isdigit() and name != me:
                total += proc_cpu(name)
                count += 1
    else:
        total += proc_cpu(pid)
    return total, count


def own_children():
    """PIDs whose parent is this worker (fallback mode; orphans come to us as subreaper)."""
    me = os.getpid()
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rfind(b")") + 2 :].split()[1]) == me:
            kids.append(int(name))
    return kids


def kill_tree(pid):
    """SIGKILL the program and what it started (bwrap: every process but PID 1; fallback: its session).

    In the fallback, `pid` must not be reaped yet: while it is a zombie its number cannot be
    reused, so the signal cannot reach an unrelated process group.
    """
    if IS_INIT:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    for send in (os.killpg, os.kill):
        try:
            send(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def reap_all():
    """Kill and reap every remaining descendant, so nothing outlives its program."""
    for _ in range(10000):
        if IS_INIT:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            got, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            if not IS_INIT:
                return
            if not [n for n in os.listdir("/proc") if n.isdigit() and n != "1"]:
                return
            continue
        if got:
            continue
        if not IS_INIT:
            # Orphans come to us (we are their subreaper); each is our child, so its number is
            # held until we reap it and the signals below cannot reach an unrelated process.
            for kid in own_children():
                for send in (os.killpg, os.kill):
                    try:
                        send(kid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            pass


def wipe(path):
    """Remove everything under `path`; False if anything is left (the worker is then replaced).

    A program can make a tree too deep or too long-named for rmtree; rather than fight it, the
    worker reports False and the host starts a fresh worker with a fresh tmpfs.
    """
    import shutil
    import stat

    def fix(_func, p, exc):  # a program may leave unreadable or unwritable directories
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)
        except OSError:
            pass

    try:
        with os.scandir(path) as it:
            entries = list(it)
        if not entries:
            return True
        if len(entries) == 1 and entries[0].name == "job" and entries[0].is_dir(follow_symlinks=False):
            try:  # the usual case: an empty working directory
                os.rmdir(entries[0].path)
                return True
            except OSError:
                pass
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, onerror=fix)
            else:
                os.unlink(entry.path)
        return not os.listdir(path)
    except Exception:  # never the program's verdict: the worker is replaced instead
        return False


def ipc_left():
    """True if the program left System V IPC objects (they outlive processes): recycle the worker."""
    if not IS_INIT:
        return False
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}", "rb") as f:
                if len(f.read().splitlines()) > 1:
                    return True
        except OSError:
            pass
    return False


def vm_size():
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def signal_name(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# Two seccomp filters. The worker loads the first once, so it binds the worker and every child:
# system calls a verifier never needs and that reach beyond the process (the kernel keyring,
# mounts and namespaces, kernel modules and kexec, bpf, perf, io_uring, another process's
# memory), refused as container runtimes' default profiles refuse them. Each child loads the
# second, built for its own pid: it may not signal, re-limit, renice or re-schedule any process
# but itself (so never the worker), and, unless forks are allowed, may not create processes
# (fork, vfork and clone without CLONE_THREAD fail with EAGAIN; threads still work).
SYSCALLS = {  # machine: AUDIT_ARCH and the numbers of the calls named below
    "x86_64": (0xC000003E, {
        "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "kill": 62, "tkill": 200, "tgkill": 234,
        "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_open": 434, "prlimit64": 302,
        "setpriority": 141, "sched_setaffinity": 203, "sched_setscheduler": 144, "sched_setparam": 142,
        "sched_setattr": 314, "ioprio_set": 251,
        "add_key": 248, "keyctl": 250, "request_key": 249, "mount": 165, "umount2": 166, "pivot_root": 155,
        "chroot": 161, "setns": 308, "unshare": 272, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "kexec_load": 246,
        "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169,
        "swapon": 167, "swapoff": 168, "syslog": 103, "acct": 163, "settimeofday": 164, "clock_settime": 227,
        "clock_adjtime": 305, "adjtimex": 159, "sethostname": 170, "setdomainname": 171, "quotactl": 179,
        "quotactl_fd": 443, "iopl": 172, "ioperm": 173, "lookup_dcookie": 212, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "fanotify_init": 300, "name_to_handle_at": 303,
        "open_by_handle_at": 304, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "move_pages": 279, "migrate_pages": 256, "vhangup": 153, "uselib": 134,
        "ustat": 136, "sysfs": 139, "_sysctl": 156, "nfsservctl": 180,
    }),
    "aarch64": (0xC00000B7, {
        "clone": 220, "clone3": 435, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138,
        "rt_tgsigqueueinfo": 240, "pidfd_open": 434, "prlimit64": 261, "setpriority": 140,
        "sched_setaffinity": 122, "sched_setscheduler": 119, "sched_setparam": 118, "sched_setattr": 274,
        "ioprio_set": 30,
        "add_key": 217, "keyctl": 219, "request_key": 218, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "setns": 268, "unshare": 97, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "kexec_load": 104,
        "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142,
        "swapon": 224, "swapoff": 225, "syslog": 116, "acct": 89, "settimeofday": 170, "clock_settime": 112,
        "clock_adjtime": 266, "adjtimex": 171, "sethostname": 161, "setdomainname": 162, "quotactl": 60,
        "quotactl_fd": 443, "lookup_dcookie": 18, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "fanotify_init": 262, "name_to_handle_at": 264, "open_by_handle_at": 265, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "kcmp": 272, "pidfd_getfd": 438, "pidfd_send_signal": 424,
        "move_pages": 239, "migrate_pages": 238, "vhangup": 58, "nfsservctl": 42,
    }),
}  # fmt: skip
NEVER_NEEDED = (
    "add_key", "keyctl", "request_key",  # the kernel keyring: host keys must stay out of reach
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "syslog", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "quotactl", "quotactl_fd", "iopl", "ioperm", "lookup_dcookie",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init", "name_to_handle_at", "open_by_handle_at",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "pidfd_send_signal",
    "move_pages", "migrate_pages", "vhangup", "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl",
)  # fmt: skip
CLONE_THREAD = 0x00010000
CLONE_NEW_NAMESPACES = 0x7E020000  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
SIGNAL_CALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open")
SCHED_CALLS = ("prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr")
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000


class Bpf:
    """A tiny assembler for classic BPF: jumps name labels, resolved (and range-checked) at the end."""

    LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JSET|K, BPF_RET|K

    def __init__(self):
        self.prog = []
        self.labels = {}

    def label(self, name):
        self.labels[name] = len(self.prog)

    def load(self, offset):  # seccomp_data: nr at 0, arch at 4, args[i] (low 32 bits) at 16 + 8 i
        self.prog.append([self.LD, 0, 0, offset])

    def arg(self, i):
        self.load(16 + 8 * i)

    def jeq(self, k, jt, jf=0):
        self.prog.append([self.JEQ, jt, jf, k & 0xFFFFFFFF])

    def jset(self, k, jt, jf=0):
        self.prog.append([self.JSET, jt, jf, k])

    def ret(self, k):
        self.prog.append([self.RET, 0, 0, k])

    def assemble(self):
        out = b""
        for i, (code, jt, jf, k) in enumerate(self.prog):
            jt = self.labels[jt] - i - 1 if isinstance(jt, str) else jt
            jf = self.labels[jf] - i - 1 if isinstance(jf, str) else jf
            if not (0 <= jt <= 255 and 0 <= jf <= 255):
                raise ValueError("seccomp jump out of range")
            out += struct.pack("=HBBI", code, jt, jf, k)
        return out


def _prologue(bpf, arch):
    """Refuse calls of another architecture or the x32 ABI (their numbers mean other calls)."""
    bpf.load(4)
    bpf.jeq(arch, 0, "enosys")
    bpf.load(0)
    bpf.prog.append([0x35, "enosys", 0, 0x40000000])  # BPF_JMP|JGE|K


def _epilogue(bpf):
    for name, value in (("allow", RET_ALLOW), ("eperm", RET_ERRNO | errno.EPERM),
                        ("eagain", RET_ERRNO | errno.EAGAIN), ("enosys", RET_ERRNO | errno.ENOSYS)):  # fmt: skip
        bpf.label(name)
        bpf.ret(value)
    return bpf.assemble()


def worker_filter():
    """The filter for the worker and all it starts, or None on a machine we have no numbers for."""
    if os.uname().machine not in SYSCALLS:
        return None
    arch, nr = SYSCALLS[os.uname().machine]
    bpf = Bpf()
    _prologue(bpf, arch)
    for name in NEVER_NEEDED:
        if name in nr:
            bpf.jeq(nr[name], "eperm")
    bpf.jeq(nr["clone3"], "enosys")  # its flags sit in memory a filter cannot read: libc falls back to clone
    bpf.jeq(nr["clone"], "clone")
    bpf.ret(RET_ALLOW)
    bpf.label("clone")
    bpf.arg(0)
    bpf.jset(CLONE_NEW_NAMESPACES, "eperm", "allow")
    return _epilogue(bpf)


def child_filter(me, worker, allow_fork):
    """The filter for one program (pid `me`); the worker's pid is `worker`."""
    arch, nr = SYSCALLS[os.uname().machine]
    bpf = Bpf()
    _prologue(bpf, arch)
    if not allow_fork:
        for name in ("fork", "vfork"):
            if name in nr:
                bpf.jeq(nr[name], "eagain")
        bpf.jeq(nr["clone"], "clone")
    for name in SIGNAL_CALLS:
        bpf.jeq(nr[name], "signal")
    for name in SCHED_CALLS:
        bpf.jeq(nr[name], "self0")
    bpf.jeq(nr["setpriority"], "prio")
    bpf.jeq(nr["ioprio_set"], "ioprio")
    bpf.ret(RET_ALLOW)
    if not allow_fork:
        bpf.label("clone")
        bpf.arg(0)
        bpf.jset(CLONE_THREAD, "allow", "eagain")
    bpf.label("signal")  # the target pid (or process group, as a negative number)
    bpf.arg(0)
    if allow_fork:  # its own children may be signalled; the worker and "everyone" (-1) may not
        for pid in (worker, -worker, -1):
            bpf.jeq(pid, "eperm")
        bpf.ret(RET_ALLOW)
    else:  # nothing but itself exists to be signalled
        for pid in (0, me, -me):
            bpf.jeq(pid, "allow")
        bpf.ret(RET_ERRNO | errno.EPERM)
    bpf.label("self0")  # pid argument: 0 or its own
    bpf.arg(0)
    bpf.jeq(0, "allow")
    bpf.jeq(me, "allow", "eperm")
    for label, which in (("prio", 0), ("ioprio", 1)):  # PRIO_PROCESS, IOPRIO_WHO_PROCESS and itself
        bpf.label(label)
        bpf.arg(0)
        bpf.jeq(which, 0, "eperm")
        bpf.arg(1)
        bpf.jeq(0, "allow")
        bpf.jeq(me, "allow", "eperm")
    return _epilogue(bpf)


class Seccomp:
    """Whether the filters work here (`ok`, set by a probe) and the libc handle that loads them."""

    ok = False
    libc = None
    fprog_type = None  # struct sock_fprog


def load_filter(program):
    """Load a BPF program into the calling process (after no_new_privs)."""
    import ctypes

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = Seccomp.fprog_type(len(program) // 8, ctypes.addressof(buf))
    if Seccomp.libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp filter refused")


def prepare_seccomp():
    """Load the worker filter, then check in a throwaway child that a child filter refuses fork()."""
    program = worker_filter()
    if program is None:
        return f"no seccomp filter for machine {os.uname().machine}"
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    Seccomp.fprog_type = SockFprog
    Seccomp.libc = ctypes.CDLL(None, use_errno=True)
    # No new privileges for the worker and so for every child (bwrap sets it already): needed
    # for an unprivileged seccomp filter, and one prctl fewer per program.
    Seccomp.libc.prctl(38, 1, 0, 0, 0)
    try:
        load_filter(program)
    except OSError as e:
        return f"seccomp filter refused: {e}"
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            load_filter(child_filter(os.getpid(), os.getppid(), False))
            try:
                if os.fork() == 0:
                    os._exit(0)
                code = 4
            except BlockingIOError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        Seccomp.ok = True
        return None
    return f"seccomp probe failed (status {status})"


def run_one(req):
    """Run one program in a forked child and describe what happened."""
    lim = dict(req["limits"])
    lim["address_space"] = BASE_VM[0] + lim["memory_mb"] * (1 << 20)
    req = dict(req, limits=lim)
    out_cap = lim["output"]
    workdir = os.path.join(WORKROOT, "job")
    os.mkdir(workdir, 0o700)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    base = children_cpu()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            child(req, workdir, out_w, err_w, res_w)
        finally:
            os._exit(121)
    for fd in (out_w, err_w, res_w):
        os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    bufs = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray()}
    caps = {out_r: out_cap, err_r: out_cap, res_r: RESULT_CAP}
    open_fds = set(bufs)
    killed = None  # why the worker killed the program, if it did
    deadline = t0 + lim["wall"]
    next_check = t0 + POLL

    def drain(fd):
        nonlocal killed
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            open_fds.discard(fd)
            return
        buf = bufs[fd]
        room = caps[fd] + 1 - len(buf)
        if room > 0:
            buf += chunk[:room]
        if len(buf) > caps[fd] and killed is None:
            killed = "result" if fd == res_r else "output"
            kill_tree(pid)

    while True:
        now = time.monotonic()
        wait = max(0.0, min(deadline, next_check) - now)
        if pidfd is None:
            wait = min(wait, 0.002)
        watch = list(open_fds) + ([pidfd] if pidfd is not None else [])
        try:
            ready, _, _ = select.select(watch, [], [], wait)
        except InterruptedError:
            ready = []
        for fd in ready:
            if fd != pidfd:
                drain(fd)
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break  # it ended; left unreaped so that kill_tree below cannot hit a reused number
        now = time.monotonic()
        if now >= next_check and killed is None:
            next_check = now + POLL
            used, count = tree_usage(pid, base)
            if used > lim["cpu"]:
                killed = "cpu"
                kill_tree(pid)
            elif count > lim["nproc"]:
                killed = "procs"
                kill_tree(pid)
        if now >= deadline and killed is None:
            killed = "wall"
            kill_tree(pid)
    wall = time.monotonic() - t0
    kill_tree(pid)  # whatever it started goes with it
    _, status = os.waitpid(pid, 0)
    reap_all()
    cpu = children_cpu() - base
    for fd in list(open_fds):
        os.set_blocking(fd, False)
        while fd in open_fds:
            before = len(bufs[fd])
            drain(fd)
            if fd in open_fds and len(bufs[fd]) == before:
                break
    for fd in bufs:
        os.close(fd)
    if pidfd is not None:
        os.close(pidfd)
    clean = all([wipe(p) for p in [WORKROOT, *SCRATCH]])
    resp = describe(status, killed, cpu, wall, lim, bufs[out_r], bufs[err_r], bufs[res_r], bool(req.get("entry")))
    resp["recycle"] = (not clean) or ipc_left()
    return resp


def is_plain(value, depth=0):
    """True for the values a result may hold: None, bool, int, float, str, and lists of them."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, list) and depth < 8 and len(value) <= LIST_CAP and all(is_plain(v, depth + 1) for v in value)


def describe(status, killed, cpu, wall, lim, out, err, res, entry):
    """Turn how the child ended into one typed outcome."""
    out_cap = lim["output"]
    resp = {
        "cpu": round(cpu, 4),
        "wall": round(wall, 4),
        "stdout": bytes(out[:out_cap]).decode("utf-8", "replace"),
        "stderr": bytes(err[:out_cap]).decode("utf-8", "replace"),
    }
    message = None
    if res and killed != "result":
        try:
            message = json.loads(bytes(res).decode("utf-8"))
            if not isinstance(message, dict):
                message = None
        except (ValueError, RecursionError):
            message = {"status": "no_result", "error": "the result channel held malformed data"}
    if message and isinstance(message.get("names"), list):
        resp["names"] = [n for n in message["names"] if isinstance(n, str)][:NAMES_CAP]
    exited = os.WIFEXITED(status)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if killed == "cpu" or sig == signal.SIGXCPU or (killed is None and cpu > lim["cpu"]):
        return dict(resp, outcome="timeout", error=f"CPU time limit of {lim['cpu']:g} s exceeded")
    if killed == "wall":
        return dict(resp, outcome="timeout", error=f"wall-clock limit of {lim['wall']:g} s exceeded (CPU {cpu:.2f} s)")
    if killed == "procs":
        return dict(resp, outcome="runtime_error", error=f"started more than {lim['nproc']} processes")
    if killed == "output":
        return dict(resp, outcome="output_limit", error=f"printed more than {out_cap} bytes")
    if killed == "result":
        return dict(resp, outcome="output_limit", error=f"result larger than {RESULT_CAP} bytes")
    if sig == signal.SIGXFSZ:
        return dict(resp, outcome="output_limit", error=f"wrote a file larger than {lim['fsize']} bytes")
    if sig is not None:
        return dict(resp, outcome="runtime_error", error=f"killed by {signal_name(sig)}")
    code = os.WEXITSTATUS(status) if exited else -1
    if message is None:
        if code == 0 and not entry:
            return dict(resp, outcome="ok")
        if code == 0:
            return dict(resp, outcome="no_result", error="the program exited without a result")
        return dict(resp, outcome="runtime_error", error=f"exited with status {code}")
    kind = message.get("status")
    if kind == "ok":
        if "value" in message:
            if not is_plain(message["value"]):  # a program wrote the channel itself
                return dict(resp, outcome="no_result", error="the result channel held a value that is not plain JSON")
            resp.update(value=message["value"], has_value=True, value_type=str(message.get("type", ""))[:200])
        return dict(resp, outcome="ok")
    if kind in ("no_result", "no_entry"):
        return dict(resp, outcome="no_result", error=str(message.get("error", ""))[:1000])
    if kind == "exception":
        outcome = "memory_limit" if message.get("exc_type") == "MemoryError" else "runtime_error"
        error = str(message.get("error", ""))[:1000]
        if outcome == "memory_limit":
            error = f"memory limit of {lim['memory_mb']} MB exceeded ({error})"
        return dict(resp, outcome=outcome, error=error, traceback=str(message.get("traceback", ""))[:TRACEBACK_CAP])
    return dict(resp, outcome="no_result", error="the result channel held an unknown message")


DEVNULL = [-1]


def prepare_children():
    """Set, once in the worker, what every child needs the same: fixed limits, signals, stdio, env."""
    import io

    for which in ("RLIMIT_CORE", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE"):
        if hasattr(resource, which):
            try:
                resource.setrlimit(getattr(resource, which), (0, 0))
            except (ValueError, OSError):
                pass
    # Default dispositions (Python ignores SIGPIPE and SIGXFSZ would otherwise only raise):
    # a program that writes past a limit dies of it. The worker itself is fine with them.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGXCPU, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    # The kernel drops signals sent to a namespace's PID 1 unless it handles them, and Python
    # handles SIGINT: ignored here, a program's SIGINT to the worker is dropped (each child
    # restores Python's handler for itself).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Text streams over fds 0-2: the worker never uses them; in a child they are the program's.
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True)
    sys.argv = ["<program>"]
    workdir = os.path.join(WORKROOT, "job")
    os.environ["HOME"] = workdir
    os.environ["TMPDIR"] = workdir
    os.umask(0o077)
    DEVNULL[0] = os.open("/dev/null", os.O_RDONLY)


def drop_privileges(uid, gid):
    """Give up host root for good (cotkit runs as root): the writable directories change owner,
    then every uid and gid becomes the unprivileged one, which clears every capability.

    Anything short of that ends the worker before it says ready, so no program runs as root.
    """
    for path in [WORKROOT, *SCRATCH]:
        os.chown(path, uid, gid)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    with open("/proc/self/status") as f:
        caps = [line.split()[1] for line in f if line.startswith(("CapPrm:", "CapEff:", "CapAmb:"))]
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or any(int(c, 16) for c in caps):
        raise SystemExit(f"cannot give up root: uids {os.getresuid()}, capabilities {caps}")


def setup():
    """Import what programs commonly use, give up root if started as root, and make the worker
    untouchable by its children."""
    for path in CONFIG.get("paths", []):
        if path not in sys.path:
            sys.path.append(path)
    failed = []
    for name in ["numbers", "traceback", "linecache", "io", "shutil", "stat", "ctypes", *CONFIG.get("preload", [])]:
        try:
            __import__(name)
        except Exception as e:
            failed.append(f"{name}: {type(e).__name__}: {e}")
    if CONFIG.get("drop"):
        drop_privileges(*CONFIG["drop"])
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        # Not dumpable: a child (same uid) can neither ptrace the worker nor open /proc/1/fd/*.
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        if not IS_INIT:
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:
        pass
    problem = prepare_seccomp()
    if problem:
        failed.append(problem)
    prepare_children()
    warm_up()
    return failed


def warm_up():
    """Initialise the compiler, json and traceback once here, so each forked child need not.

    A first compile() in a fresh process costs about 5 ms; after this, a trivial program costs
    well under 1 ms. gc.freeze() keeps the children's collector off the inherited objects, which
    would otherwise copy their pages.
    """
    import gc

    glob = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile("def solution():\n    x = [1, 2.5, 'a']\n    return x\n", "<warm-up>", "exec"), glob)
    json.dumps({"status": "ok", "value": plain(glob["solution"]()), "type": type_name(1)})
    try:
        1 / 0
    except ZeroDivisionError as e:
        traceback.format_exception(type(e), e, e.__traceback__)
    json.loads('{"a": [1, 2.5, "x", null, true]}')
    gc.collect()
    gc.freeze()


BASE_VM = [0]  # the worker's address space once set up: a program's memory limit comes on top


def main():
    failed = setup()
    BASE_VM[0] = vm_size()
    write_frame(1, {"ready": True, "pid": os.getpid(), "init": IS_INIT, "seccomp": Seccomp.ok, "problems": failed})
    while True:
        req = read_frame(0)
        if req is None:
            return
        try:
            resp = run_one(req)
        except Exception as e:  # a worker bug: report it as a sandbox error and start over
            resp = {"outcome": "sandbox_error", "error": f"worker failed: {type(e).__name__}: {e}", "recycle": True}
        resp["id"] = req.get("id")
        write_frame(1, resp)
        if resp.get("recycle"):
            return


if __name__ == "__main__":
    main()
