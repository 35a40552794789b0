"""Restriction operators: pose a fine-grid tensor on a grid ``2**levels`` times coarser.

Level ``k`` halves every spatial axis ``k`` times. Three methods are offered:

- ``"area"`` (default): mean-preserving ``2 x 2`` (``2 x 2 x 2`` in 3D) average pooling per
  level. It lowers i.i.d. noise std by ``2**(d/2)`` per level.
- ``"nearest"``: keeps every second sample (what ``F.interpolate(scale_factor=0.5)`` does by
  default). It keeps the per-pixel noise but aliases; offered for parity with earlier code. It
  also takes integer tensors (label maps), and returns a contiguous copy, like the others.
- ``"antialias"``: separable linear (tent) filter ``[1, 3, 3, 1] / 8`` with stride 2,
  renormalised at the borders. In 2D it equals
  ``F.interpolate(mode="bilinear", antialias=True, scale_factor=0.5)``; it extends the same
  filter to 3D, where PyTorch has no anti-aliased mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RESTRICTION_METHODS",
    "Restrict",
    "check_level_sizes",
    "level_shape",
    "restrict",
]

RESTRICTION_METHODS: tuple[str, ...] = ("area", "nearest", "antialias")

_AXIS_NAMES = {2: ("H", "W"), 3: ("D", "H", "W")}


def _check_method(method: str) -> None:
    if method not in RESTRICTION_METHODS:
        raise ValueError(
            f"unknown restriction method {method!r}; use one of {', '.join(map(repr, RESTRICTION_METHODS))}"
        )


def _nearest_valid(size: int, multiple: int) -> tuple[int, int]:
    below = (size // multiple) * multiple
    return below, below + multiple


def check_level_sizes(
    spatial_shape: Sequence[int],
    levels: int,
    *,
    multiple: int = 1,
    what: str = "network",
) -> None:
    """Check that every level ``0..levels`` of a grid has sides divisible by ``multiple``.

    With ``multiple=1`` this checks only that ``levels`` halvings are possible. A network that
    downsamples ``n`` times needs each side divisible by ``2**n`` at every level it sees, so
    the fine side must be divisible by ``multiple * 2**levels``.

    Args:
        spatial_shape: spatial sizes of the finest grid, ``(H, W)`` or ``(D, H, W)``.
        levels: the coarsest level that will be formed (0 = finest only).
        multiple: divisor the ``what`` needs at every level (e.g. ``2**3`` for a U-Net
            with 3 downsamplings).
        what: name used in the error message for the thing that needs ``multiple``.

    Raises:
        ValueError: naming the size, the level that breaks and the nearest valid sizes.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 0:
        raise ValueError(f"levels must be an integer >= 0, got {levels!r}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    names = _AXIS_NAMES.get(len(spatial_shape), tuple(f"axis{i}" for i in range(len(spatial_shape))))
    for axis, size in zip(names, spatial_shape):
        size = int(size)
        for level in range(levels + 1):
            need = multiple * 2**level
            if size % need == 0 and size // 2**level >= 1:
                continue
            below, above = _nearest_valid(size, need)
            last_ok = next(
                (lv for lv in range(level - 1, -1, -1) if size % (multiple * 2**lv) == 0),
                None,
            )
            hint = f"use levels <= {last_ok}" if last_ok is not None else "change the image size"
            valid = f"{above}" if below == 0 else f"{below} or {above}"
            if multiple == 1:
                reason = f"is not divisible by 2**{level} = {need}, so level {level} cannot be formed"
            else:
                reason = (
                    f"gives side {size / 2**level:g} at level {level}, but the {what} needs sides "
                    f"divisible by {multiple} there (fine sides divisible by {multiple} * 2**{level} = {need})"
                )
            raise ValueError(
                f"spatial size {size} (axis {axis}) {reason}. Nearest valid sizes: {valid}; "
                f"crop or pad the images to one of them, or {hint}."
            )


def level_shape(spatial_shape: Sequence[int], level: int) -> tuple[int, ...]:
    """Spatial shape at ``level`` of a fine grid of ``spatial_shape`` (checked for divisibility)."""
    check_level_sizes(spatial_shape, level)
    return tuple(int(s) // 2**level for s in spatial_shape)


def _tent_kernel(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=dtype, device=device) / 8.0


def _antialias_once(x: torch.Tensor) -> torch.Tensor:
    """One level of separable tent filtering with stride 2, renormalised at the borders."""
    spatial_dims = x.dim() - 2
    conv = F.conv2d if spatial_dims == 2 else F.conv3d
    batch, channels = x.shape[:2]
    flat = x.reshape(batch * channels, 1, *x.shape[2:])
    # Border weights: filter a ones image the same way and divide (PyTorch's antialias
    # renormalises the truncated filter, not a replicate or reflect padding).
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    kernel_1d = _tent_kernel(x.dtype, x.device)
    for axis in range(spatial_dims):
        shape = [1, 1] + [1] * spatial_dims
        shape[2 + axis] = 4
        stride = [1] * spatial_dims
        stride[axis] = 2
        padding = [0] * spatial_dims
        padding[axis] = 1
        weight = kernel_1d.reshape(shape)
        flat = conv(flat, weight, stride=stride, padding=padding)
        ones = conv(ones, weight, stride=stride, padding=padding)
    return (flat / ones).reshape(batch, channels, *flat.shape[2:])


def _restrict_once(x: torch.Tensor, method: str) -> torch.Tensor:
    if method == "area":
        pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
        return pool(x, kernel_size=2, stride=2)
    if method == "nearest":  # a strided view: copied, since ignite metrics call .view on it
        return x[(..., *([slice(None, None, 2)] * (x.dim() - 2)))].contiguous()
    return _antialias_once(x)


def restrict(x: torch.Tensor, levels: int = 1, method: str = "area") -> torch.Tensor:
    """Restrict a batch of images or volumes ``levels`` times by a factor 2 per spatial axis.

    Args:
        x: tensor of shape ``(B, C, H, W)`` or ``(B, C, D, H, W)``, any floating dtype (any
            dtype for ``"nearest"``), any device. Gradients flow through.
        levels: number of halvings (0 returns ``x`` itself).
        method: ``"area"`` (default), ``"nearest"`` or ``"antialias"``.

    Returns:
        Tensor of shape ``(B, C, H / 2**levels, W / 2**levels)`` (or the 3D analogue), contiguous
        for ``levels > 0``. For labels see :func:`mge_plugins.level_rules.restrict_mode`.

    Raises:
        ValueError: for a tensor that is not 4-D or 5-D, an unknown method, or a spatial size
            that ``2**levels`` does not divide (the message names the valid sizes).

    Example:
        >>> x = torch.ones(2, 3, 32, 32)
        >>> restrict(x, levels=2).shape
        torch.Size([2, 3, 8, 8])
    """
    _check_method(method)
    if x.dim() not in (4, 5):
        raise ValueError(
            f"restrict expects (B, C, H, W) or (B, C, D, H, W), got a tensor of shape {tuple(x.shape)}; "
            "add the missing batch/channel axes with x[None] or x.unsqueeze(1)"
        )
    if not x.is_floating_point() and method != "nearest":
        raise ValueError(
            f"restrict({method!r}) needs a floating-point tensor, got {x.dtype}; convert with x.float(), or "
            "restrict label maps with method='nearest' or mge_plugins.level_rules.restrict_mode"
        )
    check_level_sizes(x.shape[2:], levels)
    for _ in range(levels):
        x = _restrict_once(x, method)
    return x


class Restrict(nn.Module):
    """Module form of :func:`restrict`.

    Args:
        levels: number of halvings.
        method: restriction method, see :data:`RESTRICTION_METHODS`.
    """

    def __init__(self, levels: int = 1, method: str = "area") -> None:
        super().__init__()
        _check_method(method)
        self.levels = levels
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restrict ``x``."""
        return restrict(x, self.levels, self.method)

    def extra_repr(self) -> str:
        """Levels and method, for ``repr``."""
        return f"levels={self.levels}, method={self.method!r}"
