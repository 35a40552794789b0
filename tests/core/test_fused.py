"""Fused passes: one weighted pass per level gives the unfused estimator's gradient, for fewer FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mge_plugins import CostMeter, MGEConfig, NonFiniteError, build_strategy, mge_backward, mge_step, restrict
from mge_plugins.checks import check_deterministic
from mge_plugins.cost import step_flops, step_passes, step_work_units
from mge_plugins.host_step import MultiscaleStep


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1)).double()


def _losses(model: nn.Module, x: torch.Tensor, noise: torch.Tensor, calls: list[int] | None = None):
    """Per-sample and mean level losses of a denoiser on (clean, fine-grid noise), deterministic."""

    def per_sample(indices: slice, level: int) -> torch.Tensor:
        if calls is not None:
            calls.append(level)
        clean, noisy = restrict(x[indices], level), restrict(x[indices] + noise[indices], level)
        return (model(noisy) - clean).pow(2).flatten(1).mean(1)

    return per_sample, lambda indices, level: per_sample(indices, level).mean()


def _grads(model: nn.Module) -> torch.Tensor:
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize(("sizes", "base_level"), [((2, 4, 8), 0), ((2, 4, 8), 1), ((4, 2, 8), 0), ((3, 12), 0)])
def test_fused_gradient_equals_the_unfused_one(sizes, base_level):
    model = _model()
    x = torch.rand(max(sizes), 1, 32, 32, dtype=torch.float64)
    noise = 0.1 * torch.randn_like(x)
    per_sample, mean = _losses(model, x, noise)
    slices = [slice(0, n) for n in sizes]
    unfused = mge_backward(mean, slices, base_level=base_level, coupling=False, spatial_dims=2)
    g_unfused = _grads(model)
    fused = mge_backward(per_sample, slices, base_level=base_level, fused=True, spatial_dims=2)
    g_fused = _grads(model)
    assert (g_fused - g_unfused).norm() / g_unfused.norm() < 1e-12
    assert fused.term_values == pytest.approx(unfused.term_values, rel=1e-12, abs=1e-15)
    assert fused.fine_loss == pytest.approx(unfused.fine_loss, rel=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_equal_nested_terms_give_the_one_term_gradient(fused: bool) -> None:
    """Why a small loaded batch's (1, 1, 1) may become (1,): the same samples telescope to the fine loss."""
    model = _model()
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    per_sample, mean = _losses(model, x, 0.1 * torch.randn_like(x))
    loss = per_sample if fused else mean
    mge_backward(loss, [slice(0, 1)] * 3, fused=fused, coupling=False, spatial_dims=2)
    three_levels = _grads(model)
    mge_backward(loss, [slice(0, 1)], fused=fused, coupling=False, spatial_dims=2)
    one_level = _grads(model)
    assert (three_levels - one_level).norm() / one_level.norm() < 1e-12
    mge_backward(loss, [slice(0, 1), slice(0, 1)], fused=fused, coupling=False, spatial_dims=2)
    assert (_grads(model) - one_level).norm() / one_level.norm() < 1e-12
    # A control: two terms of different samples do not telescope to the first sample's loss.
    y = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    per_sample, mean = _losses(model, y, 0.1 * torch.randn_like(y))
    mge_backward(per_sample if fused else mean, [slice(0, 1), slice(0, 2)], fused=fused, coupling=False, spatial_dims=2)
    two = _grads(model)
    mge_backward(per_sample if fused else mean, [slice(0, 1)], fused=fused, coupling=False, spatial_dims=2)
    assert (two - _grads(model)).norm() / two.norm() > 1e-3


def test_fused_takes_one_pass_per_level_and_its_cost_says_so():
    model = _model()
    x = torch.rand(8, 1, 16, 16, dtype=torch.float64)
    calls_fused: list[int] = []
    per_sample, _ = _losses(model, x, torch.zeros_like(x), calls_fused)
    calls_unfused: list[int] = []
    _, mean = _losses(model, x, torch.zeros_like(x), calls_unfused)
    flops = (16.0, 4.0, 1.0)
    fused = mge_backward(
        per_sample, [slice(0, 2), slice(0, 4), slice(0, 8)], fused=True, flops_per_sample=flops, spatial_dims=2
    )
    unfused = mge_backward(mean, [slice(0, 2), slice(0, 4), slice(0, 8)], flops_per_sample=flops, spatial_dims=2)
    assert calls_fused == [0, 1, 2]
    assert calls_unfused == [0, 1, 1, 2, 2]
    # unfused: 2*16 + 2*4 + 4*4 + 4*1 + 8*1 = 68; fused: 2*16 + 4*4 + 8*1 = 56
    assert unfused.cost.flops == 68.0 and fused.cost.flops == 56.0
    assert step_flops((2, 4, 8), flops, fused=True) == 56.0
    assert step_passes((4, 2, 8), fused=True) == [(4, 0), (4, 1), (8, 2)]
    assert step_work_units((2, 8), fused=True) == pytest.approx(2 + 8 / 4)
    assert step_work_units((2, 8)) == pytest.approx(2 + 2 / 4 + 8 / 4)


