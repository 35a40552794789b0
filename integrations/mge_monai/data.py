"""Medical data that needs no download: synthetic NIfTI volumes and the bundled retina photograph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data.synthetic import create_test_image_2d, create_test_image_3d
from monai.utils import optional_import

nib, has_nibabel = optional_import("nibabel")

__all__ = ["NIFTI_SUFFIXES", "nifti_files", "retina_image", "write_synthetic_volumes"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _smooth(volume: np.ndarray, passes: int = 2) -> np.ndarray:
    tensor = torch.from_numpy(volume)[None, None].float()
    pool = torch.nn.functional.avg_pool3d if volume.ndim == 3 else torch.nn.functional.avg_pool2d
    for _ in range(passes):
        tensor = pool(tensor, 3, stride=1, padding=1, count_include_pad=False)
    return tensor[0, 0].numpy()


def write_synthetic_volumes(
    folder: str | Path, count: int = 8, size: int = 64, dims: int = 3, seed: int = 0
) -> list[Path]:
    """Write ``count`` smoothed MONAI phantoms (ellipsoids of random intensity) as NIfTI files.

    :param folder: where to write ``phantom_000.nii.gz``, ...; created if missing.
    :param count: number of volumes.
    :param size: side of each volume.
    :param dims: 3 for volumes, 2 for images.
    :param seed: random seed of the phantoms.
    :return: the written paths.
    :raises ImportError: without nibabel, naming the install command.
    """
    if not has_nibabel:
        raise ImportError("writing NIfTI files needs nibabel: pip install nibabel")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    paths = []
    for index in range(count):
        make = create_test_image_3d if dims == 3 else create_test_image_2d
        shape = (size,) * dims
        image, _ = make(*shape, num_objs=12, rad_max=max(4, size // 5), rad_min=2, noise_max=0.0, random_state=rng)
        image = _smooth(image.astype(np.float32))
        path = folder / f"phantom_{index:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(path))
        paths.append(path)
    return paths


def nifti_files(folder: str | Path) -> list[Path]:
    """Every NIfTI file in ``folder``, sorted.

    :raises FileNotFoundError: when the folder is missing or holds no NIfTI file, naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {folder}: no such folder")
    paths = sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    if not paths:
        raise FileNotFoundError(f"no NIfTI files ({', '.join(NIFTI_SUFFIXES)}) in {folder}")
    return paths


def retina_image() -> torch.Tensor:
    """The 1411 x 1411 fundus photograph shipped with scikit-image, as a ``(1, H, W)`` tensor in [0, 1]."""
    try:
        import skimage.data
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("the retina photograph needs scikit-image: pip install scikit-image") from error
    rgb = np.asarray(skimage.data.retina(), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb.mean(-1))[None]
