"""The evaluation shared by ``mge-train`` and ``mge-bench``: fixed crops, fixed noise, deepinv's metrics."""

from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from mge_deepinv.evaluation import evaluate, held_out_crops, measure, quality_metrics, reconstruct, score

from .conftest import small_model


def test_held_out_crops_are_fixed_by_the_seed() -> None:
    crops = held_out_crops(16, 4, seed=2)
    assert crops.shape == (4, 1, 16, 16)
    assert torch.equal(crops, held_out_crops(16, 4, seed=2))
    assert not torch.equal(crops, held_out_crops(16, 4, seed=3))
    assert held_out_crops(16, 2, seed=2, channels=3).shape == (2, 3, 16, 16)


def test_measurements_follow_the_seed_and_leave_the_rng_alone() -> None:
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    clean = held_out_crops(16, 2, seed=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    y = measure(physics, clean, seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(y, measure(physics, clean, seed=1))
    assert not torch.equal(y, measure(physics, clean, seed=2))


def test_evaluate_scores_the_reconstruction_with_deepinvs_metrics() -> None:
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    model = small_model().train()
    clean = held_out_crops(16, 3, seed=0)
    y, x_net = reconstruct(model, physics, clean, seed=1)
    assert model.training  # mode restored
    assert torch.equal(y, measure(physics, clean, seed=1))
    scores = evaluate(model, physics, clean, seed=1)
    assert scores == score(x_net, clean)
    psnr, ssim = quality_metrics()
    assert scores["psnr"] == pytest.approx(psnr(x_net, clean).mean().item())
    assert scores["ssim"] == pytest.approx(ssim(x_net, clean).mean().item())
    assert [type(m).__name__ for m in quality_metrics()] == ["PSNR", "SSIM"]
