"""Run untrusted, model-written Python programs safely and fast.

    from cotkit.sandbox import Sandbox
    with Sandbox(workers=2, cpu_seconds=2) as sb:
        r = sb.run(code, entry="solution")      # Result(outcome=Outcome.OK, value=42, ...)
        rs = sb.run_many(codes, entry="solution")

Each worker lives inside bubblewrap namespaces (no network, no host files, its own PID namespace,
read-only interpreter) and forks one child per program under resource limits and a seccomp filter.
Results come back as plain JSON values. Where bubblewrap cannot run, a weaker process-level
fallback is used with a loud warning, and every Result records its isolation level.
"""

from cotkit.sandbox.isolation import bwrap_problem
from cotkit.sandbox.pool import Job, Sandbox, SandboxIsolationWarning, SandboxStartError
from cotkit.sandbox.result import JSONValue, Limits, Outcome, Result

__all__ = ["Job", "JSONValue", "Limits", "Outcome", "Result", "Sandbox", "SandboxIsolationWarning", "SandboxStartError", "bwrap_problem"]
