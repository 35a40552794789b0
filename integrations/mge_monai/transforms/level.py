"""Pose a sample at level ``k``: restriction as MONAI transforms (array and dictionary)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Resize, Transform
from monai.utils import ensure_tuple_rep

from mge_plugins import check_level_sizes
from mge_plugins.level_rules import LevelRule, resolve_level_rule

__all__ = ["LevelPyramidd", "RestrictLevel", "RestrictLeveld", "pyramid_key"]

_METHODS = ("area", "nearest", "mode", "keep")
_KEY_METHODS = ("auto", *_METHODS)


class RestrictLevel(Transform):
    """Restrict a channel-first image ``(C, H, W)`` or ``(C, D, H, W)`` to ``level``.

    ``"area"`` equals ``2**level`` average pooling exactly (MONAI's ``Resize(mode="area")``),
    ``"nearest"`` keeps every ``2**level``-th sample, ``"mode"`` takes the majority of each block
    (segmentation labels, see :func:`mge_plugins.level_rules.restrict_mode`), ``"keep"`` returns
    the input (class labels and other values without spatial axes). ``"nearest"`` and ``"mode"``
    keep the dtype (integer labels stay integer). A ``MetaTensor`` keeps its metadata, with the
    affine updated for the coarser spacing. Deterministic, so ``CacheDataset`` and
    ``PersistentDataset`` cache its output.

    Args:
        level: number of halvings (0 = identity).
        method: ``"area"``, ``"nearest"``, ``"mode"`` or ``"keep"``.
    """

    def __init__(self, level: int = 1, method: str = "area") -> None:
        if method not in _METHODS:
            raise ValueError(f"RestrictLevel supports method {', '.join(map(repr, _METHODS))}, got {method!r}")
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        self.level = level
        self.method = method

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Restrict ``img``."""
        if self.level == 0 or self.method == "keep":
            return img
        spatial = tuple(int(s) for s in img.shape[1:])
        check_level_sizes(spatial, self.level)
        size = tuple(s // 2**self.level for s in spatial)
        if self.method == "area":
            return Resize(spatial_size=size, mode="area", anti_aliasing=False)(img)
        # Values from the core rule (dtype kept); metadata (affine, applied operations) from MONAI's Resize.
        values = LevelRule(self.method, batched=False).apply(torch.as_tensor(img), self.level)
        resized = Resize(spatial_size=size, mode="nearest", anti_aliasing=False)(img[:1])
        if isinstance(resized, MetaTensor):
            return MetaTensor(values, meta=resized.meta, applied_operations=resized.applied_operations)
        return values


def _reference_shape(data: Mapping[Hashable, object], keys: Sequence[Hashable]) -> tuple[int, ...] | None:
    """The images' spatial shape: that of the listed tensor of highest rank (the first such)."""
    tensors = [data[k] for k in keys if k in data and isinstance(data[k], torch.Tensor) and data[k].dim() >= 3]
    if not tensors:
        return None
    return tuple(int(s) for s in max(tensors, key=lambda t: t.dim()).shape[1:])


def _check_methods(methods: Sequence[str]) -> None:
    for method in methods:
        if method not in _KEY_METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(map(repr, _KEY_METHODS))}")


def _key_rule(method: str, value: object, reference: tuple[int, ...] | None, key: Hashable) -> str:
    """``method`` for one key, with ``"auto"`` resolved on the sample (see :mod:`mge_plugins.level_rules`)."""
    return resolve_level_rule(method, value, reference, batched=False, what=f"key {key!r}").rule


class RestrictLeveld(MapTransform):
    """Dictionary version of :class:`RestrictLevel`: restricts every key in ``keys`` to ``level``.

    Each key has its rule (``method``, one for all keys or one per key, as MONAI's ``mode``).
    ``"auto"`` (default) infers it per sample: a tensor without the spatial shape of the listed
    key of highest rank (the image) is kept, an integer or 0/1-valued one (a segmentation label)
    takes ``"mode"``, any other takes ``"area"``: the same rule as
    ``MultiscaleIteration(label_restriction="auto")``.

    Args:
        keys: keys of the tensors to pose at ``level`` (e.g. ``["image", "label"]``).
        level: number of halvings.
        method: ``"auto"``, ``"area"``, ``"nearest"``, ``"mode"`` or ``"keep"``, or one per key.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        level: int = 1,
        method: str | Sequence[str] = "auto",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        self.level = level
        self.methods = ensure_tuple_rep(method, len(self.keys))
        _check_methods(self.methods)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Restrict the listed keys of ``data``."""
        d = dict(data)
        reference = _reference_shape(d, self.keys)
        for key, method in self.key_iterator(d, self.methods):
            d[key] = RestrictLevel(self.level, _key_rule(method, d[key], reference, key))(d[key])
        return d


def pyramid_key(key: Hashable, level: int) -> str:
    """Name under which :class:`LevelPyramidd` stores ``key`` at ``level``."""
    return f"{key}_level{level}"


class LevelPyramidd(MapTransform):
    """Store ``keys`` at levels ``1..levels`` as ``"{key}_level{k}"``, each level from the one above.

    Deterministic, so ``CacheDataset`` caches the whole clean pyramid once; with
    ``MultiscaleIteration(noise_sigma=...)`` the engine then adds coupled, level-scaled Gaussian
    noise on the device instead of restricting a noisy fine image at every step. Each key has its
    rule, as in :class:`RestrictLeveld` (``"auto"`` resolved once per sample, on the fine tensor).

    Args:
        keys: keys of the clean images (e.g. ``"label"``).
        levels: deepest level to store.
        method: ``"auto"``, ``"area"``, ``"nearest"``, ``"mode"`` or ``"keep"``, or one per key.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        levels: int = 2,
        method: str | Sequence[str] = "auto",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        self.levels = levels
        self.methods = ensure_tuple_rep(method, len(self.keys))
        _check_methods(self.methods)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Add the pyramid of every listed key to ``data``."""
        d = dict(data)
        reference = _reference_shape(d, self.keys)
        for key, method in self.key_iterator(d, self.methods):
            restriction = RestrictLevel(1, _key_rule(method, d[key], reference, key))
            current = d[key]
            for level in range(1, self.levels + 1):
                current = restriction(current)
                d[pyramid_key(key, level)] = current
        return d
