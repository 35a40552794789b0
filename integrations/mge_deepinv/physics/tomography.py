"""Parallel-beam tomography posed at a coarse level: a coarser image grid, fewer detector bins.

The level-``k`` operator is ``deepinv.physics.Tomography`` for ``img_width / 2**k`` with the same
angles and options. Its sinogram has about ``1 / 2**k`` as many detector bins, each ``2**k``
fine bins wide, and sums over ``2**k`` times fewer (coarse) pixels per ray. An offline sinogram is
posed at level ``k`` by :func:`restrict_sinogram`: the average of the fine sinogram over each
coarse bin (area pooling along the detector axis, with fractional bin edges) times ``2**-k``, or,
for ``normalize=True``, times ``2**-k`` and the ratio of the two operators' norms. The bin edges
follow each operator's own rotation axis: DeepInverse pads the image to ``ceil(sqrt(2) W)`` and
rotates about the padded centre, which for an odd padded width lies half a pixel off the image
centre, so the coarse bins shift by ``delta (cos t - sin t)`` at angle ``t``. Without that shift
the sinograms are 5 % apart at level 1 (0.4 % with it, in ``tests/deepinv/test_physics.py``).

The level's operators share their Radon grids, built once per geometry (the costly part of a
``Tomography``); each has its own noise model. Fan-beam geometry has no recipe yet.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import deepinv.physics as dp
import torch
from deepinv.physics.functional.radon import SQRT2

from .coarsen import NoCoarseRecipeError, _device, register_coarsening, register_measurement_restriction
from .noise import LevelGaussianNoise

__all__ = ["restrict_sinogram"]


def _check(physics: dp.Tomography, level: int) -> int:
    """The level's image width, or why there is none."""
    if physics.fan_beam:
        raise NoCoarseRecipeError("no coarse recipe for fan-beam Tomography yet; train it with strategy='single'")
    width = physics.img_width
    if width % 2**level:
        raise ValueError(
            f"Tomography has img_width {width}, which 2**{level} does not divide; use widths divisible by "
            f"{2**level} or fewer levels"
        )
    return width // 2**level


def _geometry(width: int, circle: bool) -> tuple[int, float]:
    """Detector bins and the rotation axis (image pixel coordinates) of DeepInverse's parallel-beam Radon."""
    if circle:
        return width, (width - 1) / 2
    bins = int((SQRT2 * width).ceil())  # as deepinv.physics.functional.Radon pads, in float32
    before = bins // 2 - width // 2
    return bins, (bins - 1) / 2 - before


@lru_cache(maxsize=64)
def _norm(
    width: int, angles: tuple[float, ...], circle: bool, parallel: bool, backprop: bool, dtype: torch.dtype, device: str
) -> float:
    """The operator norm DeepInverse gives ``Tomography(normalize=True)`` for this geometry."""
    physics = dp.Tomography(
        torch.tensor(angles, dtype=dtype, device=device), width, circle=circle, parallel_computation=parallel,
        adjoint_via_backprop=backprop, normalize=True, dtype=dtype, device=device,
    )  # fmt: skip
    return float(physics.operator_norm)


def _scale(physics: dp.Tomography, level: int) -> float:
    """``s`` with ``A_k(R x) ~ s * pool(A x)``: ``2**-k``, times the norms' ratio when normalised."""
    scale = 2.0**-level
    if physics.normalize:
        key = (
            tuple(physics.angles.tolist()), physics.radon.circle, physics.radon.parallel_computation,
            physics.adjoint_via_backprop, physics.dtype, str(_device(physics)),
        )  # fmt: skip
        scale *= float(physics.operator_norm) / _norm(_check(physics, level), *key)
    return scale


