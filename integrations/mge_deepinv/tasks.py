"""The bundled reconstruction tasks: a physics operator and a network for each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import deepinv as dinv
import torch
from deepinv.physics.functional.blur import gaussian_blur
from deepinv.physics.generator import PhysicsGenerator

from .networks import NETWORKS as _NETWORKS
from .networks import build_network
from .physics import BlockMaskGenerator

__all__ = ["NETWORKS", "TASKS", "Task", "make_model"]


@dataclass(frozen=True)
class Task:
    """A bundled task.

    :param str description: one line for ``--help``.
    :param Callable physics: ``physics(size, channels, device) -> deepinv.physics.Physics``.
    :param Callable, None generator: ``generator(size, channels, device, seed) -> PhysicsGenerator`` drawing the
        operator's random parameters anew for every training sample (passed as ``physics_generator=``), or
        ``None`` for a fixed operator.
    :param int size_multiple: what the crop side must be a multiple of.
    :param str size_reason: why, for the error message.
    """

    description: str
    physics: Callable[[int, int, str], dinv.physics.Physics]
    generator: Callable[[int, int, str, int], PhysicsGenerator] | None = None
    size_multiple: int = 1
    size_reason: str = ""


def _denoise(size: int, channels: int, device: str) -> dinv.physics.Physics:
    return dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1), device=device)


def _deblur(size: int, channels: int, device: str) -> dinv.physics.Physics:
    return dinv.physics.Blur(
        filter=gaussian_blur(sigma=(1.5, 1.5)),
        padding="circular",
        noise_model=dinv.physics.GaussianNoise(0.01),
        device=device,
    )


def _inpaint(size: int, channels: int, device: str) -> dinv.physics.Physics:
    # One fixed mask of missing 8x8 blocks, for uses without the generator below (which sets a mask per sample).
    g = torch.Generator().manual_seed(0)
    blocks = (torch.rand(1, 1, size // 8, size // 8, generator=g) > 0.3).float()
    mask = blocks.repeat_interleave(8, -1).repeat_interleave(8, -2)
    return dinv.physics.Inpainting(
        img_size=(channels, size, size), mask=mask, noise_model=dinv.physics.GaussianNoise(0.01), device=device
    )


def _inpaint_masks(size: int, channels: int, device: str, seed: int) -> PhysicsGenerator:
    # 30 % of the 8x8 blocks missing, a new mask per sample: the restricted mask is exact on every level up to 3.
    rng = torch.Generator(device).manual_seed(seed)
    return BlockMaskGenerator((channels, size, size), split_ratio=0.7, block=8, rng=rng, device=device)


def _super_resolve(size: int, channels: int, device: str) -> dinv.physics.Physics:
    return dinv.physics.Downsampling(
        img_size=None, filter="bicubic", factor=2, padding="circular",
        noise_model=dinv.physics.GaussianNoise(0.01), device=device,
    )  # fmt: skip


TASKS: dict[str, Task] = {
    "denoise": Task("Gaussian denoising, sigma = 0.1", _denoise),
    "deblur": Task("Gaussian deblurring (blur sigma 1.5 px), noise 0.01", _deblur),
    "inpaint": Task(
        "inpainting of 30 % missing 8x8 blocks (a new mask per sample), noise 0.01",
        _inpaint,
        _inpaint_masks,
        size_multiple=8,
        size_reason="its masks are made of 8x8 blocks",
    ),
    "sr": Task("2x super-resolution, bicubic anti-alias filter, noise 0.01", _super_resolve),
}


NETWORKS: tuple[str, ...] = tuple(_NETWORKS)
"""The names ``make_model`` builds (:data:`mge_deepinv.networks.NETWORKS` describes them)."""


def make_model(
    channels: int = 1,
    depth: int | None = None,
    width: int | None = None,
    device: str = "cpu",
    network: str = "dncnn",
) -> torch.nn.Module:
    """A small network without BatchNorm or pretrained weights, called as ``model(y, physics)``.

    :param int channels: image channels.
    :param int, None depth: convolutions, blocks or downsamplings (``None``: the network's default).
    :param int, None width: hidden channels (``None``: the network's default).
    :param str device: where to build it.
    :param str network: a name of :data:`NETWORKS`: ``"dncnn"`` (deepinv's DnCNN, 5 convolutions of 32
        channels, on the adjoint of the measurement), ``"meshfree"`` (a residual network of
        :class:`mge_plugins.meshfree.MeshFreeConv2d`, one operator at every level), ``"unet"``,
        ``"resnet"`` (timestep-conditioned), ``"espcn"`` (from the low-resolution measurement),
        ``"drunet"`` or ``"dinv-unet"``; see :mod:`mge_deepinv.networks`.
    :raises ValueError: for an unknown network, listing the known ones.
    """
    return build_network(network, channels, width=width, depth=depth, device=device)
