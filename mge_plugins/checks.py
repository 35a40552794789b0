"""Up-front checks of what a host feeds the estimator: batch rank, dataset length, the network.

Each check runs once, at setup or on the first batch, and raises a ``ValueError`` that names
the setting or the data to change, instead of an error from deep inside a forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .batching import _tensor_leaves
from .coupling import CoupledRandomness
from .estimator import FusedLossError

__all__ = [
    "check_batch_rank",
    "check_dataset_length",
    "check_deterministic",
    "check_integer_images",
    "check_network",
    "warn_batchnorm",
]


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


def check_integer_images(batch: Any) -> None:
    """Refuse integer images or volumes, which restriction would pass through at full size.

    Raises:
        ValueError: naming the dtype and the conversion.

    Example:
        >>> check_integer_images((torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)))
    """
    for tensor in _tensor_leaves(batch):
        if tensor.dim() in (4, 5) and not tensor.is_floating_point() and not tensor.is_complex():
            raise ValueError(
                f"the batch holds {tensor.dtype} images of shape {tuple(tensor.shape)}: restriction averages "
                "intensities and needs floating-point images; convert them first (e.g. images.float() / 255)"
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


def warn_batchnorm(model: nn.Module, fix: str) -> None:
    """Warn when ``model`` has BatchNorm layers, which break the coupling of MGE terms.

    Args:
        model: the network.
        fix: the host's way out, e.g. ``"deepinv.models.UNet(batch_norm=False)"``.
    """
    batchnorms = [type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batchnorms:
        warnings.warn(
            f"the network has {len(batchnorms)} BatchNorm layers ({batchnorms[0]}): batch statistics differ between "
            "levels and batches, which breaks the coupling of MGE terms. Use a network without BatchNorm or with "
            f"instance/group normalisation ({fix}).",
            stacklevel=3,
        )


def check_network(
    run: Callable[[], Any],
    model: nn.Module,
    *,
    level: int,
    input_shape: Sequence[int],
    generators: Sequence[torch.Generator] = (),
) -> None:
    """Dry-run ``run()`` (one sample posed at ``level``) without gradients, weights or randomness changing.

    The pass runs in the model's current (training) mode, so train-only size rules are caught,
    and leaves no trace: buffers (BatchNorm statistics) are restored, and PyTorch's random
    streams and ``generators`` are replayed as they were. A failure is reported as a
    ``ValueError`` that says why when it can tell: a network of the wrong dimension, input
    channels that differ from the network's first convolution, a dtype mismatch, a network fixed
    to one input size, or else the level that breaks the network.

    Args:
        run: runs the network (or the whole level loss) on one sample at ``level``.
        model: the network.
        level: the level posed.
        input_shape: the fine network input's shape ``(B, C, *spatial)``.
        generators: generators the pass may draw from, besides PyTorch's global ones.

    Raises:
        ValueError: naming the network's first layer or the level, and the fix.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    rng = CoupledRandomness(list(generators))
    rng.capture()
    try:
        with torch.no_grad():
            run()
    except FusedLossError:  # the loss's contract, not the network, and it names its own fix
        raise
    except Exception as error:  # any failure of the network is reported with its likely cause
        raise _explain(model, tuple(input_shape), level, error) from error
    finally:
        rng.replay()
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def check_deterministic(
    level_loss: Callable[[slice, int], torch.Tensor],
    level: int,
    generators: Sequence[torch.Generator] = (),
    rtol: float = 1e-4,
) -> None:
    """Require a level loss that depends on the samples only, as fused passes do.

    The loss of the first loaded sample at ``level`` is evaluated twice without gradients and
    without replaying the random streams between the two calls: noise drawn inside the loss, or
    dropout, gives two different values. The random streams are left as they were.

    Args:
        level_loss: ``level_loss(indices, level)``, the scalar mean loss of those loaded samples.
        level: the level to evaluate (a coarse one: the fine level may draw no noise).
        generators: the host's own generators, restored afterwards.
        rtol: relative tolerance for nondeterministic kernels.

    Raises:
        ValueError: when the two values differ, naming the fix.

    Example:
        >>> x = torch.rand(4, 1, 8, 8)
        >>> check_deterministic(lambda i, level: x[i].mean(), level=1)
    """
    rng = CoupledRandomness(generators)
    rng.capture()
    try:
        with torch.no_grad():
            first, second = (float(level_loss(slice(0, 1), level)) for _ in range(2))
    finally:
        rng.replay()
    if abs(first - second) > rtol * max(abs(first), abs(second), 1e-12):
        raise ValueError(
            f"fused passes need a level loss that depends on the samples only, but the same sample at level {level} "
            f"gave {first:.6g} and then {second:.6g}: draw the noise once per loaded batch at the fine grid (or pose "
            "coarse levels by restricting the fine measurement), remove dropout, or turn fused passes off"
        )


