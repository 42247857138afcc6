"""Split a completion into reasoning steps: lines or sentences of text, statements of a program.

Steps are substrings of the completion that join back to it exactly (`"".join(steps) ==
completion`), so a step's position and the prefix before it are always known. Whitespace and
blank lines go with the step before them.

Programs are split with `ast` at the end of every simple statement, at any depth: a compound
statement's header (`for ...:`, `if ...:`, `def ...:`) forms one step with the first statement
of its body, since a header alone cannot run. A program may sit in a ```python fence (the prose
around it goes with the first and last steps) or be the indented body of a function whose
`def` line ended the prompt. An incomplete last statement (a generation cut mid-expression, a
header still without a body) becomes a step of its own, as does the rest of a program that
stops parsing; `ProgramSplit.tail` says which.
"""

from __future__ import annotations

import ast
import codeop
import re
from dataclasses import dataclass

TEXT_UNITS = ("line", "sentence")

# A sentence ends at . ! or ? (and any closing quotes or brackets) followed by whitespace and an
# upper-case letter, a digit, `$` or an opening bracket: "3.5" and "e.g. the" stay whole.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*[ \t]+(?=[A-Z0-9$(\[\"'])")
_FENCE = re.compile(r"^[ \t]*```")
# Lines end at \n, \r\n or \r only (as Python's tokenizer counts them; str.splitlines also breaks
# at form feeds and other separators a model may emit).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_COMPOUND = (
    ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.If, ast.For, ast.AsyncFor, ast.While,
    ast.With, ast.AsyncWith, ast.Try, ast.Match,
) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())  # fmt: skip
_PARSE_FLAGS = ast.PyCF_ONLY_AST | codeop.PyCF_ALLOW_INCOMPLETE_INPUT | codeop.PyCF_DONT_IMPLY_DEDENT


def lines_of(text: str) -> list[str]:
    """The lines of a text with their line endings; they join back to it."""
    return _LINE.findall(text)


def split_text(completion: str, unit: str = "sentence") -> list[str]:
    """Lines, or sentences within lines, of a text completion; they join back to it."""
    if unit not in TEXT_UNITS:
        from cotkit.errors import UnknownNameError

        raise UnknownNameError("step unit", unit, TEXT_UNITS)
    pieces: list[str] = []
    for line in lines_of(completion):
        if unit == "line":
            pieces.append(line)
            continue
        start = 0
        for m in _SENTENCE_END.finditer(line):
            pieces.append(line[start : m.end()])
            start = m.end()
        if start < len(line):
            pieces.append(line[start:])
    return _attach_blanks(pieces)


def _attach_blanks(pieces: list[str]) -> list[str]:
    """Merge whitespace-only pieces into the step before them (into the first step at the start)."""
    steps: list[str] = []
    lead = ""
    for p in pieces:
        if not p.strip():
            if steps:
                steps[-1] += p
            else:
                lead += p
            continue
        steps.append(lead + p)
        lead = ""
    if lead:
        if steps:
            steps[-1] += lead
        else:
            steps.append(lead)
    return steps


# ------------------------------------------------------------------------------ programs


@dataclass
class ProgramSplit:
    """A program completion cut into statement steps."""

    steps: list[str]
    #: How many leading steps end with a complete statement that parses.
    complete: int
    #: The last step's code when it is not a complete statement: "" (none), "incomplete" (more
    #: text could finish it) or "invalid" (a syntax error).
    tail: str
    #: The last complete statement is a `return` at the top level of a function body (or of an
    #: indented body written after the prompt's `def` line): the program is finished.
    returned: bool = False
    #: The program's ``` fence was closed: nothing after it is code.
    closed: bool = False
    #: The code is a function body without its `def` line (it must be wrapped to run).
    body_only: bool = False


@dataclass
class _Region:
    before: list[str]  # prose and the opening fence
    code: list[str]
    after: list[str]  # the closing fence and what follows
    closed: bool


