"""Plain tensors for the multiscale passes, MetaTensors again in the engine's output.

MONAI's :class:`~monai.data.MetaTensor` tracks metadata through every torch operation: each
convolution, pooling and loss term of a pass runs through ``__torch_function__`` and copies the
metadata. A multiscale step runs several short passes where single-scale runs one long one, so
that fixed cost per operation weighs on it most (measured on ``examples/monai_3d.py``: the
Full-Multiscale run took a median 72.5 s with MetaTensors in its passes and 64.2 s without, three
runs each in turn, for the same result). The iteration therefore runs its passes on the batch's
plain tensors (``as_tensor()`` shares the storage, nothing is copied) and gives the output's
``image``, ``label`` and ``pred`` the loaded batch's metadata back, as ``SupervisedTrainer`` would
have them.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor

__all__ = ["as_plain", "with_meta_of"]


def as_plain(value: Any) -> Any:
    """The plain :class:`torch.Tensor` of a MetaTensor (same storage), anything else unchanged."""
    return value.as_tensor() if isinstance(value, MetaTensor) else value


def with_meta_of(tensor: torch.Tensor, source: Any) -> torch.Tensor:
    """``tensor`` with the metadata of the first ``len(tensor)`` samples of ``source`` when it is a MetaTensor.

    Args:
        tensor: a plain tensor whose samples are the first ones of ``source`` (or their prediction).
        source: the loaded batch's MetaTensor; anything else leaves ``tensor`` as it is.
    """
    if not isinstance(source, MetaTensor) or isinstance(tensor, MetaTensor):
        return tensor
    return MetaTensor(tensor).copy_meta_from(source[: tensor.shape[0]])
