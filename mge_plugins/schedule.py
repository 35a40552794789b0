"""Full-Multiscale: train coarse to fine, hot-starting each finer stage.

Stage ``s`` of ``S = levels + 1`` stages runs at level ``levels - s`` (coarsest first); inside a
stage, MGE uses the levels coarser than the stage's own (all of them by default, or at most
``mge_levels``). The model and the optimizer carry over from stage to stage. The stage is a pure
function of the global step, so a run resumed at step ``t`` lands in the stage it left, and a
learning-rate schedule built for :attr:`FullMultiscaleSchedule.total_steps` and stepped once per
global step spans the whole run without restarting at stage boundaries.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import MGEConfig

__all__ = ["FullMultiscaleSchedule", "Stage", "halving_split"]


def _largest_remainder_split(total_steps: int, stages: int) -> list[int]:
    weights = [2.0 ** (stages - 1 - s) for s in range(stages)]
    raw = [total_steps * w / sum(weights) for w in weights]
    parts = [int(r) for r in raw]
    order = sorted(range(stages), key=lambda s: raw[s] - parts[s], reverse=True)
    for s in order[: total_steps - sum(parts)]:
        parts[s] += 1
    return parts


def halving_split(total_steps: int, stages: int) -> tuple[int, ...]:
    """Split ``total_steps`` over ``stages``, halving per finer stage (coarsest first).

    Uses the largest-remainder rule so the parts sum to ``total_steps`` exactly.

    Example:
        >>> halving_split(3750, 4)
        (2000, 1000, 500, 250)
    """
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    parts = _largest_remainder_split(total_steps, stages)
    if min(parts) < 1:
        fewest = next(t for t in range(stages, 2**stages) if min(_largest_remainder_split(t, stages)) >= 1)
        raise ValueError(
            f"total_steps={total_steps} is too few to give each of {stages} stages at least one step "
            f"when halving; use at least {fewest} steps, fewer levels, or explicit per-stage iterations"
        )
    return tuple(parts)


@dataclass(frozen=True)
class Stage:
    """One stage of a Full-Multiscale run, as plain data a host can act on.

    Attributes:
        index: stage number, 0 = coarsest.
        level: level of the stage's finest grid (0 = the full resolution).
        start: first global step of the stage.
        stop: one past its last global step.
        mge: the MGE configuration used inside the stage (``mge.levels`` levels below ``level``,
            ``mge.batch_sizes`` per-term batch sizes).
    """

    index: int
    level: int
    start: int
    stop: int
    mge: MGEConfig

    @property
    def iterations(self) -> int:
        """Number of optimizer steps in the stage."""
        return self.stop - self.start

    @property
    def levels_below(self) -> int:
        """Number of coarser levels MGE uses below the stage's level."""
        return self.mge.levels

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Per-term batch sizes, finest first."""
        return tuple(self.mge.batch_sizes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view for logs and host configuration."""
        return {
            "stage": self.index,
            "level": self.level,
            "start": self.start,
            "stop": self.stop,
            "levels_below": self.levels_below,
            "batch_sizes": list(self.batch_sizes),
            "restriction": self.mge.restriction,
        }


class FullMultiscaleSchedule:
    """Coarse-to-fine stages, each a hot start for the next.

    Args:
        levels: number of levels below the finest; there are ``levels + 1`` stages.
        iterations: total optimizer steps split by halving per finer stage (an ``int``, default
            3750 = 2000/1000/500/250 for 4 stages), or explicit per-stage steps, coarsest first.
        batch_size: finest-term batch size of each stage: one ``int`` for all, or one per stage
            (coarsest first).
        growth: batch growth per coarser MGE level (default ``2**spatial_dims``).
        mge_levels: at most this many MGE levels below each stage's level (``None`` = every
            coarser level; ``0`` = no MGE, plain coarse-to-fine training), or one cap per stage
            (coarsest first).
        restriction: restriction method.
        spatial_dims: 2 or 3.

    Example:
        >>> schedule = FullMultiscaleSchedule(levels=3, iterations=3750, batch_size=4)
        >>> [s.iterations for s in schedule.stages]
        [2000, 1000, 500, 250]
        >>> schedule.stage_at(2500).level
        2
    """

    def __init__(
        self,
        levels: int = 3,
        iterations: int | Sequence[int] = 3750,
        batch_size: int | Sequence[int] = 8,
        growth: float | None = None,
        mge_levels: int | Sequence[int | None] | None = None,
        restriction: str = "area",
        spatial_dims: int = 2,
    ) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
            raise ValueError(f"levels must be an integer >= 0, got {levels!r}")
        num_stages = levels + 1
        caps = list(mge_levels) if isinstance(mge_levels, Sequence) else [mge_levels] * num_stages
        if len(caps) != num_stages:
            raise ValueError(
                f"mge_levels lists {len(caps)} stages but levels={levels} gives {num_stages}; "
                "give one cap or one per stage, coarsest first"
            )
        if any(cap is not None and cap < 0 for cap in caps):
            raise ValueError(f"mge_levels must be >= 0 or None (all coarser levels), got {mge_levels}")
        if isinstance(iterations, int):
            per_stage = halving_split(iterations, num_stages)
        else:
            per_stage = tuple(int(n) for n in iterations)
            if len(per_stage) != num_stages:
                raise ValueError(
                    f"iterations lists {len(per_stage)} stages but levels={levels} gives {num_stages}; "
                    "give one count per stage, coarsest first"
                )
            if any(n < 1 for n in per_stage):
                raise ValueError(f"every stage needs at least one iteration, got {list(per_stage)}")
        sizes = [batch_size] * num_stages if isinstance(batch_size, int) else list(batch_size)
        if len(sizes) != num_stages:
            raise ValueError(
                f"batch_size lists {len(sizes)} stages but levels={levels} gives {num_stages}; "
                "give one int or one size per stage, coarsest first"
            )
        self.levels = levels
        self.mge_levels = mge_levels
        stages: list[Stage] = []
        start = 0
        for index, (steps, size, cap) in enumerate(zip(per_stage, sizes, caps)):
            level = levels - index
            below = levels - level if cap is None else min(cap, levels - level)
            config = MGEConfig(
                levels=below,
                batch_size=size,
                growth=growth,
                restriction=restriction,
                spatial_dims=spatial_dims,
            )
            stages.append(Stage(index, level, start, start + steps, config))
            start += steps
        self.stages: tuple[Stage, ...] = tuple(stages)
        self._stops = [s.stop for s in self.stages]

    @property
    def total_steps(self) -> int:
        """Optimizer steps over all stages: build the learning-rate schedule for this many."""
        return self._stops[-1]

    @property
    def restriction(self) -> str:
        """Restriction method shared by every stage."""
        return self.stages[0].mge.restriction

    def stage_at(self, step: int) -> Stage:
        """The stage that global step ``step`` (0-based) belongs to.

        Steps at or past :attr:`total_steps` belong to the last (finest) stage, so training longer
        than the schedule continues at full resolution.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.stages[min(bisect.bisect_right(self._stops, step), len(self.stages) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view of every stage."""
        return {"total_steps": self.total_steps, "stages": [s.to_dict() for s in self.stages]}

    def __repr__(self) -> str:
        body = ", ".join(f"L{s.level}x{s.iterations}{list(s.batch_sizes)}" for s in self.stages)
        return f"FullMultiscaleSchedule({body})"
