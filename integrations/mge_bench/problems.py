"""The benchmark's problems: data, operator and network of each task, 2D photographs and 3D phantoms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import deepinv as dinv
import numpy as np
import torch
from mge_deepinv.data import TRAIN_IMAGES, ImageCrops, bundled_images
from mge_deepinv.evaluation import held_out_crops
from mge_deepinv.tasks import TASKS

from .settings import BenchSettings

__all__ = ["TASKS_3D", "PhantomVolumes", "Problem", "make_problem"]

TASKS_3D: dict[str, str] = {"denoise3d": "3D Gaussian denoising (sigma 0.1) of MONAI's synthetic phantoms"}


class PhantomVolumes(torch.utils.data.Dataset):
    """``length`` synthetic 3D phantoms (``monai.data.synthetic.create_test_image_3d``), sample ``i`` fixed.

    Args:
        size: cube side.
        length: number of volumes.
        seed: seed of the phantoms.

    Raises:
        ImportError: without MONAI, naming the extra to install.
    """

    def __init__(self, size: int, length: int, seed: int = 0) -> None:
        try:
            from monai.data.synthetic import create_test_image_3d
        except ImportError as error:  # pragma: no cover - exercised only without the extra
            raise ImportError("the 3D task needs MONAI: pip install 'mge-plugins[bench]'") from error
        self._create = create_test_image_3d
        self.size, self.length, self.seed = size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.RandomState((self.seed * 1_000_003 + index) % 2**32)
        image, _ = self._create(
            self.size, self.size, self.size, num_objs=6, rad_max=max(3, self.size // 4),
            rad_min=max(1, self.size // 16), noise_max=0.0, random_state=rng,
        )  # fmt: skip
        volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        return (volume - volume.min()) / (volume.max() - volume.min()).clamp_min(1e-6)


@dataclass
class Problem:
    """One task ready to train.

    Attributes:
        name: task name.
        description: one line.
        spatial_dims: 2 or 3.
        size: crop (or cube) side.
        make_physics: ``() -> deepinv.physics.Physics`` (fresh for every run).
        make_model: ``() -> torch.nn.Module`` called as ``model(y, physics)`` (same initial weights
            every call, seeded).
        train_set: ``train_set(length, zoom) -> Dataset`` of clean crops.
        eval_clean: the held-out clean crops, one batch.
    """

    name: str
    description: str
    spatial_dims: int
    size: int
    make_physics: Callable[[], dinv.physics.Physics]
    make_model: Callable[[], torch.nn.Module]
    train_set: Callable[[int, tuple[float, float] | None], torch.utils.data.Dataset]
    eval_clean: torch.Tensor


def make_problem(name: str, settings: BenchSettings) -> Problem:
    """Build the problem ``name`` at ``settings``'s sizes.

    Raises:
        ValueError: for an unknown task, listing the known ones.
    """
    device = settings.device
    if name in TASKS:
        dims, size = 2, settings.size
        images = bundled_images(TRAIN_IMAGES)

        def train_set(length: int, zoom: tuple[float, float] | None) -> torch.utils.data.Dataset:
            return ImageCrops(images, size, length, seed=settings.seed, zoom=zoom)

        eval_clean = held_out_crops(size, settings.eval_crops, seed=settings.seed + 2)

        def make_physics() -> dinv.physics.Physics:
            return TASKS[name].physics(size, 1, device)

        description = TASKS[name].description
    elif name in TASKS_3D:
        dims, size = 3, settings.size3d

        def train_set(length: int, zoom: tuple[float, float] | None) -> torch.utils.data.Dataset:
            if zoom is not None:
                raise ValueError("random-resized-crop augmentation is not defined for the 3D phantoms")
            return PhantomVolumes(size, length, seed=settings.seed)

        eval_set = PhantomVolumes(size, settings.eval_crops, seed=settings.seed + 10_000)
        eval_clean = torch.stack([eval_set[i] for i in range(len(eval_set))])

        def make_physics() -> dinv.physics.Physics:
            return dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1), device=device)

        description = TASKS_3D[name]
    else:
        known = ", ".join([*TASKS, *TASKS_3D])
        raise ValueError(f"unknown task {name!r}; choose from {known}")

    def make_model() -> torch.nn.Module:
        torch.manual_seed(settings.seed)
        backbone = dinv.models.UNet(
            1, 1, scales=len(settings.unet_channels), batch_norm=False,
            channels_per_scale=list(settings.unet_channels), dim=dims, device=device,
        )  # fmt: skip
        return dinv.models.ArtifactRemoval(backbone, mode="adjoint", device=device)

    return Problem(name, description, dims, size, make_physics, make_model, train_set, eval_clean.to(device))