def _region(lines: list[str]) -> _Region:
    """The code lines of a completion: inside its first ``` fence, else all of it."""
    opening = next((i for i, ln in enumerate(lines) if _FENCE.match(ln)), None)
    if opening is None:
        return _Region([], lines, [], False)
    closing = next((i for i in range(opening + 1, len(lines)) if _FENCE.match(lines[i])), None)
    if closing is None:
        return _Region(lines[: opening + 1], lines[opening + 1 :], [], False)
    return _Region(lines[: opening + 1], lines[opening + 1 : closing], lines[closing:], True)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def normalize_code(lines: list[str]) -> tuple[str, bool]:
    """Parseable source of code lines (same line count) and whether it is a bare function body.

    Removes the common indentation; a first line written right after the prompt's indentation
    ("def solution():\\n    " then "a = 5\\n    b = 6") gets the indentation of the lines after it.
    """
    code = [ln if ln.endswith(("\n", "\r")) else ln + "\n" for ln in lines]
    body = [i for i, ln in enumerate(code) if ln.strip()]
    if not body:
        return "".join(code), False
    first = body[0]
    rest = [i for i in body[1:] if not code[i].lstrip().startswith("#")]
    first_indent = _indent(code[first])
    if rest and not code[first].rstrip().endswith(":"):
        least = min(_indent(code[i]) for i in rest)
        if first_indent < least:
            code[first] = code[rest[0]][:least] + code[first].lstrip(" \t")
            first_indent = least
    body_only = first_indent > 0
    width = min(_indent(code[i]) for i in body)
    if width:
        code = [ln[width:] if ln.strip() else ln.lstrip(" \t") for ln in code]
    return "".join(code), body_only


def _parses(source: str) -> tuple[ast.Module | None, str]:
    """(tree, "") or (None, "incomplete" | "invalid")."""
    try:
        return compile(source, "<program>", "exec", flags=_PARSE_FLAGS), ""  # type: ignore[return-value]
    except SyntaxError as e:
        return None, "incomplete" if e.msg == "incomplete input" else "invalid"
    except (ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
        return None, "invalid"


def _statement_ends(tree: ast.Module) -> list[int]:
    """End lines of every simple statement, at any depth, in order."""
    ends: set[int] = set()

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, _COMPOUND):
                for field in ("body", "orelse", "finalbody"):
                    walk(getattr(node, field, None) or [])
                for handler in getattr(node, "handlers", None) or []:
                    walk(handler.body)
                for case in getattr(node, "cases", None) or []:
                    walk(case.body)
            elif node.end_lineno is not None:
                ends.add(node.end_lineno)

    walk(tree.body)
    return sorted(ends)


def _last_statement_returns(tree: ast.Module, body_only: bool) -> bool:
    if not tree.body:
        return False
    last = tree.body[-1]
    if body_only:
        return isinstance(last, ast.Return)
    return isinstance(last, (ast.FunctionDef, ast.AsyncFunctionDef)) and bool(last.body) and isinstance(last.body[-1], ast.Return)


def split_program(completion: str) -> ProgramSplit:
    """Statement steps of a program completion (joining back to it), tolerating an unfinished end."""
    region = _region(lines_of(completion))
    source, body_only = normalize_code(region.code)
    src_lines = lines_of(source)
    tree, problem = _parses(source)
    if tree is None:
        for cut in range(len(src_lines) - 1, 0, -1):  # the longest run of whole lines that parses
            t, _ = _parses("".join(src_lines[:cut]))
            if t is not None:
                tree = t
                break
    ends = _statement_ends(tree) if tree is not None else []
    groups: list[list[str]] = []
    start = 0
    for end in ends:
        groups.append(region.code[start:end])
        start = end
    rest = region.code[start:]
    tail = problem  # a source that does not parse fails somewhere after its last complete statement
    steps = ["".join(g) for g in groups]
    complete = len(steps)
    if tail:
        steps.append("".join(rest))
    elif rest:
        if steps:
            steps[-1] += "".join(rest)
        else:
            steps.append("".join(rest))
    if region.before:
        if steps:
            steps[0] = "".join(region.before) + steps[0]
        else:
            steps.append("".join(region.before))
    if region.after:
        if steps:
            steps[-1] += "".join(region.after)
        else:
            steps.append("".join(region.after))
    steps = [s for s in steps if s]
    returned = bool(tree is not None and not tail and _last_statement_returns(tree, body_only))
    return ProgramSplit(steps, complete, tail, returned, region.closed, body_only)


def program_source(completion: str, entry: str = "solution") -> tuple[str, bool]:
    """Runnable source of a (partial) program completion, and whether it parses.

    The fenced or bare code with its indentation removed; a bare function body is wrapped in
    `def {entry}():`. Comments and blank lines are kept, so line numbers in tracebacks are those
    of the code (plus one for the added `def`).
    """
    source, body_only = normalize_code(_region(lines_of(completion)).code)
    tree, _ = _parses(source)
    if body_only or (tree is not None and any(isinstance(n, ast.Return) for n in tree.body)):
        body = "".join(("    " + ln) if ln.strip() else ln for ln in lines_of(source))
        source = f"def {entry}():\n{body}"
    return source, tree is not None
