"""Level-aware DeepInverse physics: coarse operators, filters and coupled noise."""

from __future__ import annotations

from .coarsen import (
    NOISE_MODES,
    NoCoarseRecipeError,
    coarsen_noise,
    coarsen_physics,
    register_coarsening,
    register_measurement_restriction,
    restrict_measurement,
)
from .filters import coarsen_filter
from .noise import LevelGaussianNoise

__all__ = [
    "NOISE_MODES",
    "LevelGaussianNoise",
    "NoCoarseRecipeError",
    "coarsen_filter",
    "coarsen_noise",
    "coarsen_physics",
    "register_coarsening",
    "register_measurement_restriction",
    "restrict_measurement",
]
