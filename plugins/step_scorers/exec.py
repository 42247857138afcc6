"""`exec`: run each prefix of a program in the sandbox; a step is good when it runs and binds a new name.

A completion is split into statements (`split_program`: fenced or bare programs,
`def solution(): ...` or a bare function body). The program up to and including step k runs in
`cotkit.sandbox` (never in this process) with its bound names reported; the function being
written (`solution`, or the last top-level function without parameters) is called so the names
its body binds count too. Scores:

- 1.0: the prefix runs without error and binds a name the prefix before it did not (or it
  returns a value: the final `return`);
- `neutral` (default 0.5): it runs but binds nothing new (a `print`, `total += x`, a comment),
  its last statement is still incomplete, or the sandbox itself failed (never counted as wrong);
- 0.0: it raises, runs out of CPU time or memory, prints too much, or does not parse.

A step after a failing one fails too, since its prefix contains the failure. A loop whose exit
condition comes in a later step times out as a prefix: keep `cpu_seconds` small. Results are
cached by program text, so re-scoring a prefix (beam search extends the same prefixes) is free.
"""

from __future__ import annotations

import ast
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from cotkit import ConfigError, Example, StepScorer, option, program_source, split_program

CACHE_SIZE = 20000


def _entry_of(source: str, preferred: str) -> str | None:
    """The function to call after running a prefix: `preferred` if defined, else the function being written."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if any(d.name == preferred for d in defs):
        return preferred
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.FunctionDef) and not (last.args.args or last.args.posonlyargs or last.args.kwonlyargs):
        return last.name
    return None


@dataclass
class ExecConfig:
    """Options of the `exec` step scorer (`-S KEY=VALUE`)."""

    entry: str = option("solution", help="function whose body is being written, called after each prefix")
    cpu_seconds: float = option(1.0, minimum=0.01, help="CPU time each prefix may use")
    memory_mb: int = option(256, minimum=16, help="memory each prefix may allocate, in MiB")
    workers: int = option(2, minimum=1, help="sandbox workers")
    isolation: str | None = option(None, help="auto, bwrap or process (default: $COTKIT_SANDBOX_ISOLATION or auto)")
    neutral: float = option(
        0.5, minimum=0.0, maximum=1.0, help="score of a step that runs but binds nothing new, or cannot run yet"
    )

    def __post_init__(self) -> None:
        if not self.entry.isidentifier():
            raise ConfigError(f"step scorer exec: entry must be a Python name, not {self.entry!r}")
        if self.isolation is not None:
            from cotkit import requested_isolation

            requested_isolation(self.isolation)  # a bad name fails here, not at the first program


class ExecScorer(StepScorer):
    """Runs each program prefix in the sandbox: 1 if it runs and binds a new name, 0 if it fails, 0.5 otherwise."""

    name = "exec"
    description = "Run each program prefix in the sandbox: 1 runs and binds a new name, 0 raises, 0.5 neither"
    step_unit: ClassVar[str] = "program"
    Config = ExecConfig

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._sandbox: Any = None
        self._cache: OrderedDict[tuple[str, str | None], tuple[str, frozenset[str], bool]] = OrderedDict()
        self._lock = threading.Lock()

    def split(self, completion: str, example: Example | None = None) -> list[str]:
        """Statements of the program (a header goes with its first body statement); they join back to the completion."""
        return split_program(completion).steps

    def score_steps(self, example: Example, steps: list[str]) -> list[float]:
        """A score per step: does the program up to it run and bind a new name."""
        return self.score_many([(example, steps)])[0]

    def score_many(self, items: list[tuple[Example | None, list[str]]]) -> list[list[float]]:
        """`score_steps` for many solutions at once: every prefix not yet cached runs in one sandbox batch."""
        plans: list[list[tuple[str, Any]]] = []
        todo: dict[tuple[str, str | None], None] = {}
        for _, steps in items:
            try:
                plan = self._plan(steps)
            except Exception:  # a program this scorer cannot even take apart fails its steps, and only its own
                plan = [("fail", None)] * len(steps)
            plans.append(plan)
            todo.update((key, None) for kind, key in plan if kind == "run" and key not in self._cache)
        if todo:
            self._run(list(todo))
        return [self._scores(plan) for plan in plans]

    def _plan(self, steps: list[str]) -> list[tuple[str, Any]]:
        """Per step: ("fail" | "neutral", None) decided without running, or ("run", (program, entry))."""
        plan: list[tuple[str, Any]] = []
        for k in range(1, len(steps) + 1):
            prefix = "".join(steps[:k])
            split = split_program(prefix)
            if split.tail == "invalid":
                plan.append(("fail", None))
            elif split.tail == "incomplete" or split.complete == 0:
                plan.append(("neutral", None))
            else:
                source, _ = program_source(prefix, self.config.entry)
                plan.append(("run", (source, _entry_of(source, self.config.entry))))
        return plan

    def close(self) -> None:
        """Stop the sandbox workers (a later call starts new ones)."""
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
                self._sandbox = None

    # -- internals ---------------------------------------------------------------------------

    def _run(self, keys: list[tuple[str, str | None]]) -> None:
        from cotkit import Job, Outcome

        results = self._get_sandbox().run_many([Job(code, entry, names=True) for code, entry in keys])
        for key, r in zip(keys, results):
            if r.outcome in (Outcome.OK, Outcome.NO_RESULT):
                status = "ok"
            elif r.outcome is Outcome.SANDBOX_ERROR:
                status = "sandbox_error"
            else:
                status = "fail"
            self._remember(key, (status, frozenset(r.names or ()), r.has_value))

    def _remember(self, key: tuple[str, str | None], value: tuple[str, frozenset[str], bool]) -> None:
        if value[0] == "sandbox_error":
            return  # not the program's fault: try again next time
        self._cache[key] = value
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def _scores(self, plan: list[tuple[str, Any]]) -> list[float]:
        scores: list[float] = []
        bound: frozenset[str] = frozenset()
        for kind, key in plan:
            if kind == "fail":
                scores.append(0.0)
                continue
            if kind == "neutral":
                scores.append(self.config.neutral)
                continue
            status, names, returned = self._cache.get(key, ("sandbox_error", frozenset(), False))
            if status == "fail":
                scores.append(0.0)
            elif status == "sandbox_error":
                scores.append(self.config.neutral)
            else:
                scores.append(1.0 if (names - bound or returned) else self.config.neutral)
                bound = bound | names
        return scores

    def _get_sandbox(self) -> Any:
        from cotkit import Limits, Sandbox

        with self._lock:
            if self._sandbox is None:
                limits = Limits(cpu_seconds=self.config.cpu_seconds, memory_mb=self.config.memory_mb)
                self._sandbox = Sandbox(workers=self.config.workers, limits=limits, isolation=self.config.isolation)
            return self._sandbox

