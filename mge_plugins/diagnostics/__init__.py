"""Measurements any user of the estimator can take: gradient variance, level differences, memory, budgets.

- :mod:`~mge_plugins.diagnostics.gradients`: does MGE pay on this problem? The variance of a gradient
  estimator at equal cost, and the per-level norms of ``grad l_k - grad l_{k+1}``.
- :mod:`~mge_plugins.diagnostics.memory`: peak bytes saved for backward (any device) and the CUDA
  allocator's peak.
- :mod:`~mge_plugins.diagnostics.budget`: what a strategy's run costs, and how many steps fit a budget.
- :mod:`~mge_plugins.diagnostics.curves`: quality at a budget and the cost of reaching a target quality.

Only PyTorch and NumPy are needed.
"""

from __future__ import annotations

from .budget import run_cost, steps_within_budget
from .curves import cost_to_target, quality_at_budget, ratio
from .gradients import EstimatorVariance, LevelNorms, estimator_variance, flat_gradient, level_difference_norms
from .load import LoadMonitor, LoadReport
from .memory import SavedTensorMeter, peak_memory

__all__ = [
    "LoadMonitor",
    "LoadReport",
    "EstimatorVariance",
    "LevelNorms",
    "SavedTensorMeter",
    "cost_to_target",
    "estimator_variance",
    "flat_gradient",
    "level_difference_norms",
    "peak_memory",
    "quality_at_budget",
    "ratio",
    "run_cost",
    "steps_within_budget",
]
