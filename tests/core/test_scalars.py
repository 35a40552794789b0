from __future__ import annotations

import math

from mge_plugins import CostMeter, MGEStepStats, StepPlan
from mge_plugins.scalars import SCALAR_KEYS, step_scalars


def test_an_mge_step_gives_its_terms_and_the_runs_cost_so_far() -> None:
    meter = CostMeter(baseline_batch_size=16, flops_per_sample=(100.0, 25.0, 6.25))
    plan = StepPlan(level=0, batch_sizes=(4, 8, 16))
    meter.add(plan.batch_sizes)
    meter.add(plan.batch_sizes)
    stats = MGEStepStats((0.5, -0.125, 0.25), 0.6, plan.batch_sizes, 0)
    scalars = step_scalars(plan, meter, stats)
    # 4 * 1.25 + 8 * 0.3125 + 16 * 0.0625 = 8.5 fine samples per step, against 16.
    assert scalars == {
        "mge_stage": -1,
        "mge_level": 0,
        "mge_term_0": 0.5,
        "mge_term_1": -0.125,
        "mge_term_2": 0.25,
        "mge_saving": 16 / 8.5,
        "mge_work_units": 17.0,
        "mge_flops": 1700.0,
    }
    assert all(type(v) in (int, float) for v in scalars.values())
    assert {k if not k.startswith("mge_term_") else "mge_term_{k}" for k in scalars} <= set(SCALAR_KEYS)


def test_a_skipped_step_gives_the_count_and_no_terms() -> None:
    meter = CostMeter(baseline_batch_size=8)
    plan = StepPlan(level=1, batch_sizes=(8,), stage=0)
    meter.add(plan.batch_sizes, plan.level)
    nan = float("nan")
    scalars = step_scalars(plan, meter, MGEStepStats((nan,), nan, (8,), 1, skipped=True), skipped_steps=3)
    assert scalars == {"mge_stage": 0, "mge_level": 1, "mge_saving": 4.0, "mge_work_units": 2.0, "mge_skipped_steps": 3}
    assert not any(isinstance(v, float) and math.isnan(v) for v in scalars.values())
