"""What the plain-PyTorch examples share: the bundled photographs, the denoiser and the level posing."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from mge_plugins import restrict, restricted_randn

__all__ = ["TEST_IMAGES", "TRAIN_IMAGES", "RandomCrops", "bundled_images", "make_pose", "residual_denoiser"]

TRAIN_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
TEST_IMAGES = ("camera", "moon")


def bundled_images(names: tuple[str, ...]) -> list[torch.Tensor]:
    """Grayscale ``(1, H, W)`` float images in [0, 1] from scikit-image's bundled data."""
    import skimage.data

    images = []
    for name in names:
        array = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(array.mean(-1) if array.ndim == 3 else array)[None])
    return images


class RandomCrops:
    """Draws batches of random crops from a list of images (one generator, reproducible)."""

    def __init__(self, images: list[torch.Tensor], size: int, seed: int) -> None:
        small = [tuple(im.shape[-2:]) for im in images if min(im.shape[-2:]) < size]
        if small:
            raise SystemExit(f"--size {size} is larger than images of shape {small}; lower --size")
        self.images, self.crop = images, v2.RandomCrop(size)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, n: int) -> torch.Tensor:
        picks = torch.randint(len(self.images), (n,), generator=self.generator).tolist()
        state = torch.get_rng_state()
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=self.generator)))
        crops = torch.stack([self.crop(self.images[i]) for i in picks])
        torch.set_rng_state(state)
        return crops


class _Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y - self.body(y)


def residual_denoiser(width: int, depth: int = 5) -> nn.Module:
    """A DnCNN-style residual denoiser of ``depth`` convolutions, without normalisation layers."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(width, 1, 3, padding=1))
    return _Residual(nn.Sequential(*layers))


def make_pose(sigma: float, keep_std: bool = True) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
    """Pose clean crops at a level: restrict them, add noise drawn at the fine grid.

    The noise is drawn at full resolution and restricted, so both halves of an MGE difference see
    the same noise (the estimator replays the random stream). ``keep_std`` keeps the noise level
    at ``sigma`` on every level, so coarse Full-Multiscale stages train the task the fine stage
    needs; without it the restricted noise has std ``sigma / 2**level``.
    """

    def pose(clean: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        target = restrict(clean, level)
        noise = restricted_randn(clean.shape, level, keep_std=keep_std, device=clean.device)
        return target + sigma * noise, target

    return pose
