from __future__ import annotations

import pytest

from mge_plugins import CostMeter
from mge_plugins.cost import pixel_fraction, step_flops, step_work_units


def test_work_units() -> None:
    assert pixel_fraction(2, 2) == 1 / 16 and pixel_fraction(1, 3) == 1 / 8
    assert step_work_units([8]) == 8
    # 3D: 1 * (1 + 1/8) + 8 * (1/8 + 1/64) + 64 / 64
    assert step_work_units([1, 8, 64], spatial_dims=3) == pytest.approx(1.125 + 1.125 + 1)
    # Per-level cost is balanced by the default growth: each difference term costs N_0 (1 + 1/g).
    assert step_work_units([2, 8, 32, 128]) == pytest.approx(3 * 2.5 + 2)
    assert step_work_units([4], base_level=2) == pytest.approx(4 / 16)


def test_step_flops_and_too_short_table() -> None:
    per_sample = [64.0, 16.0, 4.0]
    assert step_flops([1, 4], per_sample) == 1 * (64 + 16) + 4 * 16
    assert step_flops([2], per_sample, base_level=2) == 8
    with pytest.raises(ValueError, match=r"covers levels 0\.\.2 but the step reaches level 3"):
        step_flops([1, 1], per_sample, base_level=2)


def test_meter_accumulates_and_compares_with_single_scale() -> None:
    meter = CostMeter(spatial_dims=2, baseline_batch_size=8, flops_per_sample=[16.0, 4.0, 1.0])
    cost = meter.add([8], base_level=2)
    assert cost.work_units == 0.5 and cost.flops == 8.0
    meter.add([8, 32], base_level=1)
    assert meter.steps == 2
    assert meter.work_units == pytest.approx(0.5 + 8 * (0.25 + 0.0625) + 32 * 0.0625)
    assert meter.baseline_work_units == 16
    assert meter.baseline_flops == 2 * 8 * 16
    assert meter.saving == pytest.approx(16 / meter.work_units)
    restored = CostMeter(baseline_batch_size=8, flops_per_sample=[16.0, 4.0, 1.0])
    restored.load_state_dict(meter.state_dict())
    assert restored.summary() == meter.summary()


def test_meter_without_flops() -> None:
    meter = CostMeter(baseline_batch_size=2)
    assert meter.saving is None
    meter.add([2])
    assert meter.summary()["flops"] is None and meter.saving == 1.0


def test_saving_is_the_flop_saving_and_a_padding_network_is_flagged() -> None:
    proportional = CostMeter(baseline_batch_size=8, flops_per_sample=[16.0, 4.0, 1.0])
    proportional.add([8], base_level=2)
    assert proportional.saving == proportional.flop_saving == pytest.approx(16.0) == proportional.work_saving
    padded = CostMeter(baseline_batch_size=8, flops_per_sample=[16.0, 16.0, 16.0])  # every level padded to one size
    padded.add([8], base_level=2)
    with pytest.warns(UserWarning, match=r"FLOP saving \(1.00x\) and the pixel saving \(16.00x\) differ"):
        assert padded.saving == pytest.approx(1.0)
    summary = padded.summary()
    assert summary["saving"] == summary["flop_saving"] == pytest.approx(1.0)
    assert summary["work_saving"] == pytest.approx(16.0)


def test_count_flops_survives_autograd_inside_the_counted_code() -> None:
    # An operator whose adjoint is a vector-Jacobian product (deepinv's Tomography) runs
    # torch.autograd.grad through a module while the FLOPs are counted.
    import torch

    from mge_plugins.cost import count_flops

    layer = torch.nn.Linear(8, 8, bias=False)

    def adjoint_then_forward() -> None:
        x = torch.zeros(1, 8, requires_grad=True)
        (adjoint,) = torch.autograd.grad(layer(x), x, torch.ones(1, 8))
        layer(adjoint)

    assert count_flops(adjoint_then_forward) == 3 * (2 * 8 * 8)  # forward, its input gradient, forward
