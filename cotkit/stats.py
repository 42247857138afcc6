"""The confidence interval of a measured accuracy, and the paired test of a change in accuracy.

A leaf: the harness (which computes summaries), the report and `cotkit compare` (which read them
back from runs) use it, so it lives below them all. The McNemar test is a few lines of closed
form, written here rather than pulling scipy or statsmodels into a command that must start fast.
"""

from __future__ import annotations

import math


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at 0, n and small n, unlike the normal one)."""
    if n <= 0:
        return 0.0, 0.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


#: Below this many discordant pairs the exact binomial test is used; from it on, the chi-squared approximation.
EXACT_BELOW = 25


def mcnemar_p(b: int, c: int) -> tuple[float, str]:
    """Two-sided McNemar p-value of paired verdicts, and which form gave it.

    `b` questions one model got right and the other wrong, `c` the reverse (the discordant pairs;
    the concordant ones carry no evidence). Under the null each discordant pair goes either way
    with probability 1/2: below `EXACT_BELOW` pairs the exact binomial test (twice the smaller
    tail, at most 1), else the chi-squared statistic (|b - c| - 1)^2 / (b + c) with Edwards'
    continuity correction, 1 degree of freedom. No pairs at all: p = 1 (no evidence of a change).
    """
    n = b + c
    if n == 0:
        return 1.0, "exact binomial"
    if n < EXACT_BELOW:
        tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
        return min(1.0, 2 * tail), "exact binomial"
    statistic = max(0, abs(b - c) - 1) ** 2 / n
    return math.erfc(math.sqrt(statistic / 2)), "chi-squared, continuity-corrected"
