"""Medical data that needs no download: synthetic NIfTI volumes and the bundled retina photograph."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
from monai.data.synthetic import create_test_image_2d, create_test_image_3d
from monai.utils import optional_import

nib, has_nibabel = optional_import("nibabel")

__all__ = ["NIFTI_SUFFIXES", "check_nifti", "nifti_files", "retina_image", "write_synthetic_volumes"]

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


def nifti_files(folder: str | Path, check: bool = True) -> list[Path]:
    """Every NIfTI file in ``folder``, sorted.

    :param folder: the data folder.
    :param check: read each file's header and check that its data are complete (the file's size,
        or for ``.nii.gz`` the gzip trailer, decompressing only a file whose trailer disagrees), so
        an unreadable or truncated file is named before training rather than inside a loader worker.
    :raises FileNotFoundError: when the folder is missing or holds no NIfTI file, naming it.
    :raises ValueError: for an unreadable or truncated file, naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {folder}: no such folder")
    paths = sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    if not paths:
        raise FileNotFoundError(f"no NIfTI files ({', '.join(NIFTI_SUFFIXES)}) in {folder}")
    if check:
        for path in paths:
            check_nifti(path)
    return paths


def _gzip_length(path: Path) -> int:
    """Uncompressed length of a gzip file, decompressing it chunk by chunk."""
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            total += len(chunk)
    return total


def check_nifti(path: str | Path) -> None:
    """Fail with the file's name if ``path`` is not a readable, complete NIfTI file.

    :raises ValueError: naming the file, what is wrong and the fix.
    :raises ImportError: without nibabel, naming the install command.
    """
    if not has_nibabel:
        raise ImportError("reading NIfTI files needs nibabel: pip install nibabel")
    path = Path(path)
    fix = "replace or remove the file (re-export or re-download it)"
    try:
        image = nib.load(str(path))
        header = image.header
        offset = getattr(image.dataobj, "offset", None)
        offset = int(header.get_data_offset() if offset is None else offset)
        expected = offset + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    except Exception as error:  # nibabel raises several types for a damaged or foreign file
        raise ValueError(f"{path} is not a readable NIfTI file ({error}); {fix}") from error
    if path.name.endswith(".gz"):
        with path.open("rb") as stream:
            stream.seek(-4, 2)
            trailer = int.from_bytes(stream.read(4), "little")
        if trailer == expected % 2**32:
            return
        try:
            actual = _gzip_length(path)
        except (EOFError, OSError, zlib.error) as error:
            raise ValueError(f"{path} is truncated or corrupt ({error}); {fix}") from error
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise ValueError(f"{path} is truncated: its header needs {expected} bytes but it holds {actual}; {fix}")


def retina_image() -> torch.Tensor:
    """The 1411 x 1411 fundus photograph shipped with scikit-image, as a ``(1, H, W)`` tensor in [0, 1]."""
    try:
        import skimage.data
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("the retina photograph needs scikit-image: pip install scikit-image") from error
    rgb = np.asarray(skimage.data.retina(), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb.mean(-1))[None]
