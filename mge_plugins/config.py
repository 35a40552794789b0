"""Configuration of one Multiscale Gradient Estimation step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .restriction import RESTRICTION_METHODS

__all__ = ["MGEConfig", "default_growth"]


def default_growth(spatial_dims: int) -> int:
    """Batch growth per coarser level that keeps each level's cost equal: ``2**spatial_dims``."""
    return 2**spatial_dims


@dataclass(frozen=True)
class MGEConfig:
    """What one MGE step uses: levels, per-term batch sizes and the restriction.

    Term ``k < K`` uses ``N_k`` samples at levels ``k`` and ``k + 1``; term ``K`` uses ``N_K``
    samples at level ``K``. Batches grow towards the coarse end: ``N_k = round(N_0 * g**k)``,
    where ``g`` defaults to 4 in 2D and 8 in 3D, unless ``batch_sizes`` lists them.

    Args:
        levels: ``K``, number of coarser levels below the finest (0 = plain single-scale).
        batch_size: ``N_0``, the finest term's batch size.
        growth: batch growth ``g >= 1`` per coarser level; ``None`` picks ``2**spatial_dims``.
        batch_sizes: explicit ``(N_0, ..., N_K)``; overrides ``batch_size`` and ``growth``.
        restriction: restriction method, one of :data:`RESTRICTION_METHODS`.
        spatial_dims: 2 for images, 3 for volumes.

    Example:
        >>> MGEConfig(levels=2, batch_size=4).batch_sizes
        (4, 16, 64)
    """

    levels: int = 2
    batch_size: int = 8
    growth: float | None = None
    batch_sizes: Sequence[int] | None = field(default=None)
    restriction: str = "area"
    spatial_dims: int = 2

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (images) or 3 (volumes), got {self.spatial_dims!r}")
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 0:
            raise ValueError(f"levels must be an integer >= 0 (0 = single-scale), got {self.levels!r}")
        if self.restriction not in RESTRICTION_METHODS:
            raise ValueError(
                f"unknown restriction method {self.restriction!r}; use one of "
                f"{', '.join(map(repr, RESTRICTION_METHODS))}"
            )
        if self.batch_sizes is not None:
            sizes = tuple(int(n) for n in self.batch_sizes)
            if len(sizes) != self.levels + 1:
                raise ValueError(
                    f"batch_sizes has {len(sizes)} entries but levels={self.levels} needs "
                    f"{self.levels + 1} (one per term, finest first); set levels={len(sizes) - 1} "
                    "or give one size per term"
                )
            if any(n < 1 for n in sizes):
                raise ValueError(f"every entry of batch_sizes must be >= 1, got {list(sizes)}")
            object.__setattr__(self, "batch_sizes", sizes)
            object.__setattr__(self, "batch_size", sizes[0])
            return
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.growth is not None and not self.growth >= 1:
            raise ValueError(
                f"growth must be >= 1 (coarser terms use at least as many samples), got {self.growth!r}; "
                f"use growth=1 for equal batches or leave it None for {default_growth(self.spatial_dims)} "
                f"in {self.spatial_dims}D"
            )
        growth = default_growth(self.spatial_dims) if self.growth is None else self.growth
        sizes = tuple(max(1, round(self.batch_size * growth**k)) for k in range(self.levels + 1))
        object.__setattr__(self, "batch_sizes", sizes)

    @property
    def num_terms(self) -> int:
        """Number of terms of the telescoping sum, ``levels + 1``."""
        return self.levels + 1
