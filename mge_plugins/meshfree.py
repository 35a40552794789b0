r"""Mesh-free convolutions: layers whose parameters define one continuous operator at every level.

A standard 3x3 convolution is defined in pixels: the same weights mean a different operator on a
grid twice as coarse, so its gradients at two levels disagree and MGE's differences stay large.
:class:`MeshFreeConv2d` and :class:`MeshFreeConv3d` instead learn coefficients on scaled
finite-difference stencils,

.. math::

    f_h(u) = \sum_s W_s \, h^{-|s|} D_s u,

with :math:`D_s` the identity, the first and the second central differences along each axis
(and the mixed ones), :math:`|s|` their order, :math:`h = 2^{\text{level}}` the mesh spacing in
fine pixels and :math:`W_s` a ``1x1`` channel mixing per stencil. On smooth inputs the layer then
approximates the same differential operator :math:`\sum_s W_s \partial_s u` at every level, up to
:math:`O(h^2)`, so restriction and the layer nearly commute.

The layer reads the level from :func:`current_level`, which :func:`~mge_plugins.mge_backward`
(and so every host) sets around each ``level_loss`` call with :func:`at_level`; outside that
context the level is 0 (the fine grid, as for evaluation).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MeshFreeConv2d", "MeshFreeConv3d", "MeshFreeDenoiser", "at_level", "current_level"]

_LEVEL: contextvars.ContextVar[int] = contextvars.ContextVar("mge_level", default=0)


def current_level() -> int:
    """The level the estimator is evaluating now (0 outside :func:`at_level`)."""
    return _LEVEL.get()


@contextlib.contextmanager
def at_level(level: int) -> Iterator[None]:
    """Evaluate the enclosed code at ``level`` (for mesh-free layers)."""
    token = _LEVEL.set(int(level))
    try:
        yield
    finally:
        _LEVEL.reset(token)


def _stencils(dims: int) -> tuple[torch.Tensor, list[int]]:
    """3^d stencils (identity, first, second and mixed central differences) and their orders."""
    centre = (1,) * dims
    kernels, orders = [], []

    def unit(offsets: dict[tuple[int, ...], float]) -> torch.Tensor:
        k = torch.zeros((3,) * dims, dtype=torch.float64)
        for index, value in offsets.items():
            k[index] += value
        return k

    kernels.append(unit({centre: 1.0}))
    orders.append(0)
    for axis in range(dims):
        plus = tuple(2 if a == axis else 1 for a in range(dims))
        minus = tuple(0 if a == axis else 1 for a in range(dims))
        kernels.append(unit({plus: 0.5, minus: -0.5}))
        orders.append(1)
        kernels.append(unit({plus: 1.0, minus: 1.0, centre: -2.0}))
        orders.append(2)
    for a, b in itertools.combinations(range(dims), 2):
        offsets: dict[tuple[int, ...], float] = {}
        for sa, sb in itertools.product((-1, 1), repeat=2):
            index = tuple(1 + (sa if i == a else sb if i == b else 0) for i in range(dims))
            offsets[index] = sa * sb / 4.0
        kernels.append(unit(offsets))
        orders.append(2)
    return torch.stack(kernels), orders


class _MeshFreeConv(nn.Module):
    dims = 2

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        stencils, orders = _stencils(self.dims)
        self.register_buffer("stencils", stencils.float(), persistent=False)
        self.register_buffer("orders", torch.tensor(orders, dtype=torch.float32), persistent=False)
        count = len(orders)
        self.in_channels, self.out_channels = in_channels, out_channels
        scale = (in_channels * count) ** -0.5
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, count) * scale)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator discretised at spacing ``h = 2**current_level()``."""
        h = 2.0 ** current_level()
        scaled = self.weight * (h ** -self.orders.to(self.weight))  # (out, in, stencils)
        kernel = torch.einsum("ois,s...->oi...", scaled, self.stencils.to(self.weight))
        conv = F.conv2d if self.dims == 2 else F.conv3d
        padded = F.pad(x, (1, 1) * self.dims, mode="replicate")
        return conv(padded, kernel, self.bias)


class MeshFreeConv2d(_MeshFreeConv):
    """A 3x3 mesh-free convolution on ``(B, C, H, W)``: a learnt differential operator up to order 2.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        bias: add a learnable bias.

    Example:
        >>> layer = MeshFreeConv2d(1, 4)
        >>> with at_level(1):
        ...     layer(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    dims = 2


class MeshFreeConv3d(_MeshFreeConv):
    """A 3x3x3 mesh-free convolution on ``(B, C, D, H, W)`` (see :class:`MeshFreeConv2d`)."""

    dims = 3


class MeshFreeDenoiser(nn.Module):
    """A residual denoiser of mesh-free convolutions, for 2D or 3D, ``model(y) -> x``.

    Args:
        channels: image channels.
        width: hidden channels.
        depth: number of mesh-free convolutions (at least 2).
        spatial_dims: 2 or 3.

    Example:
        >>> MeshFreeDenoiser(1, width=8, depth=3)(torch.rand(2, 1, 16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 5, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = MeshFreeConv2d if spatial_dims == 2 else MeshFreeConv3d
        layers: list[nn.Module] = [conv(channels, width), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [conv(width, width), nn.ReLU()]
        layers.append(conv(width, channels))
        self.body = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, *args: object) -> torch.Tensor:
        """The residual estimate ``y - body(y)`` (extra host arguments, such as a physics, are ignored)."""
        return y - self.body(y)
