from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from mge_plugins import CostMeter, MGEConfig, build_strategy, mge_step, restrict
from mge_plugins.step import restrict_batch

from .nets import small_net


def make_data(n: int = 32, size: int = 32):
    x = torch.rand(n, 1, size, size)
    return x + 0.1 * torch.randn_like(x), x


def test_zero_levels_reproduces_plain_sgd_exactly() -> None:
    torch.manual_seed(0)
    plain, multiscale = small_net(2), small_net(2)
    multiscale.load_state_dict(plain.state_dict())
    opt_a = torch.optim.Adam(plain.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(multiscale.parameters(), lr=1e-2)
    loss_fn = nn.MSELoss()
    for _ in range(5):
        y, x = make_data(8)
        opt_a.zero_grad()
        loss_fn(plain(y), x).backward()
        opt_a.step()
        mge_step(multiscale, opt_b, loss_fn, (y, x), MGEConfig(levels=0, batch_size=8))
    for a, b in zip(plain.parameters(), multiscale.parameters()):
        assert torch.equal(a, b)


def test_mge_step_lowers_fine_loss() -> None:
    model = small_net(2, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    y, x = make_data(64)
    with torch.no_grad():
        before = nn.functional.mse_loss(model(y), x).item()
    for _ in range(40):
        stats = mge_step(model, opt, nn.MSELoss(), (y, x), MGEConfig(levels=2, batch_size=2))
    with torch.no_grad():
        after = nn.functional.mse_loss(model(y), x).item()
    assert after < 0.5 * before
    assert stats.batch_sizes == (2, 8, 32)


def test_full_multiscale_plan_drives_the_step() -> None:
    model = small_net(2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    strategy = build_strategy("full-multiscale", levels=2, batch_size=2, iterations=[2, 1, 1])
    meter = CostMeter(baseline_batch_size=2)
    y, x = make_data(32)
    levels = []
    for step in range(strategy.total_steps):
        stats = mge_step(model, opt, nn.MSELoss(), (y, x), strategy.plan(step), meter=meter)
        levels.append((stats.base_level, stats.batch_sizes))
    assert levels == [(2, (2,)), (2, (2,)), (1, (2, 8)), (0, (2, 8, 32))]
    expected = 2 * 2 / 16 + (2 * (1 / 4 + 1 / 16) + 8 / 16) + (2 * 1.25 + 8 * (0.25 + 1 / 16) + 32 / 16)
    assert meter.work_units == pytest.approx(expected)
    assert meter.baseline_work_units == 8


def test_custom_pose_is_used_at_every_level() -> None:
    model = small_net(2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    seen = []

    def pose(batch, level):
        seen.append(level)
        clean = restrict(batch[1], level)
        return clean + 0.05 * torch.randn_like(clean), clean

    mge_step(model, opt, nn.MSELoss(), make_data(8), MGEConfig(levels=1, batch_size=2), pose=pose)
    assert seen == [0, 1, 1]


def test_grad_scaler_gives_the_unscaled_update() -> None:
    torch.manual_seed(0)
    a, b = small_net(2), small_net(2)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    batch = make_data(8)
    config = MGEConfig(levels=1, batch_size=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    mge_step(a, opt_a, nn.MSELoss(), batch, config)
    mge_step(b, opt_b, nn.MSELoss(), batch, config, scaler=scaler)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7)


def test_max_grad_norm_clips_once_after_all_terms() -> None:
    model = small_net(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mge_step(model, opt, nn.MSELoss(), make_data(8), MGEConfig(levels=1, batch_size=2), max_grad_norm=1e-3)
    total = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()
    assert total == pytest.approx(1e-3, rel=1e-4)


def test_restrict_batch_leaves_non_images_alone() -> None:
    batch = {"image": torch.rand(2, 1, 8, 8), "label": torch.tensor([1, 2]), "mask": torch.ones(2, 1, 8, 8).long()}
    out = restrict_batch(batch, 1)
    assert out["image"].shape == (2, 1, 4, 4) and out["label"] is batch["label"] and out["mask"] is batch["mask"]


def test_a_short_batch_caps_every_term_at_its_size() -> None:
    model = small_net(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = mge_step(model, opt, nn.MSELoss(), make_data(16), MGEConfig(levels=2, batch_size=2))
    assert stats.batch_sizes == (2, 8, 16)
    with pytest.raises(ValueError, match="disjoint split into 3 terms needs at least 3 samples, but the batch has 2"):
        mge_step(model, opt, nn.MSELoss(), make_data(2), MGEConfig(levels=2, batch_size=2), split="disjoint")


def test_integer_images_are_refused_not_passed_through_at_full_size() -> None:
    model = small_net(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    images = (torch.rand(8, 1, 16, 16) * 255).to(torch.uint8)
    with pytest.raises(ValueError, match=r"torch.uint8 images .*images.float\(\) / 255"):
        mge_step(model, opt, nn.MSELoss(), (images, images), MGEConfig(levels=1, batch_size=2))

    # A pose of the caller's own decides how integer tensors are posed (e.g. labels by majority).
    def pose(b, level):
        x = restrict(b[0].float() / 255, level)
        return x, x

    assert not mge_step(
        model, opt, nn.MSELoss(), (images, images), MGEConfig(levels=1, batch_size=2), pose=pose
    ).skipped


def test_importing_the_core_imports_no_host_framework() -> None:
    code = (
        "import sys, mge_plugins; "
        "hosts = sorted(m for m in sys.modules if m.split('.')[0] in ('deepinv', 'monai', 'ignite')); "
        "print(hosts); sys.exit(1 if hosts else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
