"""The confidence interval of a measured accuracy, for the evaluation summaries and the run report.

A leaf: the harness (which computes summaries) and the report (which reads them back from a run)
both use it, so it lives below both.
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
