"""Answer extraction shared by verifiers and task loaders (no task names here)."""

from __future__ import annotations


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in text, nested braces respected."""
    best = None
    for cmd in ("\\boxed", "\\fbox"):
        idx = text.rfind(cmd)
        if idx >= 0 and (best is None or idx > best[0]):
            best = (idx, cmd)
    if best is None:
        return None
    idx, cmd = best
    i = idx + len(cmd)
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":
        # `\boxed 5` form: the token up to whitespace or `$`
        j = i
        while j < len(text) and not text[j].isspace() and text[j] != "$":
            j += 1
        return text[i:j] or None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None
