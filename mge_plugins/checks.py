"""Up-front checks of what a host feeds the estimator: batch rank, dataset length, the network.

Each check runs once, at setup or on the first batch, and raises a ``ValueError`` that names
the setting or the data to change, instead of an error from deep inside a forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["check_batch_rank", "check_dataset_length", "check_network"]


def check_batch_rank(batch: torch.Tensor, what: str = "the loaded images", *, batched: bool = True) -> None:
    """Require ``(B, C, H, W)``/``(B, C, D, H, W)`` tensors (``(C, H, W)``/``(C, D, H, W)`` samples).

    Args:
        batch: the tensor to check.
        what: how the error names it.
        batched: whether it has a leading batch axis (a loaded batch) or is one sample.

    Raises:
        ValueError: naming the shape and the fix (add the channel axis in the dataset).

    Example:
        >>> check_batch_rank(torch.zeros(2, 1, 8, 8))
    """
    ranks, layout = ((4, 5), "batches of (B, C, H, W) images or (B, C, D, H, W) volumes")
    if not batched:
        ranks, layout = ((3, 4), "samples of (C, H, W) images or (C, D, H, W) volumes")
    if not isinstance(batch, torch.Tensor) or batch.dim() not in ranks:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ValueError(
            f"{what} have shape {shape}: multiscale training needs {layout}; give every sample a channel axis "
            "in the dataset (e.g. image[None], or MONAI's EnsureChannelFirstd)"
        )


def check_dataset_length(length: int, need: int) -> None:
    """Require a dataset that fills at least one loaded batch of ``need`` samples.

    Raises:
        ValueError: naming the dataset's length, the batch it needs and the settings to change.

    Example:
        >>> check_dataset_length(16, 16)
    """
    if length < need:
        raise ValueError(
            f"the training dataset has {length} samples, fewer than one loaded batch of {need}, which the per-term "
            "batches are cut from; add samples, or lower DataLoader(batch_size=...) and mge_batch_size/batch_sizes"
        )


def _first_conv(model: nn.Module) -> tuple[str, nn.modules.conv._ConvNd] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None)


def check_network(
    forward: Callable[[torch.Tensor], Any],
    model: nn.Module,
    probe: torch.Tensor,
    level: int,
    fine_shape: Sequence[int],
) -> None:
    """Dry-run ``forward(probe)`` (``probe`` posed at ``level``) in eval mode without gradients.

    A failure is reported as a ``ValueError`` that says why when it can tell: a network of the
    wrong dimension (a 2D network fed 3D data), input channels that differ from the network's
    first convolution, or else the level that breaks the network.

    Raises:
        ValueError: naming the network's first layer or the level, and the fix.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            forward(probe)
    except Exception as error:  # any failure of the network is reported with its likely cause
        raise _explain(model, probe, level, fine_shape, error) from error
    finally:
        model.train(was_training)


def _explain(
    model: nn.Module, probe: torch.Tensor, level: int, fine_shape: Sequence[int], error: Exception
) -> ValueError:
    found = _first_conv(model)
    data_dims, channels = probe.dim() - 2, probe.shape[1]
    if found is not None:
        name, conv = found
        net_dims = len(conv.kernel_size)
        layer = f"the network's first convolution {name or 'model'} ({type(conv).__name__})"
        if net_dims != data_dims:
            return ValueError(
                f"{layer} takes {net_dims}D data but the images are {data_dims}D (samples of shape "
                f"{(channels, *(int(n) for n in fine_shape))}); use a {data_dims}D network (spatial_dims={data_dims}) "
                f"or {net_dims}D data: {error}"
            )
        if conv.in_channels != channels:
            return ValueError(
                f"{layer} expects {conv.in_channels} input channels but the data have {channels}; build the network "
                f"with in_channels={channels} or load the images with {conv.in_channels} channels: {error}"
            )
    return ValueError(
        f"the network fails at level {level} (input {tuple(probe.shape[2:])}, fine {tuple(fine_shape)}): {error}. "
        "Use fewer levels or larger images, or declare size_multiple= to check divisibility up front"
    )
