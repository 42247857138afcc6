"""What running one program produced: a typed outcome, its JSON result, output and resource use."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any, Union

#: A value a program can hand back: plain JSON, never an object with behaviour.
JSONValue = Union[None, bool, int, float, str, list["JSONValue"]]


class Outcome(str, enum.Enum):
    """How a program run ended. Only `sandbox_error` is the sandbox's fault (retried, never scored)."""

    OK = "ok"
    RUNTIME_ERROR = "runtime_error"  # an exception, a crash signal, a non-zero exit
    TIMEOUT = "timeout"  # CPU time over the limit, or the wall-clock backstop
    MEMORY_LIMIT = "memory_limit"  # MemoryError at the address-space limit
    OUTPUT_LIMIT = "output_limit"  # stdout/stderr, the result or a file over its cap
    NO_RESULT = "no_result"  # ran, but the entry function is missing or returned None
    SANDBOX_ERROR = "sandbox_error"  # the sandbox itself failed (worker crash, cannot start)


@dataclass(frozen=True)
class Limits:
    """Resource limits for each program. CPU time is the limit that decides a verdict."""

    #: CPU seconds the program's whole process tree may use (measured, so load does not matter).
    cpu_seconds: float = 2.0
    #: Wall-clock backstop for programs that sleep or block; default 5 s + 5 x cpu_seconds.
    wall_seconds: float | None = None
    #: Address space the program may add to the interpreter's own (RLIMIT_AS per process).
    memory_mb: int = 512
    #: Bytes of stdout (and, separately, of stderr) kept; printing more is `output_limit`.
    max_output_bytes: int = 64 * 1024
    #: Processes and threads the program may have at once (RLIMIT_NPROC and a live count).
    max_processes: int = 8
    max_open_files: int = 64
    #: Largest file the program may write (RLIMIT_FSIZE).
    max_file_mb: int = 16
    #: Let programs fork (subprocess, multiprocessing). Off: a seccomp filter refuses new processes.
    allow_fork: bool = False

    def __post_init__(self) -> None:
        from cotkit.errors import ConfigError

        if not (self.cpu_seconds > 0 and math.isfinite(self.cpu_seconds)):
            raise ConfigError(f"sandbox cpu_seconds must be a positive number, got {self.cpu_seconds!r}")
        if self.wall_seconds is not None and not self.wall_seconds > 0:
            raise ConfigError(f"sandbox wall_seconds must be positive, got {self.wall_seconds!r}")
        for name in ("memory_mb", "max_output_bytes", "max_processes", "max_open_files", "max_file_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"sandbox {name} must be a positive integer, got {value!r}")
        if self.max_open_files < 8:
            raise ConfigError("sandbox max_open_files must be at least 8 (the interpreter needs a few)")

    @property
    def wall(self) -> float:
        """The wall-clock backstop in seconds."""
        return self.wall_seconds if self.wall_seconds is not None else 5.0 + 5.0 * self.cpu_seconds

    def request(self) -> dict[str, Any]:
        """The limits as the worker reads them."""
        return {
            "cpu": float(self.cpu_seconds),
            "wall": float(self.wall),
            "memory_mb": self.memory_mb,
            "output": self.max_output_bytes,
            "nproc": self.max_processes,
            "nofile": self.max_open_files,
            "fsize": self.max_file_mb << 20,
            "allow_fork": self.allow_fork,
        }


@dataclass(frozen=True)
class Result:
    """One program run. `value` is set only when `has_value` (an entry function returned it)."""

    outcome: Outcome
    isolation: str
    value: JSONValue = None
    has_value: bool = False
    #: The Python type the program returned before conversion to JSON (e.g. `int`, `fractions.Fraction`).
    value_type: str | None = None
    stdout: str = ""
    stderr: str = ""
    #: One line saying what went wrong (exception, signal, limit), or None.
    error: str | None = None
    #: The program's traceback for exceptions (its own frames only).
    traceback: str | None = None
    #: Names the program bound, in binding order (module globals, then the entry function's locals);
    #: only when asked for with `names=True`, even if it failed part-way.
    names: tuple[str, ...] | None = None
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: How many times it was run (more than 1 after sandbox errors).
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """True when the program ran to the end within its limits."""
        return self.outcome is Outcome.OK

    def answer_text(self) -> str | None:
        """The program's answer as text: the returned value, else the last non-empty printed line."""
        if self.has_value:
            return value_text(self.value)
        for line in reversed(self.stdout.splitlines()):
            if line.strip():
                return line.strip()
        return None

    def summary(self) -> str:
        """A one-line description: outcome, error and isolation level."""
        text = self.outcome.value
        if self.error:
            text += f": {self.error}"
        return f"{text} [isolation {self.isolation}]"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["outcome"] = self.outcome.value
        d["names"] = list(self.names) if self.names is not None else None
        return d


def value_text(value: JSONValue) -> str:
    """A returned value as an answer string (`5` for 5.0 is left to the comparison)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))  # 18.0 -> "18"
    if isinstance(value, list):
        return ", ".join(value_text(v) for v in value)
    return "None" if value is None else str(value)


def clean_value(value: Any, depth: int = 0) -> JSONValue:
    """Validate a value parsed from a worker reply: plain JSON types only, strings valid UTF-8."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        # a program can return lone surrogates; they would break every UTF-8 writer downstream
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list) and depth < 8:
        return [clean_value(v, depth + 1) for v in value]
    raise ValueError(f"unexpected {type(value).__name__} in a sandbox result")
