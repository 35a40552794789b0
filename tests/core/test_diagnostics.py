"""The core's diagnostics: budget accounting, curves, gradient variance, level differences and memory."""

from __future__ import annotations

import pytest
import torch

from mge_plugins import build_strategy
from mge_plugins.cost import step_flops
from mge_plugins.diagnostics import (
    SavedTensorMeter,
    cost_to_target,
    estimator_variance,
    level_difference_norms,
    peak_memory,
    quality_at_budget,
    run_cost,
    steps_within_budget,
)

from .nets import small_net

FLOPS = (16.0, 4.0, 1.0)


def flop_cost(plan) -> float:
    return step_flops(plan.batch_sizes, FLOPS, base_level=plan.level)


@pytest.mark.parametrize("steps", [4, 7, 50, 101])
def test_run_cost_equals_the_sum_over_steps(steps: int) -> None:
    for name in ("single", "mge", "full-multiscale", "progressive-resizing"):
        strategy = build_strategy(name, loaded_batch_size=16, levels=2, iterations=steps)
        assert run_cost(strategy, steps, flop_cost) == pytest.approx(
            sum(flop_cost(strategy.plan(t)) for t in range(steps)), rel=1e-12
        )


@pytest.mark.parametrize("name", ["single", "mge", "full-multiscale", "progressive-resizing"])
def test_steps_within_budget_is_the_longest_run_that_fits(name: str) -> None:
    def make(t: int):
        return build_strategy(name, loaded_batch_size=16, levels=2, iterations=t)

    budget = 100 * flop_cost(make(100).plan(0)) if name != "single" else 100 * 16 * 16.0
    found = steps_within_budget(make, budget, flop_cost)
    costs = {t: run_cost(make(t), t, flop_cost) for t in range(4, 3 * found)}
    assert costs[found] <= budget
    assert found == max(t for t, c in costs.items() if c <= budget)


def test_steps_within_budget_names_the_cheapest_run_when_nothing_fits() -> None:
    with pytest.raises(ValueError, match="does not fit the cheapest run"):
        steps_within_budget(lambda t: build_strategy("single", batch_size=4), 10.0, lambda plan: 64.0)


CURVE = [
    {"flops": 0.0, "seconds": 0.0, "psnr": 20.0},
    {"flops": 10.0, "seconds": 2.0, "psnr": 30.0},
    {"flops": 20.0, "seconds": 4.0, "psnr": 29.0},
    {"flops": 30.0, "seconds": 6.0, "psnr": 32.0},
]


def test_quality_at_budget_interpolates_inside_the_curve_only() -> None:
    assert quality_at_budget(CURVE, 5.0) == 25.0
    assert quality_at_budget(CURVE, 15.0) == 29.5
    assert quality_at_budget(CURVE, 30.0) == 32.0
    assert quality_at_budget(CURVE, 30.5) is None
    assert quality_at_budget(CURVE[1:], 5.0) is None


def test_cost_to_target_is_the_first_crossing() -> None:
    assert cost_to_target(CURVE, 25.0) == 5.0
    assert cost_to_target(CURVE, 25.0, cost_key="seconds") == 1.0
    # 29.5 is crossed on the way up to 30, before the dip: the first crossing counts.
    assert cost_to_target(CURVE, 29.5) == 9.5
    assert cost_to_target(CURVE, 31.0) == pytest.approx(20 + 10 * 2 / 3)
    assert cost_to_target(CURVE, 32.5) is None
    assert cost_to_target(CURVE, 19.0) == 0.0


def test_estimator_variance_of_a_batch_mean_falls_as_one_over_the_batch() -> None:
    g = torch.Generator().manual_seed(0)
    dim, batch = 500, 4
    v = estimator_variance(lambda: torch.randn(batch, dim, generator=g, dtype=torch.float64).mean(0), 400, cost=batch)
    assert v.variance == pytest.approx(dim / batch, rel=0.05)
    assert v.variance_times_cost == pytest.approx(dim, rel=0.05)
    with pytest.raises(ValueError, match="at least 2 draws"):
        estimator_variance(lambda: torch.zeros(3), 1)


def test_level_difference_norms_vanish_when_levels_pose_the_same_problem() -> None:
    model = small_net(2)
    params = list(model.parameters())
    x = torch.rand(3, 1, 16, 16)
    same = level_difference_norms(lambda b, lv: model(b).pow(2).mean(), [x[i : i + 1] for i in range(3)], 2, params)
    assert [n.difference for n in same] == [0.0, 0.0]
    assert all(n.gradient > 0 for n in same)

    def restricted(b: torch.Tensor, level: int) -> torch.Tensor:
        xk = torch.nn.functional.avg_pool2d(b, 2**level) if level else b
        return (model(xk) - xk).pow(2).mean()

    differ = level_difference_norms(restricted, [x[i : i + 1] for i in range(3)], 2, params)
    assert all(0 < n.difference for n in differ)
    assert differ[0].relative == pytest.approx(differ[0].difference / differ[0].gradient)


def test_saved_tensor_memory_grows_exactly_linearly_with_the_batch() -> None:
    model = small_net(2, width=8)
    x = torch.rand(8, 1, 32, 32)

    def step(n: int):
        return lambda: model(x[:n]).pow(2).mean().backward()

    peaks = {n: peak_memory(step(n))["saved_bytes"] for n in (2, 4, 8)}
    # Activations grow with the batch; the weights saved by each layer do not.
    assert peaks[8] - peaks[4] == 2 * (peaks[4] - peaks[2]) > 0
    assert peak_memory(step(4))["cuda_bytes"] is None
    with SavedTensorMeter() as meter:
        loss = model(x).pow(2).mean()
        assert meter.live == meter.peak > 0
        loss.backward()
    assert meter.live == 0  # backward released every saved tensor
