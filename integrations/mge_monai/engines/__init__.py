"""MONAI engines with multiscale training strategies."""

from __future__ import annotations

from .iteration import MultiscaleIteration
from .trainer import MultiscaleSupervisedTrainer

__all__ = ["MultiscaleIteration", "MultiscaleSupervisedTrainer"]