def restrict_sinogram(physics: dp.Tomography, y: torch.Tensor, level: int) -> torch.Tensor:
    """Pose a sinogram ``(B, C, bins, angles)`` of ``physics`` at ``level``, so that ``A_k(R x) ~ restrict(A x)``.

    :param deepinv.physics.Tomography physics: the fine parallel-beam operator that produced ``y``.
    :param torch.Tensor y: the fine sinogram.
    :param int level: number of halvings.
    :raises NoCoarseRecipeError: for fan-beam geometry.
    """
    if level == 0:
        return y
    width, circle, n = physics.img_width, physics.radon.circle, 2**level
    fine_bins, fine_axis = _geometry(width, circle)
    coarse_bins, coarse_axis = _geometry(_check(physics, level), circle)
    delta = n * coarse_axis + (n - 1) / 2 - fine_axis  # coarse rotation axis, fine pixels from the fine one
    theta = torch.deg2rad(physics.angles.to(device=y.device, dtype=torch.float64))
    centres = n * (torch.arange(coarse_bins, device=y.device, dtype=torch.float64) - (coarse_bins - 1) / 2)
    centres = centres[:, None] + delta * (torch.cos(theta) - torch.sin(theta))[None, :] + fine_bins / 2
    cumulative = torch.nn.functional.pad(y.cumsum(dim=-2), (0, 0, 1, 0))  # integral up to each bin edge

    def integral(edge: torch.Tensor) -> torch.Tensor:
        edge = edge.clamp(0, fine_bins)
        below = edge.floor().clamp(max=fine_bins - 1)
        frac = (edge - below).to(y.dtype)
        index = below.long().expand(*y.shape[:2], *below.shape)
        lower, upper = cumulative.gather(-2, index), cumulative.gather(-2, index + 1)
        return lower + frac * (upper - lower)

    pooled = (integral(centres + n / 2) - integral(centres - n / 2)) / n
    return pooled * _scale(physics, level)


@lru_cache(maxsize=8)  # a few geometries: each holds its Radon grids (angles x bins**2 points)
def _template(
    width: int,
    angles: tuple[float, ...],
    circle: bool,
    parallel: bool,
    backprop: bool,
    fbp_boundary: bool,
    dtype: torch.dtype,
    device: str,
) -> dp.Tomography:
    """A noiseless, unnormalised operator for this geometry, built once (its Radon grids are the costly part)."""
    return dp.Tomography(
        torch.tensor(angles, device=device), width, circle=circle, parallel_computation=parallel,
        adjoint_via_backprop=backprop, fbp_interpolate_boundary=fbp_boundary, normalize=False, dtype=dtype,
        device=device,
    )  # fmt: skip


@register_coarsening(dp.Tomography)
def _tomography(physics: dp.Tomography, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    width = _check(physics, level)
    scale = _scale(physics, level)
    if isinstance(noise_model, LevelGaussianNoise) and not noise_model.keep_std:
        # the law of the restricted sinogram: scaled, averaged over 2**k bins along one axis
        noise_model = LevelGaussianNoise(
            noise_model.fine_sigma, level, False, rng=noise_model.rng, std_factor=scale * 2.0 ** (-level / 2)
        )
    template = _template(
        width, tuple(physics.angles.tolist()), physics.radon.circle, physics.radon.parallel_computation,
        physics.adjoint_via_backprop, physics.fbp_interpolate_boundary, physics.dtype, str(_device(physics)),
    )  # fmt: skip
    # A new operator that shares the template's read-only Radon modules (and nothing else).
    shared = (template.radon, getattr(template, "iradon", None), template.noise_model)
    coarse = copy.deepcopy(template, {id(module): module for module in shared if module is not None})
    coarse.noise_model = noise_model
    if physics.normalize:  # deepinv's own normalisation for this geometry, computed once per geometry
        coarse.register_buffer("operator_norm", physics.operator_norm * (2.0**-level / scale))
        coarse.normalize = True
    return coarse


@register_measurement_restriction(dp.Tomography, grid=lambda physics, y: (*y.shape[:2], *(physics.img_width,) * 2))
def _tomography_measurement(physics: dp.Tomography, y: torch.Tensor, level: int) -> torch.Tensor:
    return restrict_sinogram(physics, y, level)
