from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mge_plugins import CostMeter, MultiscaleStep, build_strategy, restrict
from mge_plugins.meshfree import MeshFreeConv2d, MeshFreeConv3d, MeshFreeDenoiser, at_level, current_level


def smooth_field(n: int, dims: int = 2, device: str = "cpu") -> torch.Tensor:
    """A smooth function of [0, 1)^d sampled at cell centres of an n^d grid."""
    t = (torch.arange(n, device=device) + 0.5) / n
    axes = torch.meshgrid(*([t] * dims), indexing="ij")
    u = 1 + torch.sin(2 * math.pi * axes[0]) * torch.cos(2 * math.pi * axes[1])
    u = u + 0.5 * torch.sin(4 * math.pi * sum(axes))
    return u[None, None]


def commutation_error(layer: nn.Module, n: int, dims: int = 2, device: str = "cpu") -> float:
    """``||R(f_h(u)) - f_2h(R u)|| / ||R(f_h(u))||`` away from the border."""
    u = smooth_field(n, dims, device)
    with torch.no_grad():
        fine = restrict(layer(u), 1)
        with at_level(1):
            coarse = layer(restrict(u, 1))
    inner = (Ellipsis, *([slice(2, -2)] * dims))
    a, b = fine[inner], coarse[inner]
    return float((a - b).norm() / a.norm())


def without_constant_part(layer: nn.Module) -> nn.Module:
    """Keep only the derivative part of a layer (what differs between levels)."""
    with torch.no_grad():
        if isinstance(layer, nn.Conv2d | nn.Conv3d):
            layer.weight -= layer.weight.mean(tuple(range(2, layer.weight.dim())), keepdim=True)
            layer.bias.zero_()
        else:
            layer.weight[:, :, 0] = 0
            layer.bias.zero_()
    return layer


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_mesh_free_layers_commute_with_restriction_as_resolution_grows_where_a_3x3_convolution_does_not(
    device: str,
) -> None:
    torch.manual_seed(0)
    mesh_free = without_constant_part(MeshFreeConv2d(1, 4)).to(device)
    standard = without_constant_part(nn.Conv2d(1, 4, 3, padding=1, padding_mode="replicate")).to(device)
    sizes = (32, 64, 128, 256)
    ours = [commutation_error(mesh_free, n, device=device) for n in sizes]
    theirs = [commutation_error(standard, n, device=device) for n in sizes]
    assert all(b < a / 3 for a, b in itertools.pairwise(ours)), ours  # about 4x per doubling: second order
    assert ours[-1] < 2e-3  # 1.0e-3 measured at 256 px
    # A pixel-defined derivative doubles with the spacing: the error stays near 1 and does not fall.
    assert all(e > 0.8 for e in theirs) and theirs[-1] >= 0.9 * theirs[0], theirs


def test_in_3d_too() -> None:
    torch.manual_seed(0)
    layer = without_constant_part(MeshFreeConv3d(1, 2))
    errors = [commutation_error(layer, n, dims=3) for n in (16, 32, 64)]
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3, errors


def test_gradients_are_checked_against_finite_differences() -> None:
    torch.manual_seed(0)
    layer = MeshFreeConv2d(2, 3).double()
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    with at_level(2):
        assert torch.autograd.gradcheck(
            lambda inp, w: nn.functional.conv2d(inp, w.sum(-1)[..., None, None]) + layer(inp), (x, layer.weight)
        )
    layer3 = MeshFreeConv3d(1, 2).double()
    x3 = torch.rand(1, 1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer3, (x3,))


def test_the_level_comes_from_the_estimator_and_is_zero_outside() -> None:
    seen: list[int] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = MeshFreeDenoiser(1, width=4, depth=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(current_level())
            return self.net(x)

    model = Spy()
    images = torch.rand(8, 1, 16, 16)

    def level_loss(indices: slice, level: int) -> torch.Tensor:
        x = restrict(images[indices], level)
        return (model(x) - x).pow(2).mean()

    step = MultiscaleStep(build_strategy("mge", levels=2, loaded_batch_size=8), CostMeter(baseline_batch_size=8))
    seen.clear()
    step.run(0, 8, level_loss, model=model)
    assert seen[-5:] == [0, 1, 1, 2, 2]  # the passes of one MGE step, after the FLOP probe at 0, 1, 2
    assert current_level() == 0
    model(images)
    assert seen[-1] == 0
