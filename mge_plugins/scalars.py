"""The per-step scalars every host logs, under one set of names.

Both adapters put these numbers where their host's loggers already look: ``mge_deepinv`` in the
``logs`` of ``deepinv.Trainer`` (its progress bar, Weights & Biases, MLflow), ``mge_monai`` in the
engine's output (``StatsHandler``, ``TensorBoardStatsHandler``). Every value is a plain ``int`` or
``float``, so any logger takes it.

===========================  ==================================================================
key                          value
===========================  ==================================================================
``mge_stage``                stage of a coarse-to-fine strategy (0 = the coarsest, first stage);
                             ``-1`` for a strategy without stages
``mge_level``                level of the step's finest term (0 = the fine grid)
``mge_term_{k}``             value of term ``k``, finest first: ``l_{L+k} - l_{L+k+1}`` on term
                             ``k``'s batch (``l`` at the coarsest level for the last term), so it
                             can be negative; absent for a single-scale step
``mge_saving``               the run's saving so far: single-scale cost over cost spent, in FLOPs
                             when they were measured, else in work units (``> 1`` is cheaper)
``mge_work_units``           fine-equivalent samples spent by the run so far (all ranks)
``mge_flops``                forward + backward FLOPs spent by the run so far, when measured
``mge_skipped_steps``        steps skipped as non-finite so far (only on a skipped step)
===========================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping

from .cost import CostMeter
from .estimator import MGEStepStats
from .strategies import StepPlan

__all__ = ["SCALAR_KEYS", "step_scalars"]

SCALAR_KEYS: Mapping[str, str] = {
    "mge_stage": "stage of a coarse-to-fine strategy (0 = the coarsest); -1 without stages",
    "mge_level": "level of the step's finest term (0 = the fine grid)",
    "mge_term_{k}": "value of term k, finest first (a difference of two levels' losses, except the last)",
    "mge_saving": "the run's saving so far (single-scale cost / cost spent; FLOPs when measured)",
    "mge_work_units": "fine-equivalent samples spent by the run so far",
    "mge_flops": "forward + backward FLOPs spent by the run so far, when measured",
    "mge_skipped_steps": "steps skipped as non-finite so far (on a skipped step)",
}
"""The keys :func:`step_scalars` writes, with what they hold."""


def step_scalars(
    plan: StepPlan, meter: CostMeter, stats: MGEStepStats | None = None, *, skipped_steps: int | None = None
) -> dict[str, int | float]:
    """The scalars of one training step, after the meter has recorded it.

    Args:
        plan: the step's plan.
        meter: the run's cost record (the step included).
        stats: the estimator's statistics, or ``None`` for a single-scale step (no terms then).
        skipped_steps: the count of skipped steps, given on a skipped step (its terms are left out).

    Returns:
        ``{key: value}`` with the keys of :data:`SCALAR_KEYS`; ``mge_flops`` and ``mge_saving``
        only when known.

    Example:
        >>> from mge_plugins import CostMeter, StepPlan
        >>> meter = CostMeter(baseline_batch_size=8)
        >>> plan = StepPlan(level=1, batch_sizes=(8,), stage=0)
        >>> _ = meter.add(plan.batch_sizes, plan.level)
        >>> step_scalars(plan, meter)
        {'mge_stage': 0, 'mge_level': 1, 'mge_saving': 4.0, 'mge_work_units': 2.0}
    """
    scalars: dict[str, int | float] = {
        "mge_stage": -1 if plan.stage is None else int(plan.stage),
        "mge_level": int(plan.level),
    }
    if stats is not None and skipped_steps is None:
        for k, value in enumerate(stats.term_values):
            scalars[f"mge_term_{k}"] = float(value)
    saving = meter.saving
    if saving is not None:
        scalars["mge_saving"] = float(saving)
    scalars["mge_work_units"] = float(meter.work_units)
    if meter.flops_per_sample is not None:
        scalars["mge_flops"] = float(meter.flops)
    if skipped_steps is not None:
        scalars["mge_skipped_steps"] = int(skipped_steps)
    return scalars
