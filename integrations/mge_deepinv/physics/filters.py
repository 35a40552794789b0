"""Coarse versions of convolution kernels (blur PSFs, anti-alias filters)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["coarsen_filter", "downsampling_filter"]

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
            interpolation. (For super-resolution, :func:`downsampling_filter` is closer.)

    Returns:
        The coarse kernels, odd-sized, with the same sums as ``kernel``.
    """
    if kernel.dim() not in (4, 5):
        raise ValueError(f"filters must be (B, C, h, w) or (B, C, d, h, w), got shape {tuple(kernel.shape)}")
    total = kernel.sum(dim=tuple(range(2, kernel.dim())), keepdim=True)
    for _ in range(levels):
        kernel = _coarsen_once(kernel, shift)
    return kernel * (total / kernel.sum(dim=tuple(range(2, kernel.dim())), keepdim=True))


def _sample_average_response(factor: int, levels: int, size: int) -> torch.Tensor:
    """``Q(w) = mean_j exp(i j f w / n) / mean_j exp(i j w / n)``, ``j < n = 2**levels``, on an FFT grid."""
    n = 2**levels
    omega = 2 * math.pi * torch.fft.fftfreq(size, dtype=torch.float64) / n
    j = torch.arange(n, dtype=torch.float64)
    samples = torch.exp(1j * factor * omega[:, None] * j).mean(dim=1)
    pixels = torch.exp(1j * omega[:, None] * j).mean(dim=1)
    return samples / pixels


def downsampling_filter(kernel: torch.Tensor, factor: int, levels: int = 1, *, margin: int = 2) -> torch.Tensor:
    r"""The anti-alias filter of ``Downsampling(factor)`` on a grid ``2**levels`` coarser.

    Area restriction of the low-resolution measurement averages ``n = 2**levels`` of its samples,
    ``factor`` fine pixels apart, where the coarse operator takes one sample of the restricted
    image (an average of ``n`` fine pixels, one apart). The coarse filter is therefore
    :func:`coarsen_filter` of ``kernel`` followed by the ratio of these two averages, per axis,

    .. math::

        Q(\omega) = \frac{\sum_{j<n} e^{i j f \omega / n}}{\sum_{j<n} e^{i j \omega / n}},

    built by frequency sampling and cut to the coarsened kernel's support plus ``margin`` taps on
    each side. ``Q`` holds the ``(f - 1) / 4`` coarse-pixel shift of the two sample grids and the
    spread of the averaged samples, which grows with ``f`` (factor 4: ten times closer than the
    shift alone).

    Args:
        kernel: ``(B, C, h, w)`` anti-alias filters of the fine operator (per-sample filters welcome).
        factor: the integer downsampling factor.
        levels: number of halvings.
        margin: taps added on each side of the coarsened kernel.

    Returns:
        The coarse kernels, odd-sized and centred, with the same sums as ``kernel``.
    """
    if kernel.dim() != 4:
        raise ValueError(f"downsampling filters must be (B, C, h, w), got shape {tuple(kernel.shape)}")
    coarse = coarsen_filter(kernel, levels)
    if levels == 0:
        return coarse
    radius = max(coarse.shape[-2:]) // 2 + margin
    size = 2 * max(64, 4 * radius) + 1  # odd: no Nyquist bin, so the taps come out real
    top, left = radius - coarse.shape[-2] // 2, radius - coarse.shape[-1] // 2
    padded = coarse.new_zeros((*coarse.shape[:2], size, size), dtype=torch.float64)
    padded[..., top : top + coarse.shape[-2], left : left + coarse.shape[-1]] = coarse.double()
    padded = torch.roll(padded, (-radius, -radius), dims=(-2, -1))  # centre tap at index 0
    response = _sample_average_response(factor, levels, size)
    spectrum = torch.fft.fft2(padded) * response[:, None] * response[None, :]
    taps = torch.roll(torch.fft.ifft2(spectrum).real, (radius, radius), dims=(-2, -1))
    taps = taps[..., : 2 * radius + 1, : 2 * radius + 1].to(kernel.dtype)
    total = coarse.sum(dim=(-2, -1), keepdim=True)
    return taps * (total / taps.sum(dim=(-2, -1), keepdim=True))
