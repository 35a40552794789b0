"""mge-plugins for DeepInverse: Multiscale Gradient Estimation and Full-Multiscale training.

Swap ``dinv.Trainer(`` for :class:`MultiscaleTrainer` ``(`` to train with MGE or Full-Multiscale.

The adapter's physics layer poses any supported ``deepinv.physics`` operator at a coarse level
(:func:`coarsen_physics`), with noise drawn at the fine grid so the levels stay coupled.
"""

from __future__ import annotations

from .physics import (
    NOISE_MODES,
    OPERATOR_MODES,
    BlockMaskGenerator,
    LevelGaussianNoise,
    NoCoarseRecipeError,
    coarsen_filter,
    coarsen_noise,
    coarsen_physics,
    downsampling_filter,
    register_coarsening,
    register_measurement_restriction,
    restrict_measurement,
)
from .training import COARSE_MODES, LevelPoser, MultiscaleTrainer

__all__ = [
    "COARSE_MODES",
    "NOISE_MODES",
    "OPERATOR_MODES",
    "BlockMaskGenerator",
    "LevelGaussianNoise",
    "LevelPoser",
    "MultiscaleTrainer",
    "NoCoarseRecipeError",
    "coarsen_filter",
    "coarsen_noise",
    "coarsen_physics",
    "downsampling_filter",
    "register_coarsening",
    "register_measurement_restriction",
    "restrict_measurement",
]
