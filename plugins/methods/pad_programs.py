"""PaD's prompts and program handling (the pieces `pad.py` puts together).

- Prompts: PAL's few-shot program prompt for the teacher (`tasks/pad/programs.yaml`), as text or
  as chat turns; the student's trained format `Q: {question}\\n\\n# solution in Python:\\n\\n\\n`
  -> program; and the repair format, which shows a wrong program with what went wrong and asks
  for a corrected one (few-shot from `tasks/pad/repair.yaml` for a teacher, bare for the student).
- Feedback: what a sandbox run says about a program, in one line ("it fails at line 5
  (money_spent = bagels * bagel_cost) with NameError: ..."). `failure_feedback` needs no gold
  answer, so the same words drive inference-time refinement; a wrong *result* is only known with
  the gold answer and is used for training data only.
- Programs: the docstring PAL repeats the question in is dropped from student targets, and
  duplicates are found by syntax tree (comments and spacing do not make a program new).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from cotkit import AnswerKind, DataError, Message, Prompt, parse_number

#: How a question is posed and where the program starts (PAL's GSM8K layout).
QUERY = "Q: {question}\n\n# solution in Python:\n\n\n"
#: What follows a wrong program in the repair format.
REPAIR_CUE = "\n\n\n# The solution above is wrong: {feedback}.\n# corrected solution in Python:\n\n\n"
#: Between few-shot demonstrations (PAL separates its exemplars by blank lines).
SEPARATOR = "\n\n\n\n\n"
#: Where a program completion ends: the model starting the next question, or PAL's gap.
STOPS = ["\nQ:", "\n\n\n\n"]
CHAT_INSTRUCTION = (
    "Solve the problem with a Python function `solution()` that computes the answer step by step "
    "in named variables and returns it. Reply with the code only.\n\n"
)
#: Internal harness prompt styles for the three prompt kinds of PaD.
PROMPT_STYLES = {"pal": "fewshot", "pal-chat": "chat", "student": "zeroshot"}


@dataclass(frozen=True)
class Demo:
    """One few-shot demonstration: a question and a program (and, for repairs, the fix)."""

    question: str
    program: str
    feedback: str = ""
    corrected: str = ""


@cache
def _demos(filename: str) -> tuple[Demo, ...]:
    from importlib.resources import files

    import yaml

    resource = files("cotkit_tasks").joinpath("pad", filename)
    try:
        rows = yaml.safe_load(resource.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError(f"cotkit task data file pad/{filename} is missing from the installation") from e
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "question" not in row or "program" not in row:
            raise DataError(f"pad/{filename} entry {i}: needs `question` and `program`")
        out.append(Demo(" ".join(str(row["question"]).split()), str(row["program"]), str(row.get("feedback", "")), str(row.get("corrected", ""))))
    return tuple(out)


def program_demos() -> tuple[Demo, ...]:
    """PAL's eight GSM8K program exemplars."""
    return _demos("programs.yaml")


def repair_demos() -> tuple[Demo, ...]:
    """Demonstrations of the repair format (wrong program, feedback, corrected program)."""
    return _demos("repair.yaml")


# ------------------------------------------------------------------------------------ prompts


def student_prompt(question: str) -> str:
    """The student's input: the question and the cue that a program follows."""
    return QUERY.format(question=question)


def repair_prompt(question: str, program: str, feedback: str) -> str:
    """The student's repair input: the question, its wrong program, what went wrong, the cue for a fix."""
    return student_prompt(question) + program.rstrip() + REPAIR_CUE.format(feedback=feedback.rstrip("."))


def pal_prompt(question: str, shots: int = 8) -> str:
    """PAL's few-shot prompt (the first `shots` exemplars) ending where the program starts."""
    demos = program_demos()[:shots]
    parts = [student_prompt(d.question) + d.program.rstrip() for d in demos]
    return SEPARATOR.join([*parts, student_prompt(question)])


def pal_chat_prompt(question: str, shots: int = 8) -> list[Message]:
    """PAL's exemplars as chat turns (user question, assistant program), then the question."""
    messages: list[Message] = []
    for d in program_demos()[:shots]:
        messages.append({"role": "user", "content": CHAT_INSTRUCTION + d.question})
        messages.append({"role": "assistant", "content": d.program.rstrip()})
    messages.append({"role": "user", "content": CHAT_INSTRUCTION + question})
    return messages


def teacher_repair_prompt(question: str, program: str, feedback: str, style: str = "pal") -> Prompt:
    """A few-shot repair prompt for a teacher (the demonstrations of repair.yaml, then this case)."""
    demos = repair_demos()
    if style == "pal-chat":
        messages: list[Message] = []
        for d in demos:
            messages.append({"role": "user", "content": CHAT_INSTRUCTION + repair_prompt(d.question, d.program, d.feedback)})
            messages.append({"role": "assistant", "content": d.corrected.rstrip()})
        messages.append({"role": "user", "content": CHAT_INSTRUCTION + repair_prompt(question, program, feedback)})
        return messages
    parts = [repair_prompt(d.question, d.program, d.feedback) + d.corrected.rstrip() for d in demos]
    return SEPARATOR.join([*parts, repair_prompt(question, program, feedback)])


