"""Build the level-``k`` version of a DeepInverse physics operator.

The coarse operator is a new object: the trainer's own physics is never mutated. Recipes (for
area restriction ``R``, so that ``R(A x) ~ A_k(R x)``):

========================  ==============================================================
operator                  level-``k`` version
========================  ==============================================================
``Denoising``             same, with the coarse noise model
``Blur``                  filter coarsened by :func:`coarsen_filter` (per-sample filters too)
``BlurFFT``               rebuilt for the level's image size with the coarsened filter
``Inpainting``            restricted (soft) mask: the fraction of each coarse pixel observed
``Downsampling``          same factor; anti-alias filter coarsened, then the ratio of the
                          average of ``2**k`` samples ``f`` fine pixels apart to the average
                          of ``2**k`` fine pixels (:func:`downsampling_filter`)
``MRI``                   the centred low-frequency block of k-space: the mask cropped to
                          the level's image size (2D, single coil)
``MultiCoilMRI``          the same block; coil maps restricted through k-space the same way
``Tomography``            ``img_width / 2**k``, the same angles and options (parallel beam)
========================  ==============================================================

Measurements given offline are posed at a coarse level by :func:`restrict_measurement`: area
restriction for image-domain operators; for ``MRI`` and ``MultiCoilMRI`` the centred k-space
block, phase-shifted by half a fine pixel per axis and scaled by 1/2 per level (the FFT is
orthonormal), which is what the coarse operator gives for the restricted image
(:mod:`.kspace`); for ``Tomography`` the sinogram averaged over each coarse detector bin and
rescaled (:mod:`.tomography`).

Operator scale: the recipes above are ``operator="restrict"``, the operator of the restricted
image, so each coarse problem is the restriction of the fine one (a Gaussian blur of ``s`` fine
pixels becomes one of about ``s / 2`` coarse pixels). ``operator="keep"`` keeps the operator's
scale per pixel instead, as ``noise="keep"`` does for the noise: ``Blur`` and ``BlurFFT`` keep
their filter and ``Downsampling`` its anti-alias filter and factor on every level, and
``Inpainting`` takes a window of the level's size from the fine mask (the same holes per pixel:
block size and density), so the coarse stages of Full-Multiscale train the local inversion the
fine stage needs, on coarser images. Operators without such a recipe (``Denoising``, ``MRI``,
``Tomography``) are coarsened as with ``"restrict"``. Both are exact for MGE (each coarse level
is posed the same way in the two terms that use it); they differ in what the coarse levels learn.

Noise: ``GaussianNoise`` becomes :class:`LevelGaussianNoise` (drawn at the fine grid and
restricted, so the levels stay coupled); ``PoissonNoise`` keeps or restricts its gain;
``ZeroNoise`` stays. ``noise="keep"`` keeps the fine noise level per pixel (the coarse stages of
Full-Multiscale then train the task the fine stage needs); ``noise="restrict"`` uses the law of
the restricted fine measurement (``sigma / 2**(d/2)`` and ``gain / 2**d`` per level; for
``Tomography``, ``sigma`` times the sinogram's scale and ``2**(-k/2)``).

Register a recipe for another operator with :func:`register_coarsening`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import deepinv.physics as dp
import torch

from mge_plugins import restrict

from .filters import coarsen_filter, downsampling_filter
from .noise import LevelGaussianNoise

__all__ = [
    "NOISE_MODES",
    "OPERATOR_MODES",
    "NoCoarseRecipeError",
    "coarsen_noise",
    "coarsen_physics",
    "level_grid_shape",
    "register_coarsening",
    "register_measurement_restriction",
    "restrict_measurement",
]

NOISE_MODES = ("keep", "restrict")
OPERATOR_MODES = ("restrict", "keep")

P = TypeVar("P", bound=dp.Physics)
Recipe = Callable[[dp.Physics, int, dp.NoiseModel], dp.Physics]
_RECIPES: dict[str, dict[type, Recipe]] = {mode: {} for mode in OPERATOR_MODES}


class NoCoarseRecipeError(TypeError):
    """Raised when no coarse version of a physics operator or noise model is known."""


def _check_operator_mode(operator: str) -> None:
    if operator not in OPERATOR_MODES:
        raise ValueError(f"operator must be one of {OPERATOR_MODES}, got {operator!r}")


def register_coarsening(cls: type[P], operator: str = "restrict") -> Callable[[Recipe], Recipe]:
    """Register ``recipe(physics, level, coarse_noise) -> physics`` for ``cls`` and subclasses.

    :param type cls: the physics class the recipe handles.
    :param str operator: ``"restrict"`` (default) for the operator of the restricted image, or
        ``"keep"`` for the operator at the fine pixel scale (used with ``operator="keep"``; classes
        without one fall back to their ``"restrict"`` recipe).
    """
    _check_operator_mode(operator)

    def decorator(recipe: Recipe) -> Recipe:
        _RECIPES[operator][cls] = recipe
        return recipe

    return decorator


def _find_recipe(physics: dp.Physics, operator: str = "restrict") -> Recipe | None:
    """The most specific recipe for ``physics``; at equal specificity a ``"keep"`` one when asked for."""
    modes = ("keep", "restrict") if operator == "keep" else ("restrict",)
    for cls in type(physics).__mro__:
        for mode in modes:
            if cls in _RECIPES[mode]:
                return _RECIPES[mode][cls]
    return None


def coarsen_noise(noise_model: dp.NoiseModel, level: int, noise: str = "keep", spatial_dims: int = 2) -> dp.NoiseModel:
    """The noise model at ``level``.

    :param deepinv.physics.NoiseModel noise_model: the fine noise model.
    :param int level: target level.
    :param str noise: ``"keep"`` the per-pixel noise level or ``"restrict"`` it.
    :param int spatial_dims: 2 or 3.
    :raises NoCoarseRecipeError: for a noise model without a recipe.
    """
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if isinstance(noise_model, LevelGaussianNoise):
        return LevelGaussianNoise(
            noise_model.fine_sigma, level, noise == "keep", spatial_dims, noise_model.rng, noise_model.inner_axes
        )
    if isinstance(noise_model, dp.GaussianNoise):
        return LevelGaussianNoise(noise_model.sigma, level, noise == "keep", spatial_dims, noise_model.rng)
    if isinstance(noise_model, dp.PoissonNoise):
        gain = noise_model.gain if noise == "keep" else noise_model.gain * 2.0 ** (-spatial_dims * level)
        return dp.PoissonNoise(gain, bool(noise_model.normalize), noise_model.clip_positive, noise_model.rng)
    if isinstance(noise_model, dp.ZeroNoise) or noise_model is None:
        return dp.ZeroNoise()
    raise NoCoarseRecipeError(
        f"no coarse recipe for the noise model {type(noise_model).__name__}; use coarse_mode='restrict' or "
        "register a recipe with mge_deepinv.register_coarsening"
    )


def _image_size(physics: dp.Physics, attribute: str, level: int) -> tuple[int, ...]:
    size = tuple(getattr(physics, attribute))
    spatial = [s // 2**level for s in size[1:]]
    if any(s * 2**level != t for s, t in zip(spatial, size[1:])):
        raise ValueError(
            f"{type(physics).__name__} has img_size {size}, which 2**{level} does not divide; use sizes divisible "
            f"by {2**level} or fewer levels"
        )
    return (size[0], *spatial)


def coarsen_physics(
    physics: dp.Physics, level: int, *, noise: str = "keep", operator: str = "restrict", spatial_dims: int = 2
) -> dp.Physics:
    """A new operator posing the problem of ``physics`` at ``level`` (0 = a coupled copy).

    :param deepinv.physics.Physics physics: the fine operator (left untouched).
    :param int level: target level.
    :param str noise: ``"keep"`` the per-pixel noise level (default) or ``"restrict"`` it.
    :param str operator: ``"restrict"`` (default) the operator to the restricted image, or ``"keep"``
        its scale per pixel (the same blur kernel, anti-alias filter or mask holes on every level; see above).
    :param int spatial_dims: 2 or 3.
    :raises NoCoarseRecipeError: when the operator or its noise model has no recipe.

    |sep|

    :Examples:

        >>> import deepinv as dinv
        >>> from mge_deepinv import coarsen_physics
        >>> fine = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.2))
        >>> coarse = coarsen_physics(fine, 2, noise="restrict")
        >>> round(float(coarse.noise_model.sigma), 4)
        0.05
    """
    _check_operator_mode(operator)
    recipe = _find_recipe(physics, operator)
    if recipe is None:
        raise NoCoarseRecipeError(
            f"no coarse recipe for {type(physics).__name__}; use coarse_mode='restrict' (works for any operator) "
            "or register one with mge_deepinv.register_coarsening"
        )
    return recipe(physics, level, coarsen_noise(physics.noise_model, level, noise, spatial_dims))


@register_coarsening(dp.Denoising)
def _denoising(physics: dp.Denoising, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    return dp.Denoising(noise_model=noise_model, device=_device(physics))


# One builder per operator: the level's operator around a given kernel or mask. The two recipes of
# each differ only in that kernel or mask: restricted with the image, or kept per pixel.


def _blur_with(physics: dp.Blur, kernel: torch.Tensor, noise_model: dp.NoiseModel) -> dp.Physics:
    return dp.Blur(
        filter=kernel,
        padding=physics.padding,
        use_fft=physics.use_fft,
        noise_model=noise_model,
        device=_device(physics),
    )


@register_coarsening(dp.Blur)
def _blur(physics: dp.Blur, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    return _blur_with(physics, coarsen_filter(physics.filter, level), noise_model)


@register_coarsening(dp.Blur, operator="keep")
def _blur_kept(physics: dp.Blur, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    return _blur_with(physics, physics.filter.clone(), noise_model)


def _blur_fft_with(physics: dp.BlurFFT, level: int, kernel: torch.Tensor, noise_model: dp.NoiseModel) -> dp.Physics:
    img_size = _image_size(physics, "img_size", level)
    return dp.BlurFFT(img_size=img_size, filter=kernel, noise_model=noise_model, device=_device(physics))


@register_coarsening(dp.BlurFFT)
def _blur_fft(physics: dp.BlurFFT, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    return _blur_fft_with(physics, level, coarsen_filter(physics.filter, level), noise_model)


@register_coarsening(dp.BlurFFT, operator="keep")
def _blur_fft_kept(physics: dp.BlurFFT, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    return _blur_fft_with(physics, level, physics.filter.clone(), noise_model)


def _inpainting_with(
    physics: dp.Inpainting,
    level: int,
    coarse_mask: Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor],
    noise_model: dp.NoiseModel,
) -> dp.Physics:
    mask = physics.mask
    if mask.dim() == len(physics.img_size):
        mask = mask[None]
    img_size = _image_size(physics, "img_size", level)
    return dp.Inpainting(
        img_size=img_size, mask=coarse_mask(mask, img_size), noise_model=noise_model, device=_device(physics)
    )


@register_coarsening(dp.Inpainting)
def _inpainting(physics: dp.Inpainting, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    # The fraction of each coarse pixel observed.
    return _inpainting_with(
        physics, level, lambda mask, _: restrict(mask.to(torch.get_default_dtype()), level), noise_model
    )


@register_coarsening(dp.Inpainting, operator="keep")
def _inpainting_kept(physics: dp.Inpainting, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    # A window of the level's size from the fine mask: the same holes per pixel (block size and density).
    def window(mask: torch.Tensor, img_size: tuple[int, ...]) -> torch.Tensor:
        return mask[(..., *(slice(0, side) for side in img_size[1:]))].clone()

    return _inpainting_with(physics, level, window, noise_model)


def _downsampling_with(
    physics: dp.Downsampling, level: int, kernel: torch.Tensor | None, noise_model: dp.NoiseModel
) -> dp.Physics:
    img_size = None if physics.imsize is None else _image_size(physics, "imsize", level)
    return dp.Downsampling(
        img_size=img_size,
        filter=kernel,
        factor=int(physics.factor),
        padding=physics.padding,
        noise_model=noise_model,
        device=_device(physics),
    )


@register_coarsening(dp.Downsampling)
def _downsampling(physics: dp.Downsampling, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    fine_filter = physics.filter
    if fine_filter is None:  # bare decimation: a delta, shifted on the coarse grids
        fine_filter = torch.ones((1, 1, 1, 1), device=_device(physics))
    return _downsampling_with(physics, level, downsampling_filter(fine_filter, int(physics.factor), level), noise_model)


@register_coarsening(dp.Downsampling, operator="keep")
def _downsampling_kept(physics: dp.Downsampling, level: int, noise_model: dp.NoiseModel) -> dp.Physics:
    kernel = None if physics.filter is None else physics.filter.clone()
    return _downsampling_with(physics, level, kernel, noise_model)


MeasurementRestriction = Callable[[dp.Physics, torch.Tensor, int], torch.Tensor]
GridShape = Callable[[dp.Physics, torch.Tensor], tuple[int, ...]]
_MEASUREMENTS: dict[type, MeasurementRestriction] = {}
_GRIDS: dict[type, GridShape] = {}


def register_measurement_restriction(
    cls: type[P], grid: GridShape | None = None
) -> Callable[[MeasurementRestriction], MeasurementRestriction]:
    """Register ``rule(physics, y, level) -> y_level`` posing offline measurements of ``cls`` at a level.

    :param type cls: the physics class whose measurements the rule restricts.
    :param Callable grid: ``grid(physics, y) -> (B, C, *spatial)``, the shape of the image grid that the
        levels halve, for measurements that are not images on it (coil k-space, sinograms); see
        :func:`level_grid_shape`.
    """

    def decorator(rule: MeasurementRestriction) -> MeasurementRestriction:
        _MEASUREMENTS[cls] = rule
        if grid is not None:
            _GRIDS[cls] = grid
        return rule

    return decorator


def level_grid_shape(physics: dp.Physics, y: torch.Tensor) -> tuple[int, ...]:
    """The ``(B, C, *spatial)`` shape whose spatial sizes the levels halve, for a measurement ``y`` of ``physics``.

    That is ``y``'s own shape for image-domain measurements, and the image's for those registered with a
    ``grid`` (a ``MultiCoilMRI`` k-space ``(B, 2, N, H, W)`` gives ``(B, 2, H, W)``; a sinogram, ``(B, C, W, W)``).

    :param deepinv.physics.Physics physics: the operator that produced ``y``.
    :param torch.Tensor y: the measurement.
    """
    for cls in type(physics).__mro__:
        if cls in _GRIDS:
            return _GRIDS[cls](physics, y)
    return tuple(y.shape)


def restrict_measurement(physics: dp.Physics, y: torch.Tensor, level: int, method: str = "area") -> torch.Tensor:
    """A fine measurement ``y`` of ``physics`` posed at ``level`` (area restriction unless a rule is registered).

    :param deepinv.physics.Physics physics: the fine operator that produced ``y``.
    :param torch.Tensor y: the fine measurement.
    :param int level: target level.
    :param str method: the restriction method for image-domain measurements.
    """
    if level == 0:
        return y
    for cls in type(physics).__mro__:
        if cls in _MEASUREMENTS:
            return _MEASUREMENTS[cls](physics, y, level)
    return restrict(y, level, method)


def _device(physics: dp.Physics) -> torch.device:
    for tensor in list(physics.buffers()) + list(physics.parameters()):
        return tensor.device
    return torch.device("cpu")
