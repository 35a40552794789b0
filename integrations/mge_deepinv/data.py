"""Training images that need no download: crops of scikit-image's photographs, or any folder."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2.functional import resized_crop

__all__ = [
    "IMAGE_SUFFIXES",
    "TEST_IMAGES",
    "TRAIN_IMAGES",
    "DictSamples",
    "ImageCrops",
    "bundled_images",
    "folder_images",
    "read_folder",
    "to_channels",
]

Zoom = tuple[float, float]

TRAIN_IMAGES: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
)  # fmt: skip
TEST_IMAGES: tuple[str, ...] = ("camera", "moon")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """A ``(C, H, W)`` image as grayscale (``channels=1``, the mean of R, G and B) or RGB (``channels=3``).

    An alpha channel (grayscale + alpha, RGBA) is dropped first.

    :param torch.Tensor image: a ``(C, H, W)`` image with 1 to 4 channels.
    :param int channels: 1 or 3.
    :return: the ``(channels, H, W)`` image.
    """
    if image.shape[0] in (2, 4):
        image = image[:-1]
    if image.shape[0] == channels:
        return image
    if channels == 1:
        return image[:3].mean(0, keepdim=True)
    return image[:1].expand(channels, *image.shape[1:]).clone()


def bundled_images(names: Sequence[str] = TRAIN_IMAGES, channels: int = 1) -> list[torch.Tensor]:
    """``(C, H, W)`` float images in [0, 1] from the photographs inside scikit-image's wheel.

    :param list[str] names: names of ``skimage.data`` images.
    :param int channels: 1 (grayscale) or 3.
    """
    try:
        import skimage.data
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("the bundled images need scikit-image: pip install scikit-image") from error
    images = []
    for name in names:
        array = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array[..., :3].transpose(2, 0, 1) if array.ndim == 3 else array[None].copy())
        images.append(to_channels(tensor.contiguous(), channels))
    return images


def folder_images(folder: str | Path, channels: int = 1) -> list[torch.Tensor]:
    """``(C, H, W)`` float images from every image file in ``folder`` (sorted by name), at ``channels``.

    :param str, pathlib.Path folder: the folder.
    :param int channels: 1 (grayscale) or 3 (see :func:`to_channels`).
    :raises FileNotFoundError: when the folder is missing or holds no image, naming it.
    :raises ValueError: for a file that cannot be decoded, naming the file.
    """
    return [to_channels(image, channels) for image in read_folder(folder)]


def read_folder(folder: str | Path) -> list[torch.Tensor]:
    """``(C, H, W)`` float images in [0, 1] from every image file in ``folder``, with their stored channels.

    :param str, pathlib.Path folder: the folder.
    :raises FileNotFoundError: when the folder is missing or holds no image, naming it.
    :raises ValueError: for a file that cannot be decoded, naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {folder}: no such folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    images = []
    for path in paths:
        try:
            image = _decode(path)
        except (OSError, SyntaxError, ValueError) as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"cannot decode {path} ({reason}): the file is truncated, corrupt or not an image; replace or remove it"
            ) from error
        images.append(image)
    return images


def _decode(path: Path) -> torch.Tensor:
    """One image file as a ``(C, H, W)`` float tensor in [0, 1] (Pillow; 8- and 16-bit, with or without alpha)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # a truncated file fails here, not later
        if image.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I"):
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        array = np.asarray(image)
    scale = 255.0 if array.dtype == np.uint8 else 65535.0
    array = array.astype(np.float32) / scale
    return torch.from_numpy(array.transpose(2, 0, 1).copy() if array.ndim == 3 else array[None].copy())


class DictSamples(torch.utils.data.Dataset):
    """Sample ``i`` of a dataset of clean images as ``{"x": dataset[i]}``, DeepInverse's recommended format.

    Deepinv deprecates datasets that return a bare tensor; ``mge-train`` and ``mge-bench`` wrap theirs.

    :param torch.utils.data.Dataset dataset: a dataset (or a list) of ``(C, H, W)`` tensors.
    """

    def __init__(self, dataset: torch.utils.data.Dataset | Sequence[torch.Tensor]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.dataset[index]}


class ImageCrops(torch.utils.data.Dataset):
    """``length`` random ``size x size`` crops of a list of images; crop ``i`` is the same every time.

    :param list[torch.Tensor] images: ``(C, H, W)`` images, each at least ``size`` on both sides.
    :param int size: crop side.
    :param int length: number of crops (one epoch).
    :param int seed: seed of the crop positions.
    :param tuple[float, float], None zoom: random-resized-crop augmentation: crop a region whose side
        is ``size`` times a factor drawn log-uniformly in ``zoom`` (aspect ratio in [3/4, 4/3]), then
        resize it to ``size x size`` with antialiasing (torchvision's ``resized_crop``). ``None``: plain
        crops.
    """

    def __init__(
        self, images: Sequence[torch.Tensor], size: int, length: int, seed: int = 0, zoom: Zoom | None = None
    ) -> None:
        small = [tuple(im.shape[-2:]) for im in images if min(im.shape[-2:]) < size]
        if small:
            raise ValueError(f"crop size {size} is larger than images of size {small}; use a smaller size")
        if not images:
            raise ValueError("ImageCrops needs at least one image")
        if zoom is not None and not 1.0 <= zoom[0] <= zoom[1]:
            raise ValueError(f"zoom must be a range (low, high) with 1 <= low <= high, got {zoom}")
        self.images, self.size, self.length, self.seed, self.zoom = list(images), size, length, seed, zoom

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
        height = width = self.size
        if self.zoom is not None:
            low, high = (math.log(z) for z in self.zoom)
            factor = math.exp(low + (high - low) * float(torch.rand((), generator=g)))
            aspect = math.exp(math.log(3 / 4) + math.log(16 / 9) * float(torch.rand((), generator=g)))
            height = min(image.shape[-2], max(self.size, round(self.size * factor / math.sqrt(aspect))))
            width = min(image.shape[-1], max(self.size, round(self.size * factor * math.sqrt(aspect))))
        top = int(torch.randint(image.shape[-2] - height + 1, (1,), generator=g))
        left = int(torch.randint(image.shape[-1] - width + 1, (1,), generator=g))
        if self.zoom is None:
            return image[:, top : top + height, left : left + width]
        return resized_crop(image, top, left, height, width, [self.size, self.size], antialias=True)
