"""Coarse operators built once per operator and level, while the operator is unchanged."""

from __future__ import annotations

import weakref
from typing import Any

import deepinv.physics as dp
import torch

from .coarsen import coarsen_physics

__all__ = ["DERIVED_STATE", "CoarsePhysicsCache", "physics_fingerprint"]

_PLAIN = (int, float, str, bool, type(None))

DERIVED_STATE: dict[type, frozenset[str]] = {dp.Downsampling: frozenset({"Fh", "Fhc", "Fh2", "imsize_dynamic"})}
"""State computed from an operator's other state or its last input, which deepinv rebuilds on calls: left out."""


def _state(obj: Any, prefix: str, items: list, tensors: list) -> None:
    derived = frozenset().union(*(names for cls, names in DERIVED_STATE.items() if isinstance(obj, cls)))
    if isinstance(obj, torch.nn.Module):
        for name, tensor in obj.state_dict(keep_vars=True).items():
            if name in derived:
                continue
            items.append((prefix + name, id(tensor), tensor._version))
            tensors.append(tensor)
    for name, value in sorted(vars(obj).items()):
        if name.startswith("_") or name in derived:  # nn.Module's own tables are read through state_dict
            continue
        if isinstance(value, torch.Tensor):
            items.append((prefix + name, id(value), value._version))
            tensors.append(value)
        elif isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value)):
            items.append((prefix + name, value))


def physics_fingerprint(physics: dp.Physics) -> tuple[tuple, list[torch.Tensor]]:
    """What a coarse operator is built from: every tensor (by identity and in-place version) and plain setting.

    Covers the operator and its noise model, registered tensors or plain attributes alike: a new
    filter or mask (``physics.update(...)``, a ``physics_generator``), an in-place edit of one, or
    a changed ``sigma`` gives a new fingerprint.

    :param deepinv.physics.Physics physics: the operator.
    :return: the fingerprint, and the tensors it names (hold them, so their identities stay unique).
    """
    items: list = []
    tensors: list[torch.Tensor] = []
    _state(physics, "", items, tensors)
    noise_model = getattr(physics, "noise_model", None)
    if noise_model is not None:
        _state(noise_model, "noise_model.", items, tensors)
    return tuple(items), tensors


class CoarsePhysicsCache:
    """:func:`~mge_deepinv.coarsen_physics`, memoized per operator object, level, noise and operator mode.

    Building a coarse operator can cost more than the network's pass at a coarse level (a
    ``Downsampling``'s coarse anti-alias filter is made by frequency sampling, and deepinv builds
    its FFT kernels): the trainer asks for the same one in every pass of every step. An entry is
    reused only for the same operator object with the same :func:`physics_fingerprint`, so an
    operator whose filter, mask or noise level changes gets a new coarse one.

    :param int capacity: entries kept; the cache is emptied when it is full (per-sample operators
        sliced for each term are new objects, which never hit).
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._entries: dict[tuple, tuple] = {}
        self.hits = self.misses = 0

    def __call__(
        self, physics: dp.Physics, level: int, noise: str = "keep", spatial_dims: int = 2, operator: str = "restrict"
    ) -> dp.Physics:
        """The operator at ``level`` (see :func:`~mge_deepinv.coarsen_physics`), built once while unchanged."""
        key = (id(physics), level, noise, spatial_dims, operator)
        fingerprint, tensors = physics_fingerprint(physics)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is physics and entry[1] == fingerprint:
            self.hits += 1
            return entry[2]
        coarse = coarsen_physics(physics, level, noise=noise, operator=operator, spatial_dims=spatial_dims)
        if len(self._entries) >= self.capacity:
            self._entries.clear()
        self._entries[key] = (weakref.ref(physics), fingerprint, coarse, tensors)
        self.misses += 1
        return coarse