def _explain(model: nn.Module, input_shape: tuple[int, ...], level: int, error: Exception) -> ValueError:
    found = _first_conv(model)
    data_dims, channels, fine_shape = len(input_shape) - 2, input_shape[1], input_shape[2:]
    coarse = tuple(int(n) // 2**level for n in fine_shape)
    text = str(error)
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
    if "dtype" in text or ("expected" in text.lower() and ("Half" in text or "Double" in text or "Float" in text)):
        return ValueError(
            f"the network fails at level {level} on a dtype mismatch (the data and the weights differ): {error}. "
            "Convert the model or the data to one dtype (model.float() or images.float())"
        )
    lowered = text.lower()
    too_small = ("too small" in lowered or "can't be greater than actual input size" in lowered) and (
        "more than 1" not in lowered
    )
    if "img_size" in text or ("input size" in lowered and not too_small and "more than 1" not in lowered):
        return ValueError(
            f"the network fails at level {level} (input {coarse}, fine {tuple(fine_shape)}) because it is built for "
            f"one input size: {error}. Multiscale training feeds it every level's size; use a network that "
            "accepts any size (a convolutional one), or strategy='single'"
        )
    where = f"the network fails at level {level} (input {coarse}, fine {tuple(fine_shape)})"
    down = _downsamplings(model)
    multiple = 2 ** (level + down)
    smallest = tuple(max(multiple, -(-int(n) // multiple) * multiple) for n in fine_shape)
    if too_small:
        return ValueError(
            f"{where}: the network's {down} downsamplings leave nothing at that level ({error}); the smallest fine "
            f"crop that works is {smallest} (sides divisible by {multiple}), or use levels <= {max(0, level - 1)}"
        )
    if "more than 1 spatial element" in lowered or "more than 1 value per channel" in lowered:
        return ValueError(
            f"{where}: a normalisation layer has one voxel per channel there ({error}); its {down} "
            f"downsamplings leave nothing to normalise at that level. Use crops of at least "
            f"{tuple(2 * s for s in smallest)} px, or levels <= {max(0, level - 1)}"
        )
    if "must match" in lowered or "sizes of tensors" in lowered or "size mismatch" in lowered:
        return ValueError(
            f"{where} on mismatched sizes: {error}. Either the network's {down} downsamplings need sides divisible "
            f"by {multiple} at level {level} (the smallest fine crop that works is {smallest}; declare "
            f"size_multiple={2**down} to check it up front), or an operator built for the fine size was handed a "
            "coarse level (give it a recipe with register_coarsening, or use coarse_mode='restrict')"
        )
    return ValueError(
        f"{where}: {error}. Use fewer levels or larger images, or declare size_multiple= to check up front"
    )


def _downsamplings(model: nn.Module) -> int:
    """Strided convolutions and pooling layers along the network (an upper bound on its depth in scales)."""
    count = 0
    for module in model.modules():
        stride = getattr(module, "stride", 1)
        strides = stride if isinstance(stride, (tuple, list)) else (stride,)
        if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
            count += int(max(strides) > 1)
        elif isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
            count += 1
    return count
