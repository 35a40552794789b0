"""Quality-against-cost curves: quality at a budget, and the cost of reaching a target quality."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

__all__ = ["cost_to_target", "quality_at_budget", "ratio"]

Point = Mapping[str, Any]


def _sorted_points(points: Sequence[Point], cost_key: str, quality_key: str) -> list[tuple[float, float]]:
    pairs = []
    for point in points:
        if cost_key not in point or quality_key not in point:
            raise KeyError(f"curve point {dict(point)} lacks {cost_key!r} or {quality_key!r}")
        pairs.append((float(point[cost_key]), float(point[quality_key])))
    pairs.sort()
    return pairs


def quality_at_budget(
    points: Sequence[Point], budget: float, *, cost_key: str = "flops", quality_key: str = "psnr"
) -> float | None:
    """Quality reached at ``budget``, linearly interpolated between the curve's points.

    Returns ``None`` when the curve does not span the budget (it starts later or ends earlier).

    Example:
        >>> quality_at_budget([{"flops": 0, "psnr": 20.0}, {"flops": 10, "psnr": 30.0}], 4)
        24.0
    """
    pairs = _sorted_points(points, cost_key, quality_key)
    if not pairs or budget < pairs[0][0] or budget > pairs[-1][0] * (1 + 1e-9):
        return None
    for (c0, q0), (c1, q1) in pairwise(pairs):
        if c0 <= budget <= c1:
            return q0 if c1 == c0 else q0 + (q1 - q0) * (budget - c0) / (c1 - c0)
    return pairs[-1][1]


def cost_to_target(
    points: Sequence[Point], target: float, *, cost_key: str = "flops", quality_key: str = "psnr"
) -> float | None:
    """Cost at which the curve first reaches ``target`` quality, linearly interpolated.

    The curve is read in order of cost; the first segment that crosses ``target`` from below
    gives the answer. Returns ``None`` when the target is never reached.

    Example:
        >>> curve = [{"flops": 0, "psnr": 20.0}, {"flops": 10, "psnr": 30.0}, {"flops": 20, "psnr": 31.0}]
        >>> cost_to_target(curve, 25.0)
        5.0
        >>> cost_to_target(curve, 32.0) is None
        True
    """
    pairs = _sorted_points(points, cost_key, quality_key)
    if not pairs:
        return None
    if pairs[0][1] >= target:
        return pairs[0][0]
    for (c0, q0), (c1, q1) in pairwise(pairs):
        if q0 < target <= q1:
            return c0 + (c1 - c0) * (target - q0) / (q1 - q0)
    return None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0 or math.isnan(denominator):
        return None
    return numerator / denominator
