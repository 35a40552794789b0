"""Level-aware DeepInverse physics: coarse operators, filters, measurement restrictions, noise, block masks."""

from __future__ import annotations

from .cache import CoarsePhysicsCache, physics_fingerprint
from .coarsen import (
    NOISE_MODES,
    OPERATOR_MODES,
    NoCoarseRecipeError,
    coarsen_noise,
    coarsen_physics,
    level_grid_shape,
    register_coarsening,
    register_measurement_restriction,
    restrict_measurement,
)
from .filters import coarsen_filter, downsampling_filter
from .kspace import restrict_kspace
from .masks import BlockMaskGenerator
from .noise import LevelGaussianNoise
from .tomography import restrict_sinogram

__all__ = [
    "NOISE_MODES",
    "OPERATOR_MODES",
    "BlockMaskGenerator",
    "CoarsePhysicsCache",
    "LevelGaussianNoise",
    "NoCoarseRecipeError",
    "coarsen_filter",
    "coarsen_noise",
    "coarsen_physics",
    "downsampling_filter",
    "level_grid_shape",
    "physics_fingerprint",
    "register_coarsening",
    "register_measurement_restriction",
    "restrict_kspace",
    "restrict_measurement",
    "restrict_sinogram",
]
