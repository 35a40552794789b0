"""Pose a sample at level ``k``: restriction as MONAI transforms (array and dictionary)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Resize, Transform

from mge_plugins import check_level_sizes

__all__ = ["LevelPyramidd", "RestrictLevel", "RestrictLeveld", "pyramid_key"]

_MODES = {"area": "area", "nearest": "nearest"}


class RestrictLevel(Transform):
    """Restrict a channel-first image ``(C, H, W)`` or ``(C, D, H, W)`` to ``level``.

    ``"area"`` equals ``2**level`` average pooling exactly (MONAI's ``Resize(mode="area")``),
    ``"nearest"`` keeps every ``2**level``-th sample. A ``MetaTensor`` keeps its metadata, with the
    affine updated for the coarser spacing. Deterministic, so ``CacheDataset`` and
    ``PersistentDataset`` cache its output.

    Args:
        level: number of halvings (0 = identity).
        method: ``"area"`` or ``"nearest"``.
    """

    def __init__(self, level: int = 1, method: str = "area") -> None:
        if method not in _MODES:
            raise ValueError(f"RestrictLevel supports method 'area' or 'nearest', got {method!r}")
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        self.level = level
        self.method = method

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Restrict ``img``."""
        if self.level == 0:
            return img
        spatial = tuple(int(s) for s in img.shape[1:])
        check_level_sizes(spatial, self.level)
        size = tuple(s // 2**self.level for s in spatial)
        return Resize(spatial_size=size, mode=_MODES[self.method], anti_aliasing=False)(img)


class RestrictLeveld(MapTransform):
    """Dictionary version of :class:`RestrictLevel`: restricts every key in ``keys`` to ``level``.

    Args:
        keys: keys of the images to restrict (e.g. ``["image", "label"]``).
        level: number of halvings.
        method: ``"area"`` or ``"nearest"``.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self, keys: KeysCollection, level: int = 1, method: str = "area", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.restrict = RestrictLevel(level, method)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Restrict the listed keys of ``data``."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.restrict(d[key])
        return d


def pyramid_key(key: Hashable, level: int) -> str:
    """Name under which :class:`LevelPyramidd` stores ``key`` at ``level``."""
    return f"{key}_level{level}"


class LevelPyramidd(MapTransform):
    """Store the restrictions of ``keys`` at levels ``1..levels`` as ``"{key}_level{k}"``.

    Deterministic, so ``CacheDataset`` caches the whole clean pyramid once; with
    ``MultiscaleIteration(noise_sigma=...)`` the engine then adds coupled, level-scaled Gaussian
    noise on the device instead of restricting a noisy fine image at every step.

    Args:
        keys: keys of the clean images (e.g. ``"label"``).
        levels: deepest level to store.
        method: ``"area"`` or ``"nearest"``.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self, keys: KeysCollection, levels: int = 2, method: str = "area", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.restrictions = [RestrictLevel(1, method) for _ in range(levels)]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Add the pyramid of every listed key to ``data``."""
        d = dict(data)
        for key in self.key_iterator(d):
            current = d[key]
            for level, restriction in enumerate(self.restrictions, start=1):
                current = restriction(current)
                d[pyramid_key(key, level)] = current
        return d
