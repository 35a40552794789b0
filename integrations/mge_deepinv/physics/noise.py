"""Noise models posed at a coarse level, coupled to the fine draw."""

from __future__ import annotations

import math

import torch
from deepinv.physics import GaussianNoise

from mge_plugins import restricted_randn

__all__ = ["LevelGaussianNoise"]


class LevelGaussianNoise(GaussianNoise):
    r"""Gaussian noise at level ``level``, drawn at the finest grid and restricted.

    Drawing at the fine grid couples the levels: with the random stream replayed (as
    :func:`mge_plugins.mge_backward` does for both halves of a difference term), level ``k`` and
    level ``k + 1`` see the restriction of the very same fine noise. It is a
    :class:`deepinv.physics.GaussianNoise` whose ``sigma`` is the level's per-pixel std, so
    denoisers, ``ArtifactRemoval`` and ``R2RLoss`` read the right noise level.

    :param float, torch.Tensor sigma: standard deviation at the finest level (one value or one
        per sample).
    :param int level: the level this model adds noise at (0 = finest).
    :param bool keep_std: keep ``sigma`` per pixel at every level (the coarse problem keeps the
        fine noise level); otherwise the std is that of the restricted fine noise,
        ``sigma / 2**(d * level / 2)``.
    :param int spatial_dims: 2 or 3.
    :param torch.Generator rng: generator to draw from (default: PyTorch's global one).
    :param int inner_axes: axes between the channel axis and the grid that are not restricted
        (1 for the coil axis of multi-coil MRI k-space, ``(B, 2, N, H, W)``).
    :param float std_factor: per-pixel std at this level relative to the fine level, for operators
        whose measurement restriction is not the area restriction of the grid (a tomography
        sinogram is pooled along its detector axis only and rescaled); default from ``keep_std``
        and ``spatial_dims``.
    """

    def __init__(
        self,
        sigma: float | torch.Tensor = 0.1,
        level: int = 0,
        keep_std: bool = True,
        spatial_dims: int = 2,
        rng: torch.Generator | None = None,
        inner_axes: int = 0,
        std_factor: float | None = None,
    ) -> None:
        self.level, self.keep_std, self.spatial_dims, self.inner_axes = level, keep_std, spatial_dims, inner_axes
        self._std_factor = std_factor
        super().__init__(sigma=torch.as_tensor(sigma) * self.std_factor, rng=rng)

    @property
    def std_factor(self) -> float:
        """Per-pixel std at this level relative to the fine level."""
        if self._std_factor is not None:
            return self._std_factor
        return 1.0 if self.keep_std else 2.0 ** (-self.spatial_dims * self.level / 2)

    @property
    def fine_sigma(self) -> torch.Tensor:
        """The fine-level std this model was built from."""
        return self.sigma / self.std_factor

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor | None = None, seed: int | None = None, **kwargs):
        """Add the level's noise to ``x`` (``sigma``, if given, is the level's std)."""
        self.update_parameters(sigma=sigma, **kwargs)
        self.rng_manual_seed(seed)
        grid = 2 + self.inner_axes
        fine_shape = (x.shape[0], math.prod(x.shape[1:grid]), *(s * 2**self.level for s in x.shape[grid:]))
        unit = restricted_randn(
            fine_shape, self.level, keep_std=True, dtype=x.dtype, device=x.device, generator=self.rng
        ).reshape(x.shape)
        sigma = self.sigma.to(x.device)
        return x + sigma[(...,) + (None,) * (x.dim() - 1)] * unit