def test_fused_refuses_a_scalar_loss_and_disjoint_terms():
    model = _model()
    x = torch.rand(10, 1, 16, 16, dtype=torch.float64)
    per_sample, mean = _losses(model, x, torch.zeros_like(x))
    with pytest.raises(ValueError, match=r"one loss per sample, shape \(2,\).*flatten\(1\)\.mean\(1\)"):
        mge_backward(mean, [slice(0, 2), slice(0, 8)], fused=True)
    with pytest.raises(ValueError, match=r"term 1 is not a prefix.*split='nested' or fused=False"):
        mge_backward(per_sample, [slice(0, 2), slice(2, 10)], fused=True)
    tensors = [x[:2], x[2:10]]
    with pytest.raises(ValueError, match="term 1 is not a prefix"):
        mge_backward(lambda b, lv: (model(restrict(b, lv)) ** 2).flatten(1).mean(1), tensors, fused=True)
    with pytest.raises(ValueError, match="split='nested'"):
        MultiscaleStep(build_strategy("mge", levels=1, loaded_batch_size=10), CostMeter(), split="disjoint", fused=True)


def test_fused_reports_a_non_finite_level():
    model = _model()
    x = torch.rand(8, 1, 16, 16, dtype=torch.float64)
    per_sample, _ = _losses(model, x, torch.zeros_like(x))

    def broken(indices: slice, level: int) -> torch.Tensor:
        value = per_sample(indices, level)
        return value * float("nan") if level == 1 else value

    with pytest.raises(NonFiniteError, match="level 1"):
        mge_backward(broken, [slice(0, 2), slice(0, 8)], fused=True, spatial_dims=2)


def test_check_deterministic_catches_noise_drawn_inside_the_loss():
    x = torch.rand(4, 1, 8, 8)
    check_deterministic(lambda i, lv: restrict(x[i], lv).mean(), level=1)  # negative control
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"depends on the samples only.*draw the noise once per loaded batch"):
        check_deterministic(lambda i, lv: (restrict(x[i], lv) + torch.randn(1)).mean(), level=1)
    assert torch.equal(torch.get_rng_state(), state)  # the random stream is left as it was


def test_a_fused_host_step_checks_determinism_on_its_first_step():
    model = _model()
    x = torch.rand(8, 1, 16, 16, dtype=torch.float64)
    step = MultiscaleStep(build_strategy("mge", levels=1, loaded_batch_size=8), CostMeter(baseline_batch_size=8),
                          fused=True)  # fmt: skip

    def noisy(indices: slice, level: int) -> torch.Tensor:
        clean = restrict(x[indices], level)
        return (model(clean + 0.1 * torch.randn_like(clean)) - clean).pow(2).flatten(1).mean(1)

    with pytest.raises(ValueError, match="depends on the samples only"):
        step.run(0, 8, noisy, model=model, input_shape=x.shape)


def test_fused_mge_step_updates_the_weights_as_the_unfused_one():
    x = torch.rand(8, 1, 16, 16, dtype=torch.float64)
    noise = 0.1 * torch.randn_like(x)

    def pose(batch, level):
        clean, n = batch
        return restrict(clean + n, level), restrict(clean, level)

    weights = []
    for fused, loss in ((False, nn.MSELoss()), (True, nn.MSELoss(reduction="none"))):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        meter = CostMeter(baseline_batch_size=8, flops_per_sample=(16.0, 4.0))
        mge_step(model, opt, loss, (x, noise), MGEConfig(levels=1, batch_size=2), pose=pose, meter=meter,
                 coupling=False, fused=fused)  # fmt: skip
        weights.append((torch.cat([p.detach().flatten() for p in model.parameters()]), meter.flops))
    (w_unfused, f_unfused), (w_fused, f_fused) = weights
    assert torch.allclose(w_fused, w_unfused, rtol=0, atol=1e-12)
    assert (f_unfused, f_fused) == (2 * 16 + 2 * 4 + 8 * 4, 2 * 16 + 8 * 4)
    model = _model()
    with pytest.raises(ValueError, match='reduction="none"'):
        mge_step(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), (x, noise),
                 MGEConfig(levels=1, batch_size=2), pose=pose, fused=True, step=0)  # fmt: skip


def test_per_sample_mean_averages_each_sample_and_names_the_fix_for_a_scalar() -> None:
    from mge_plugins.estimator import FusedLossError, per_sample_mean

    loss = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(per_sample_mean(loss, "loss_fn", "fix"), torch.tensor([5.5, 17.5]))
    with pytest.raises(FusedLossError, match=r"^fused=True needs one loss per sample, but MSELoss returned a scalar; "):
        per_sample_mean(loss.mean(), "MSELoss", "use reduction='none'")
    model = _model()
    x = torch.rand(8, 1, 16, 16, dtype=torch.float64)
    plan = build_strategy("mge", levels=1, loaded_batch_size=8).plan(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FusedLossError, match=r"loss_fn returned a scalar; build it without reduction"):
        mge_step(model, opt, nn.MSELoss(), (x, x), plan, fused=True)
