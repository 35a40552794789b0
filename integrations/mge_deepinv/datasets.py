"""The paper's data sets, CIFAR-10, STL-10, CelebA and Urban100, read from local disk; nothing is downloaded.

Each is read in its standard on-disk layout with torchvision's or DeepInverse's own loader:

- ``cifar10``: ``ROOT/cifar-10-batches-py/`` (the python version), torchvision's ``CIFAR10``;
- ``stl10``: ``ROOT/stl10_binary/*.bin`` (the binary version), torchvision's ``STL10``;
- ``celeba``: ``ROOT/celeba/img_align_celeba/*.jpg`` and ``ROOT/celeba/list_eval_partition.txt``,
  torchvision's ``CelebA`` (its partition parser and image reader);
- ``urban100``: ``ROOT/Urban100_HR/*.png`` (DeepInverse's ``Urban100HR`` layout), or the high-resolution
  ``*_HR.png`` of ``ROOT/image_SRF_*/`` (the super-resolution release), or ``ROOT/HR/*.png``, or a folder of
  PNGs, each also under ``ROOT/Urban100/``; DeepInverse's ``ImageFolder``.

torchvision and DeepInverse verify the MD5 sums of the files they would download. Here a file is
only required to exist, so that a copy that was unpacked, converted or cut down (and the tests' tiny
files) loads: a damaged file surfaces as a parse or decode error naming the data set's layout or the
file. Urban100 has no test split: the last tenth of its images in natural order (``img_091`` to
``img_100`` of the 100) is held out as ``split="test"``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torchvision.datasets import CIFAR10, STL10, CelebA, VisionDataset
from torchvision.transforms.v2.functional import pil_to_tensor

from .data import to_channels

__all__ = ["PAPER_DATASETS", "PaperDataset", "paper_dataset", "paper_images", "take_images"]


class _CIFAR10Files(CIFAR10):
    """torchvision's ``CIFAR10`` with every checksum ``None``: its integrity check then checks that the files exist."""

    train_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR10.train_list]
    test_list: ClassVar[list[list[str | None]]] = [[name, None] for name, _ in CIFAR10.test_list]
    meta: ClassVar[dict[str, str | None]] = {**CIFAR10.meta, "md5": None}


class _STL10Files(STL10):
    """torchvision's ``STL10`` whose integrity check is that the files of the requested split exist (no MD5)."""

    def _check_integrity(self) -> bool:
        return all((Path(self.root) / self.base_folder / name).is_file() for name in _STL10_FILES[self.split])


_STL10_FILES = {
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
    "unlabeled": ("unlabeled_X.bin",),
    "train+unlabeled": ("train_X.bin", "train_y.bin", "unlabeled_X.bin"),
}


class _CelebAImages(CelebA):
    """torchvision's ``CelebA`` reading only ``list_eval_partition.txt`` and ``img_align_celeba/``.

    torchvision's constructor also requires the four annotation files (attributes, identities,
    boxes, landmarks) and their MD5 sums; the images need none of them. This one parses the
    partition with torchvision's parser and reads the images with its ``__getitem__``.

    :param str, pathlib.Path root: the folder holding ``celeba/``.
    :param str split: ``"train"``, ``"valid"`` or ``"test"``.
    """

    def __init__(self, root: str | Path, split: str) -> None:
        VisionDataset.__init__(self, root, transform=pil_to_tensor)
        self.split, self.target_type = split, []
        partition = self._load_csv("list_eval_partition.txt")
        code = {"train": 0, "valid": 1, "test": 2}[split]
        self.filename = [name for name, row in zip(partition.index, partition.data.tolist()) if row[0] == code]


