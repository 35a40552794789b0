"""mge-plugins for MONAI: Multiscale Gradient Estimation and Full-Multiscale training.

Swap ``SupervisedTrainer(`` for :class:`MultiscaleSupervisedTrainer` ``(``, or pass a
:class:`MultiscaleIteration` as ``iteration_update=`` to an unmodified ``SupervisedTrainer``.
"""

from __future__ import annotations

from .engines import MultiscaleIteration, MultiscaleSupervisedTrainer
from .handlers import (
    AtomicCheckpointSaver,
    FineStageEarlyStopHandler,
    VerifiedCheckpointLoader,
    from_multiscale_output,
    make_atomic,
)
from .sampler import MultiscaleBatchSampler
from .transforms import LevelPyramidd, RestrictLevel, RestrictLeveld, pyramid_key

__all__ = [
    "AtomicCheckpointSaver",
    "FineStageEarlyStopHandler",
    "LevelPyramidd",
    "MultiscaleBatchSampler",
    "MultiscaleIteration",
    "MultiscaleSupervisedTrainer",
    "RestrictLevel",
    "RestrictLeveld",
    "VerifiedCheckpointLoader",
    "from_multiscale_output",
    "make_atomic",
    "pyramid_key",
]
