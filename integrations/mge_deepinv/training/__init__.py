"""DeepInverse training with multiscale strategies."""

from __future__ import annotations

from .levels import COARSE_MODES, LevelPoser
from .trainer import MultiscaleTrainer

__all__ = ["COARSE_MODES", "LevelPoser", "MultiscaleTrainer"]
