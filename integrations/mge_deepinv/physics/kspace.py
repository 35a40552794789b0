"""MRI posed at a coarse level: the centred low-frequency block of k-space.

With the orthonormal FFT of DeepInverse's MRI operators, the centred ``(H / 2, W / 2)`` block of the
k-space of an image, multiplied by the half-fine-pixel phase of area restriction and by 1/2, is
the k-space of (nearly) its area restriction: the coarse image keeps the restricted image's scale
and position. :func:`restrict_kspace` does this per level; the recipes crop the sampling mask,
restrict the coil sensitivity maps through k-space the same way (closer to the restricted coil
images than area-pooling the maps: 3.8 % against 4.3 % at level 1 in
``tests/deepinv/test_physics.py``), and pose offline k-space with the same function.
"""

from __future__ import annotations

import deepinv.physics as dp
import torch

from .coarsen import NoCoarseRecipeError, _device, register_coarsening, register_measurement_restriction
from .noise import LevelGaussianNoise

__all__ = ["restrict_kspace"]


def _centre_block(t: torch.Tensor, level: int) -> torch.Tensor:
    """The centred ``(H / 2**level, W / 2**level)`` block of the last two axes."""
    h, w = t.shape[-2:]
    ch, cw = h >> level, w >> level
    top, left = (h - ch) // 2, (w - cw) // 2
    return t[..., top : top + ch, left : left + cw]


def restrict_kspace(kspace: torch.Tensor, level: int) -> torch.Tensor:
    """Complex centred k-space ``(..., H, W)`` of an image, posed ``level`` times coarser.

    Per level: the centred half-size block, the phase of a half fine pixel per axis (the coarse
    pixel centres sit between two fine ones) and a factor 1/2 (orthonormal FFT in 2D).

    :param torch.Tensor kspace: complex tensor, the last two axes centred k-space (as
        ``deepinv.physics.MRI`` computes it).
    :param int level: number of halvings.
    """
    for _ in range(level):
        size = kspace.shape[-2:]
        kspace = _centre_block(kspace, 1)
        phases = []
        for axis, fine in zip((-2, -1), size):
            k = torch.arange(kspace.shape[axis], device=kspace.device) - kspace.shape[axis] // 2
            phases.append(torch.exp(1j * torch.pi * k / fine))
        kspace = kspace * (phases[0][:, None] * phases[1][None, :]) / 2
    return kspace


def _check_size(physics: dp.Physics, level: int) -> None:
    if physics.three_d:
        raise NoCoarseRecipeError(
            f"no coarse recipe for 3D {type(physics).__name__} k-space yet; train it with strategy='single'"
        )
    h, w = physics.mask.shape[-2:]
    if h % 2**level or w % 2**level:
        raise ValueError(
            f"{type(physics).__name__} has k-space size ({h}, {w}), which 2**{level} does not divide; use sizes "
            f"divisible by {2**level} or fewer levels"
        )


def _coarse_mask(physics: dp.Physics, level: int) -> torch.Tensor:
    _check_size(physics, level)
    return _centre_block(physics.mask, level).contiguous()


def _restrict_channels(y: torch.Tensor, level: int) -> torch.Tensor:
    """``restrict_kspace`` of a real ``(B, 2, ..., H, W)`` measurement (real and imaginary channels)."""
    kspace = restrict_kspace(torch.complex(y[:, 0], y[:, 1]), level)
    return torch.stack((kspace.real, kspace.imag), dim=1).to(y.dtype)


@register_coarsening(dp.MRI)
def _mri(physics: dp.MRI, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    mask = _coarse_mask(physics, level)
    return dp.MRI(mask=mask, img_size=tuple(mask.shape[-2:]), noise_model=noise_model, device=_device(physics))


@register_measurement_restriction(dp.MRI)
def _mri_measurement(physics: dp.MRI, y: torch.Tensor, level: int) -> torch.Tensor:
    return _restrict_channels(y, level) * _coarse_mask(physics, level)


@register_coarsening(dp.MultiCoilMRI)
def _multicoil_mri(physics: dp.MultiCoilMRI, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    mask = _coarse_mask(physics, level)
    if isinstance(noise_model, LevelGaussianNoise):
        noise_model.inner_axes = 1  # (B, 2, coils, H, W): the coil axis is not a grid axis
    coil_maps = physics.ifft(restrict_kspace(physics.fft(physics.coil_maps), level))
    return dp.MultiCoilMRI(
        mask=mask,
        coil_maps=coil_maps.to(physics.coil_maps.dtype),
        img_size=tuple(mask.shape[-2:]),
        noise_model=noise_model,
        device=_device(physics),
    )


@register_measurement_restriction(dp.MultiCoilMRI, grid=lambda physics, y: (y.shape[0], 2, *y.shape[-2:]))
def _multicoil_mri_measurement(physics: dp.MultiCoilMRI, y: torch.Tensor, level: int) -> torch.Tensor:
    return _restrict_channels(y, level) * _coarse_mask(physics, level)[:, :, None]
