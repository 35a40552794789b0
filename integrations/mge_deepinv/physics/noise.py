"""Noise models posed at a coarse level, coupled to the fine draw."""

from __future__ import annotations

import torch
from deepinv.physics import NoiseModel

from mge_plugins import restricted_randn

__all__ = ["LevelGaussianNoise"]


class LevelGaussianNoise(NoiseModel):
    r"""Gaussian noise at level ``level``, drawn at the finest grid and restricted.

    Drawing at the fine grid couples the levels: with the random stream replayed (as
    :func:`mge_plugins.mge_backward` does for both halves of a difference term), level ``k`` and
    level ``k + 1`` see the restriction of the very same fine noise.

    :param float, torch.Tensor sigma: standard deviation of the noise at the finest level (a
        float or one value per sample).
    :param int level: the level this model adds noise at (0 = finest).
    :param bool keep_std: keep ``sigma`` per pixel at every level (the coarse problem keeps the
        fine noise level); otherwise the std is the restricted one, ``sigma / 2**(d * level / 2)``.
    :param torch.Generator rng: generator to draw from (default: PyTorch's global one).
    """

    def __init__(
        self,
        sigma: float | torch.Tensor = 0.1,
        level: int = 0,
        keep_std: bool = True,
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__(rng=rng)
        self.register_buffer("fine_sigma", self._float_to_tensor(sigma))
        self.level = level
        self.keep_std = keep_std

    def level_sigma(self, spatial_dims: int) -> torch.Tensor:
        """Per-pixel std at this level."""
        return self.fine_sigma if self.keep_std else self.fine_sigma * 2.0 ** (-spatial_dims * self.level / 2)

    @property
    def sigma(self) -> torch.Tensor:
        """Per-pixel std at this level for 2-D images (what denoisers are told)."""
        return self.level_sigma(2)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Add the level's noise to ``x``."""
        fine_shape = (*x.shape[:2], *(s * 2**self.level for s in x.shape[2:]))
        noise = restricted_randn(
            fine_shape, self.level, keep_std=self.keep_std, dtype=x.dtype, device=x.device, generator=self.rng
        )
        sigma = self.fine_sigma.to(x.device)
        sigma = sigma[(...,) + (None,) * (x.dim() - sigma.dim())] if sigma.dim() else sigma
        return x + sigma * noise
