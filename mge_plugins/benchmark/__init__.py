"""Host-agnostic pieces of the benchmark: budget accounting, quality curves, diagnostics, memory, report."""

from __future__ import annotations

from .budget import run_cost, steps_within_budget
from .curves import cost_to_target, quality_at_budget, ratio
from .diagnostics import EstimatorVariance, LevelNorms, estimator_variance, flat_gradient, level_difference_norms
from .memory import SavedTensorMeter, peak_memory
from .report import REPORT_SCHEMA, SCHEMA_VERSION, markdown_report, validate_report

__all__ = [
    "REPORT_SCHEMA",
    "SCHEMA_VERSION",
    "EstimatorVariance",
    "LevelNorms",
    "SavedTensorMeter",
    "cost_to_target",
    "estimator_variance",
    "flat_gradient",
    "level_difference_norms",
    "markdown_report",
    "peak_memory",
    "quality_at_budget",
    "ratio",
    "run_cost",
    "steps_within_budget",
    "validate_report",
]