class _Images(torch.utils.data.Dataset):
    """``(C, H, W)`` float images in [0, 1] read one at a time from 8-bit ``(C, H, W)`` pixels.

    :param int count: number of images.
    :param Callable read: ``read(i)``, image ``i`` as a ``(C, H, W)`` uint8 tensor.
    :param Callable where: ``where(i)``, the file image ``i`` is read from, for error messages.
    """

    def __init__(self, count: int, read: Callable[[int], torch.Tensor], where: Callable[[int], str]) -> None:
        self.count, self.read, self.where = count, read, where

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.count <= index < self.count:
            raise IndexError(f"image {index} of {self.count}")
        index %= self.count
        try:
            pixels = self.read(index)
        except (OSError, SyntaxError, ValueError) as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"cannot decode {self.where(index)} ({reason}): the file is missing, truncated or not an image; "
                "replace it"
            ) from error
        return pixels.to(torch.float32) / 255.0


@dataclass(frozen=True)
class PaperDataset:
    """One of the paper's data sets as read from disk.

    :param str title: its name in messages (``"CIFAR-10"``).
    :param str layout: the expected layout, with ``{root}`` for the root folder.
    :param str source: where to get it.
    :param str folder: the folder its files lie in under the root (``""``: the root itself).
    :param tuple[str, ...] splits: the splits ``paper_images`` accepts.
    :param str test_split: the split held out for evaluation.
    :param Callable open: ``open(root, split)``, the split as an :class:`_Images` dataset; raises
        ``FileNotFoundError`` or ``ValueError`` with the layout.
    """

    title: str
    layout: str
    source: str
    folder: str
    splits: tuple[str, ...]
    test_split: str
    open: Callable[[Path, str], _Images]

    def expected(self, root: Path) -> str:
        """``expected LAYOUT (SOURCE)`` for ``root``, the tail of every error message about this data set.

        :param pathlib.Path root: the root folder given.
        """
        hint = f"; {root} looks like the {self.folder}/ folder itself: pass its parent" if self._is_folder(root) else ""
        return f"expected {self.layout.format(root=root)} ({self.source}){hint}"

    def _is_folder(self, root: Path) -> bool:
        return bool(self.folder) and root.name == self.folder


def _require(dataset: PaperDataset, root: Path, files: tuple[str, ...], folders: tuple[str, ...] = ()) -> None:
    missing = [name for name in files if not (root / name).is_file()]
    missing += [name + "/" for name in folders if not (root / name).is_dir()]
    if not missing:
        return
    if len(missing) == len(files) + len(folders):
        problem = f"no {dataset.title} found"
    else:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        problem = f"incomplete {dataset.title}: {shown} missing"
    raise FileNotFoundError(f"{root}: {problem}; {dataset.expected(root)}")


_PARSE_ERRORS = (pickle.UnpicklingError, EOFError, KeyError, IndexError, TypeError, AttributeError, ValueError, OSError)


def _parse(dataset: PaperDataset, root: Path, build: Callable[[], _Images]) -> _Images:
    try:
        images = build()
    except _PARSE_ERRORS as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{root}: the {dataset.title} files do not parse ({type(error).__name__}: {reason}); "
            f"{dataset.expected(root)}"
        ) from None
    return images


def _open_cifar10(root: Path, split: str) -> _Images:
    spec = PAPER_DATASETS["cifar10"]
    names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    _require(spec, root, tuple(f"{CIFAR10.base_folder}/{name}" for name in names))

    def build() -> _Images:
        data = _CIFAR10Files(root, train=split == "train", download=False).data  # (N, 32, 32, 3) uint8
        return _Images(
            len(data), lambda i: torch.from_numpy(data[i]).permute(2, 0, 1), lambda i: f"CIFAR-10 {split} image {i}"
        )

    return _parse(spec, root, build)


def _open_stl10(root: Path, split: str) -> _Images:
    spec = PAPER_DATASETS["stl10"]
    _require(spec, root, tuple(f"{STL10.base_folder}/{name}" for name in _STL10_FILES[split]))

    def build() -> _Images:
        data = _STL10Files(root, split=split, download=False).data  # (N, 3, 96, 96) uint8, rows first
        return _Images(len(data), lambda i: torch.from_numpy(data[i]), lambda i: f"STL-10 {split} image {i}")

    return _parse(spec, root, build)


