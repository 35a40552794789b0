"""mge-plugins core: Multiscale Gradient Estimation and Full-Multiscale training.

Host-agnostic (PyTorch and NumPy only). The DeepInverse and MONAI adapters live in the
``mge_deepinv`` and ``mge_monai`` packages. The package namespace holds what a user of the core
needs; helpers for hosts stay in their submodules (``mge_plugins.checkpoint``,
``mge_plugins.distributed``, ``mge_plugins.checks``, ``mge_plugins.cost``, ...).
"""

from __future__ import annotations

from .batching import required_batch_size, split_batch, term_slices
from .config import MGEConfig
from .cost import CostMeter
from .coupling import CoupledRandomness, restricted_randn
from .estimator import FusedLossError, MGEStepStats, mge_backward
from .host_step import MultiscaleStep
from .nonfinite import NonFiniteError
from .restriction import Restrict, check_level_sizes, restrict
from .schedule import FullMultiscaleSchedule
from .step import mge_step
from .strategies import StepPlan, Strategy, StrategyOptions, available_strategies, build_strategy, register_strategy

__version__ = "0.1.0"

__all__ = [
    "CostMeter",
    "CoupledRandomness",
    "FullMultiscaleSchedule",
    "MGEConfig",
    "MGEStepStats",
    "MultiscaleStep",
    "FusedLossError",
    "NonFiniteError",
    "Restrict",
    "StepPlan",
    "Strategy",
    "StrategyOptions",
    "available_strategies",
    "build_strategy",
    "check_level_sizes",
    "mge_backward",
    "mge_step",
    "register_strategy",
    "required_batch_size",
    "restrict",
    "restricted_randn",
    "split_batch",
    "term_slices",
]
