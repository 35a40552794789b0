"""Coarse versions of convolution kernels (blur PSFs, anti-alias filters)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["coarsen_filter"]

_TENT = (0.25, 0.5, 0.25)


def _full_conv_along(kernel: torch.Tensor, taps: tuple[float, ...], axis: int) -> torch.Tensor:
    """Full (growing) 1-D convolution of every kernel in ``kernel`` along spatial ``axis``."""
    spatial = kernel.dim() - 2
    moved = kernel.movedim(2 + axis, -1)
    shape = moved.shape
    weight = torch.tensor(taps, dtype=kernel.dtype, device=kernel.device).flip(0).reshape(1, 1, -1)
    out = F.conv1d(moved.reshape(-1, 1, shape[-1]), weight, padding=len(taps) - 1)
    out = out.reshape(*shape[:-1], out.shape[-1]).movedim(-1, 2 + axis)
    assert out.dim() == spatial + 2
    return out


def _coarsen_once(kernel: torch.Tensor, shift: float) -> torch.Tensor:
    spatial = kernel.dim() - 2
    if kernel.shape[-1] % 2 == 0:  # even kernels: pad to odd so a centre tap exists
        kernel = F.pad(kernel, (0, 1) * spatial)
    for axis in range(spatial):
        kernel = _full_conv_along(kernel, _TENT, axis)
    centre = kernel.shape[-1] // 2
    half = centre // 2
    index = slice(centre - 2 * half, centre + 2 * half + 1, 2)
    kernel = kernel[(..., *([index] * spatial))]
    if shift:
        for axis in range(spatial):
            kernel = _full_conv_along(kernel, (shift, 1.0 - shift), axis)
        kernel = F.pad(kernel, (0, 1) * spatial)
    return kernel


def coarsen_filter(kernel: torch.Tensor, levels: int = 1, *, shift: float = 0.0) -> torch.Tensor:
    """The kernel acting on a grid ``2**levels`` coarser, for area (average-pooling) restriction.

    One level smooths the kernel with a centred tent ``[1, 2, 1] / 4`` per axis, keeps every
    second tap around the centre tap (so the result is odd-sized and centred), and renormalises
    to the original sum. With restriction ``R``, ``R(h * x) ~ coarsen_filter(h) * R(x)``.
    (DeepInverse's own ``coarse_blur_filter`` returns even kernels, shifted by half a pixel.)

    Args:
        kernel: ``(B, C, h, w)`` or ``(B, C, d, h, w)`` kernels (per-sample filters welcome).
        levels: number of halvings.
        shift: sub-pixel shift, in coarse pixels per level, folded into the kernel by linear
            interpolation (super-resolution with factor ``f`` needs ``(f - 1) / 4``).

    Returns:
        The coarse kernels, odd-sized, with the same sums as ``kernel``.
    """
    if kernel.dim() not in (4, 5):
        raise ValueError(f"filters must be (B, C, h, w) or (B, C, d, h, w), got shape {tuple(kernel.shape)}")
    total = kernel.sum(dim=tuple(range(2, kernel.dim())), keepdim=True)
    for _ in range(levels):
        kernel = _coarsen_once(kernel, shift)
    return kernel * (total / kernel.sum(dim=tuple(range(2, kernel.dim())), keepdim=True))