def _open_celeba(root: Path, split: str) -> _Images:
    spec = PAPER_DATASETS["celeba"]
    base = Path(CelebA.base_folder)
    _require(spec, root, (str(base / "list_eval_partition.txt"),), (str(base / "img_align_celeba"),))
    celeba = _parse(spec, root, lambda: _CelebAImages(root, split))
    folder = root / base / "img_align_celeba"
    return _Images(len(celeba.filename), lambda i: celeba[i][0], lambda i: str(folder / celeba.filename[i]))


_URBAN100_FOLDERS = ("Urban100_HR/*.png", "HR/*.png", "*.png")


def _urban100_files(root: Path) -> tuple[Path, str] | None:
    """The folder and the glob of Urban100's high-resolution images under ``root``, or ``None``."""
    for base in (root, root / "Urban100"):
        factors = sorted(
            int(p.name.removeprefix("image_SRF_")) for p in base.glob("image_SRF_*") if p.name[10:].isdigit()
        )
        for pattern in [f"image_SRF_{f}/*_HR.png" for f in factors] + list(_URBAN100_FOLDERS):
            if any(base.glob(pattern)):
                return base, pattern
    return None


def _open_urban100(root: Path, split: str) -> _Images:
    from deepinv.datasets import ImageFolder

    spec = PAPER_DATASETS["urban100"]
    found = _urban100_files(root) if root.is_dir() else None
    if found is None:
        raise FileNotFoundError(f"{root}: no Urban100 found; {spec.expected(root)}")
    folder = ImageFolder(found[0], x_path=found[1], transform=pil_to_tensor, use_dict_output=True)  # natural order
    count = len(folder.x_paths)
    if count < 2:
        raise ValueError(
            f"{root}: 1 Urban100 image in {found[0] / found[1]}; at least 2 are needed, the last tenth (at least "
            f"one) being held out for testing; {spec.expected(root)}"
        )
    held = max(1, count // 10)
    start, length = (0, count - held) if split == "train" else (count - held, held)
    return _Images(length, lambda i: folder[start + i]["x"], lambda i: str(folder.x_paths[start + i]))


PAPER_DATASETS: dict[str, PaperDataset] = {
    "cifar10": PaperDataset(
        "CIFAR-10",
        "{root}/cifar-10-batches-py/data_batch_1..5, test_batch and batches.meta",
        "the python version from https://www.cs.toronto.edu/~kriz/cifar.html",
        "cifar-10-batches-py", ("train", "test"), "test", _open_cifar10,
    ),
    "stl10": PaperDataset(
        "STL-10",
        "{root}/stl10_binary/train_X.bin, train_y.bin, test_X.bin and test_y.bin, and unlabeled_X.bin for the "
        "unlabeled splits",
        "the binary version from https://cs.stanford.edu/~acoates/stl10/",
        "stl10_binary", ("train", "test", "unlabeled", "train+unlabeled"), "test", _open_stl10,
    ),
    "celeba": PaperDataset(
        "CelebA",
        "{root}/celeba/img_align_celeba/*.jpg and {root}/celeba/list_eval_partition.txt",
        "the aligned and cropped images and the evaluation partition from "
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        "celeba", ("train", "valid", "test"), "test", _open_celeba,
    ),
    "urban100": PaperDataset(
        "Urban100",
        "{root}/Urban100_HR/*.png, {root}/image_SRF_*/*_HR.png, {root}/HR/*.png or {root}/*.png, "
        "or the same under {root}/Urban100/",
        "the high-resolution images of Huang et al., CVPR 2015, e.g. "
        "https://github.com/jbhuang0604/SelfExSR or DeepInverse's Urban100HR archive",
        "", ("train", "test"), "test", _open_urban100,
    ),
}  # fmt: skip
"""The paper's data sets by name, as ``mge-train --dataset`` takes them."""


def paper_dataset(name: str, root: str | Path, split: str = "train") -> torch.utils.data.Dataset:
    """One split of a paper data set as a dataset of ``(3, H, W)`` float images in [0, 1], read when indexed.

    CIFAR-10 and STL-10 hold their split's pixels in memory (as 8-bit arrays); CelebA and Urban100
    decode image ``i`` from its file when it is indexed.

    :param str name: a key of :data:`PAPER_DATASETS`: ``"cifar10"``, ``"stl10"``, ``"celeba"`` or ``"urban100"``.
    :param str, pathlib.Path root: the folder holding the data set in its standard layout (see the module).
    :param str split: one of the data set's ``splits``; ``"train"`` everywhere, ``"test"`` for its test split
        (Urban100: its last tenth).
    :raises ValueError: for an unknown name or split, or files that do not parse, naming the expected layout.
    :raises FileNotFoundError: when the root lacks the data set's files, naming the expected layout.
    :return: a ``torch.utils.data.Dataset`` of ``(C, H, W)`` tensors; indexing a file that cannot be
        decoded raises ``ValueError`` naming the file.
    """
    if name not in PAPER_DATASETS:
        raise ValueError(f"unknown data set {name!r}; use one of {', '.join(PAPER_DATASETS)}")
    spec = PAPER_DATASETS[name]
    if split not in spec.splits:
        raise ValueError(f"{spec.title} has no split {split!r}; use one of {', '.join(spec.splits)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; {spec.expected(root)}")
    images = spec.open(root, split)
    if len(images) == 0:
        raise ValueError(f"{root}: the {spec.title} {split} split holds no images; {spec.expected(root)}")
    return images


def take_images(dataset: torch.utils.data.Dataset, channels: int = 1, limit: int | None = None) -> list[torch.Tensor]:
    """The first ``limit`` images of ``dataset`` (all by default) at ``channels``, as a list.

    :param torch.utils.data.Dataset dataset: a dataset of ``(C, H, W)`` tensors (e.g. :func:`paper_dataset`).
    :param int channels: 1 (grayscale: the mean of R, G and B) or 3 (see :func:`mge_deepinv.data.to_channels`).
    :param int, None limit: the most images to take; ``None``: all.
    :raises ValueError: for a ``limit`` below 1.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None for all), got {limit}")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return [to_channels(dataset[i], channels) for i in range(count)]


def paper_images(
    name: str, root: str | Path, channels: int = 1, split: str = "train", limit: int | None = None
) -> list[torch.Tensor]:
    """The images of one split of a paper data set, as ``(channels, H, W)`` float tensors in [0, 1].

    In the data set's own order (CIFAR-10: ``data_batch_1`` to ``5``; STL-10: the file order;
    CelebA: the order of ``list_eval_partition.txt``; Urban100: natural order of the file names).

    :param str name: a key of :data:`PAPER_DATASETS`: ``"cifar10"``, ``"stl10"``, ``"celeba"`` or ``"urban100"``.
    :param str, pathlib.Path root: the folder holding the data set in its standard layout (see the module).
    :param int channels: 1 (grayscale: the mean of R, G and B) or 3.
    :param str split: ``"train"``, or the data set's test split ``"test"`` (see :func:`paper_dataset`).
    :param int, None limit: the first ``limit`` images only (``None``: all). CIFAR-10's 50000 training
        images take 0.6 GB as RGB floats, CelebA's 162770 take 76 GB.
    :raises ValueError: for an unknown name or split, files that do not parse or an image that does not
        decode, naming the expected layout or the file.
    :raises FileNotFoundError: when the root lacks the data set's files, naming the expected layout.
    """
    return take_images(paper_dataset(name, root, split), channels, limit)
