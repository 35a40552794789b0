"""The multiscale scalars of each iteration, for MONAI's stock stats handlers.

:class:`~mge_monai.MultiscaleIteration` puts the scalars of every training iteration into the
engine's output, next to the loss (see :mod:`mge_plugins.scalars` for the keys: ``mge_stage``,
``mge_level``, ``mge_term_{k}``, ``mge_saving``, ``mge_work_units``, ``mge_flops``). With
``decollate=True`` every decollated item holds them. :func:`from_multiscale_output` is the
``output_transform`` that hands them, with the loss, to ``TensorBoardStatsHandler``,
``StatsHandler`` or ``MLFlowHandler``, which write each entry of the dictionary under its key::

    from monai.handlers import TensorBoardStatsHandler
    from mge_monai.handlers import from_multiscale_output

    TensorBoardStatsHandler(log_dir="runs", output_transform=from_multiscale_output()).attach(trainer)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["SCALAR_PREFIX", "from_multiscale_output"]

SCALAR_PREFIX = "mge_"
"""The prefix of the multiscale scalars in the engine's output."""


def from_multiscale_output(loss_key: str | None = "loss", loss_tag: str = "Loss") -> Callable[[Any], dict[str, float]]:
    """An ``output_transform`` giving the loss and the multiscale scalars of an iteration as ``{tag: float}``.

    Args:
        loss_key: key of the loss in the output (``None`` leaves the loss out).
        loss_tag: the loss's tag; ``"Loss"`` is the tag ``TensorBoardStatsHandler`` gives a lone loss.

    Returns:
        A callable of ``engine.state.output`` (a dictionary, or the decollated list of them, whose
        first item is read: every item holds the same scalars) returning ``{tag: value}``; an output
        without the scalars (an evaluator's, a single-scale step of the stock trainer) gives just the loss.
    """

    def transform(output: Any) -> dict[str, float]:
        item = output[0] if isinstance(output, (list, tuple)) and output else output
        if not isinstance(item, Mapping):
            return {}
        scalars: dict[str, float] = {}
        if loss_key is not None and loss_key in item:
            scalars[loss_tag] = _number(item[loss_key])
        for key, value in item.items():
            if isinstance(key, str) and key.startswith(SCALAR_PREFIX):
                scalars[key] = _number(value)
        return scalars

    return transform


def _number(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)
