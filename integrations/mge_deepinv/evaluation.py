"""Held-out quality of a reconstruction network: fixed crops, fixed measurement noise, DeepInverse's metrics.

``mge-train`` and ``mge-bench`` score their networks with these functions, so the two commands report the
same figures for the same network, crops and seed.
"""

from __future__ import annotations

import deepinv as dinv
import torch

from .data import TEST_IMAGES, ImageCrops, bundled_images

__all__ = ["evaluate", "held_out_crops", "input_quality", "measure", "quality_metrics", "reconstruct", "score"]


def quality_metrics() -> list[dinv.metric.Metric]:
    """Fresh DeepInverse metrics, PSNR then SSIM (images in [0, 1]), as a trainer's ``metrics=`` takes them.

    :return: ``[dinv.metric.PSNR(), dinv.metric.SSIM()]``; a trainer logs them as ``"PSNR"`` and ``"SSIM"``.
    """
    return [dinv.metric.PSNR(), dinv.metric.SSIM()]


def held_out_crops(size: int, count: int, seed: int, channels: int = 1) -> torch.Tensor:
    """``count`` fixed ``size x size`` crops of the held-out photographs (``TEST_IMAGES``), as one batch.

    :param int size: crop side.
    :param int count: number of crops.
    :param int seed: seed of the crop positions (crop ``i`` is the same for the same seed).
    :param int channels: 1 (grayscale) or 3.
    :return: a ``(count, channels, size, size)`` tensor on the CPU.
    """
    crops = ImageCrops(bundled_images(TEST_IMAGES, channels), size, count, seed=seed)
    return torch.stack([crops[i] for i in range(len(crops))])


def measure(physics: dinv.physics.Physics, clean: torch.Tensor, seed: int) -> torch.Tensor:
    """Measurements ``physics(clean)`` with the noise drawn from ``seed``; the global RNG is left as it was.

    :param deepinv.physics.Physics physics: the forward operator and its noise model.
    :param torch.Tensor clean: ground-truth batch.
    :param int seed: seed of the measurement noise.
    :return: the measurements ``y``.
    """
    devices = [clean.device] if clean.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return physics(clean)


@torch.no_grad()
def reconstruct(
    model: torch.nn.Module, physics: dinv.physics.Physics, clean: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Measure ``clean`` with noise from ``seed`` (see :func:`measure`) and reconstruct in eval mode.

    The model's training mode is restored afterwards.

    :param torch.nn.Module model: called as ``model(y, physics)``.
    :param deepinv.physics.Physics physics: the forward operator.
    :param torch.Tensor clean: ground-truth batch.
    :param int seed: seed of the measurement noise.
    :return: ``(y, x_net)``, the measurements and the reconstructions.
    """
    y = measure(physics, clean, seed)
    was_training = model.training
    model.eval()
    try:
        x_net = model(y, physics)
    finally:
        model.train(was_training)
    return y, x_net


@torch.no_grad()
def score(x_net: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of ``x_net`` against ``clean``, with :func:`quality_metrics`.

    :param torch.Tensor x_net: reconstructions.
    :param torch.Tensor clean: ground truth, same shape.
    :return: ``{"psnr": ..., "ssim": ...}``, each the mean over the batch.
    """
    psnr, ssim = quality_metrics()
    return {"psnr": psnr(x_net, clean).mean().item(), "ssim": ssim(x_net, clean).mean().item()}


def evaluate(model: torch.nn.Module, physics: dinv.physics.Physics, clean: torch.Tensor, seed: int) -> dict[str, float]:
    """PSNR and SSIM of ``model`` on ``clean``, measured with noise from ``seed`` (RNG left as it was).

    :param torch.nn.Module model: called as ``model(y, physics)``.
    :param deepinv.physics.Physics physics: the forward operator.
    :param torch.Tensor clean: ground-truth batch.
    :param int seed: seed of the measurement noise.
    :return: ``{"psnr": ..., "ssim": ...}`` (see :func:`score`).
    """
    return score(reconstruct(model, physics, clean, seed)[1], clean)


@torch.no_grad()
def input_quality(physics: dinv.physics.Physics, clean: torch.Tensor, seed: int) -> dict[str, float]:
    """PSNR and SSIM of the measurement itself, the quality a network has to beat.

    The measurement is drawn as in :func:`evaluate` (same ``seed``, same noise) and clipped to [0, 1];
    a smaller measurement (super-resolution) is first resized to the image's size (bicubic).

    :param deepinv.physics.Physics physics: the forward operator.
    :param torch.Tensor clean: ground-truth batch.
    :param int seed: seed of the measurement noise.
    :return: ``{"psnr": ..., "ssim": ...}`` (see :func:`score`).
    """
    y = measure(physics, clean, seed)
    if y.shape[2:] != clean.shape[2:]:
        y = torch.nn.functional.interpolate(y, size=clean.shape[2:], mode="bicubic" if y.dim() == 4 else "trilinear")
    return score(y.clamp(0, 1), clean)
