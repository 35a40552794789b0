"""Handlers for MONAI engines, and the ``output_transform`` of the multiscale scalars for MONAI's own."""

from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, VerifiedCheckpointLoader, make_atomic
from .early_stop import FineStageEarlyStopHandler
from .scalars import SCALAR_PREFIX, from_multiscale_output

__all__ = [
    "SCALAR_PREFIX",
    "AtomicCheckpointSaver",
    "FineStageEarlyStopHandler",
    "VerifiedCheckpointLoader",
    "from_multiscale_output",
    "make_atomic",
]
