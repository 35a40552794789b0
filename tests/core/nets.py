"""Small networks and level losses shared by the core tests."""

from __future__ import annotations

import torch
from torch import nn

from mge_plugins import restrict


def small_net(dims: int = 2, channels: int = 1, width: int = 4, dtype: torch.dtype = torch.float32) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return nn.Sequential(conv(channels, width, 3, padding=1), nn.Tanh(), conv(width, channels, 3, padding=1)).to(dtype)


def denoise_level_loss(model: nn.Module, method: str = "area"):
    """Loss of a (noisy, clean) pair restricted to the level: restrict mode, noise coupled."""

    def level_loss(batch, level: int) -> torch.Tensor:
        y, x = batch
        return (model(restrict(y, level, method)) - restrict(x, level, method)).pow(2).mean()

    return level_loss


def flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])