class ProgramPrompts:
    """A task seen through PaD's prompts, for the shared `sample` / `evaluate` steps.

    The harness asks `task.prompt(example, style)`; here `fewshot` is PAL's few-shot prompt,
    `chat` the same as chat turns, and `zeroshot` the student's trained format. Everything else
    (examples, answers, name) is the task's.
    """

    def __init__(self, task: Any, shots: int = 8):
        self.task = task
        self.shots = shots
        self.name = task.name
        self.full_name = task.full_name
        self.default_verifier = "program"

    def prompt(self, example: Any, style: str = "fewshot", hint: bool = False) -> Prompt:
        """The program prompt of `example` in a harness style."""
        if style == "fewshot":
            return pal_prompt(example.question, self.shots)
        if style == "chat":
            return pal_chat_prompt(example.question, self.shots)
        return student_prompt(example.question)

    def stop_sequences(self, style: str = "fewshot") -> list[str]:
        """Where a program completion ends (nothing for chat: the turn ends it)."""
        return [] if style == "chat" else list(STOPS)


# ----------------------------------------------------------------------------------- feedback

_FRAME = re.compile(r'File "<program>", line (\d+)[^\n]*\n([^\n]*)')
_WHERE = re.compile(r"\s*\(<program>, line \d+\)$")


def _error_line(result: Any) -> tuple[int, str] | None:
    """(line number, source line) of the innermost frame of the program's own code in a traceback."""
    frames = _FRAME.findall(result.traceback or "")
    if not frames:
        return None
    line, code = frames[-1]
    return int(line), code.strip()


def failure_feedback(check: Any, kind: AnswerKind | str | None = None, line_shift: tuple[int, int] | None = None) -> str | None:
    """What went wrong with a program, from its run alone (no gold answer): None if it ran and answered.

    `check` is a `ProgramCheck` of the program verifier. A sandbox failure is not the program's
    fault and gets None too (the program is neither refined nor used as a bad example).
    `line_shift` = (after, removed): line numbers past `after` are reported `removed` lines
    earlier (the program is shown without its docstring).
    """
    from cotkit import Outcome

    result = check.result
    if result is None:
        return "it is not a Python program"
    outcome = result.outcome
    error = _WHERE.sub("", result.error or "").strip()
    if outcome is Outcome.SANDBOX_ERROR:
        return None
    if outcome is Outcome.RUNTIME_ERROR:
        where = _error_line(result)
        if where is not None and where[1]:
            line = where[0]
            if line_shift is not None and line > line_shift[0]:
                line -= line_shift[1]
            return f"it fails at line {line} ({where[1]}) with {error}"
        return f"it fails with {error}" if error else "it fails"
    if outcome is Outcome.TIMEOUT:
        return f"it runs out of time ({error})" if error else "it runs out of time"
    if outcome is Outcome.MEMORY_LIMIT:
        return "it runs out of memory"
    if outcome is Outcome.OUTPUT_LIMIT:
        return "it prints too much"
    if outcome is Outcome.NO_RESULT:
        return f"it returns no result ({error})" if error else "it returns no result"
    answer = result.answer_text()
    if answer is None:
        return "it returns no result"
    if kind is not None and AnswerKind(kind) is AnswerKind.NUMBER:
        if isinstance(result.value, bool) or parse_number(answer) is None:
            return f"it returns {_short(answer)!r}, which is not a number"
    return None


def wrong_result_feedback(check: Any) -> str | None:
    """For a program that ran and answered but was marked incorrect: `it returns 26, which is not the answer`."""
    if check.result is None or check.verdict.correct:
        return None
    answer = check.result.answer_text()
    return f"it returns {_short(answer)}, which is not the answer" if answer is not None else None


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------- programs


def _solution_def(tree: ast.Module) -> ast.FunctionDef | None:
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    named = [n for n in defs if n.name == "solution"]
    return (named or defs or [None])[0]


def docstring_span(code: str) -> tuple[int, int] | None:
    """First and last line (1-based) of the `solution` function's docstring, if it has lines of its own."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # model text: any parse failure
        return None
    fn = _solution_def(tree)
    if fn is None or len(fn.body) < 2:
        return None
    first = fn.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)):
        return None
    lines = code.splitlines()
    start, end = first.lineno, first.end_lineno or first.lineno
    if lines[start - 1][: first.col_offset].strip() or lines[end - 1][first.end_col_offset :].strip():
        return None  # the docstring shares a line with code: leave it
    return start, end


def strip_docstring(code: str) -> str:
    """The program without the docstring of its `solution` function (PAL's copy of the question)."""
    span = docstring_span(code)
    if span is None:
        return code
    lines = code.splitlines(keepends=True)
    return "".join(lines[: span[0] - 1] + lines[span[1] :])


def clean_program(code: str, drop_docstring: bool = True) -> str:
    """A kept program as a training target: docstring dropped (optionally), trailing blank lines cut."""
    if drop_docstring:
        code = strip_docstring(code)
    return code.rstrip() + "\n"


def program_key(code: str) -> str:
    """What makes two programs the same: their syntax tree (no comments, spacing or docstring)."""
    code = strip_docstring(code)
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # model text: any parse failure
        return " ".join(code.split())


def describe_failure(
    check: Any, kind: AnswerKind | str | None, drop_docstring: bool = True, completion: str = ""
) -> tuple[str, str | None]:
    """(the program as the repair format shows it, what went wrong in its run) for a ProgramCheck.

    The program is the code the sandbox ran (docstring dropped if asked, line numbers in the
    feedback shifted to match); a completion with no program is shown as written (cut short).
    """
    if check.program is None:
        return _short_block(completion), failure_feedback(check, kind)
    shift = None
    if drop_docstring:
        span = docstring_span(check.program)
        if span is not None:
            shift = (span[1], span[1] - span[0] + 1)
    return clean_program(check.program, drop_docstring), failure_feedback(check, kind, shift)


def _short_block(text: str, limit: int = 1200) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + "\n..."
