"""mge-plugins core: Multiscale Gradient Estimation and Full-Multiscale training.

Host-agnostic (PyTorch and NumPy only). The DeepInverse and MONAI adapters live in the
``mge_deepinv`` and ``mge_monai`` packages.
"""

from __future__ import annotations

from .batching import SPLIT_MODES, batch_size_of, required_batch_size, slice_batch, split_batch
from .checkpoint import RandomState, atomic_save, atomic_write, loader_generators, rng_state, set_rng_state
from .checks import check_batch_rank, check_dataset_length, check_network
from .config import MGEConfig, default_growth
from .cost import (
    CostMeter,
    StepCost,
    count_flops,
    measure_level_flops,
    pixel_fraction,
    step_flops,
    step_work_units,
)
from .coupling import CoupledRandomness, restricted_randn
from .distributed import (
    check_ranks_agree,
    ddp_no_sync,
    is_main_process,
    plan_fingerprint,
    rank,
    set_loader_epoch,
    unwrap_model,
    world_size,
)
from .estimator import LevelLoss, MGEStepStats, mge_backward
from .nonfinite import NONFINITE_MODES, NonFiniteError, NonFinitePolicy, NonFiniteStepWarning
from .restriction import RESTRICTION_METHODS, Restrict, check_level_sizes, level_shape, restrict
from .schedule import FullMultiscaleSchedule, Stage, halving_split
from .step import mge_step, restrict_batch
from .strategies import (
    ENTRY_POINT_GROUP,
    FullMultiscaleStrategy,
    MGEStrategy,
    ProgressiveResizingStrategy,
    SingleScaleStrategy,
    StepPlan,
    Strategy,
    StrategyOptions,
    available_strategies,
    build_strategy,
    get_strategy,
    register_strategy,
    strategy_for_loader,
)

__version__ = "0.1.0"

__all__ = [
    "world_size",
    "unwrap_model",
    "set_loader_epoch",
    "rank",
    "plan_fingerprint",
    "is_main_process",
    "ddp_no_sync",
    "check_ranks_agree",
    "ENTRY_POINT_GROUP",
    "NONFINITE_MODES",
    "RESTRICTION_METHODS",
    "SPLIT_MODES",
    "CostMeter",
    "CoupledRandomness",
    "FullMultiscaleSchedule",
    "FullMultiscaleStrategy",
    "ProgressiveResizingStrategy",
    "LevelLoss",
    "MGEConfig",
    "MGEStepStats",
    "MGEStrategy",
    "RandomState",
    "NonFiniteError",
    "NonFinitePolicy",
    "NonFiniteStepWarning",
    "Restrict",
    "SingleScaleStrategy",
    "Stage",
    "StepCost",
    "StepPlan",
    "Strategy",
    "StrategyOptions",
    "atomic_save",
    "atomic_write",
    "available_strategies",
    "batch_size_of",
    "build_strategy",
    "check_batch_rank",
    "check_dataset_length",
    "check_level_sizes",
    "check_network",
    "count_flops",
    "default_growth",
    "get_strategy",
    "halving_split",
    "level_shape",
    "loader_generators",
    "measure_level_flops",
    "mge_backward",
    "mge_step",
    "pixel_fraction",
    "register_strategy",
    "required_batch_size",
    "restrict",
    "restrict_batch",
    "restricted_randn",
    "rng_state",
    "set_rng_state",
    "slice_batch",
    "split_batch",
    "step_flops",
    "step_work_units",
    "strategy_for_loader",
]
