"""The paper's data sets read from tiny files written here in each standard on-disk layout."""

from __future__ import annotations

import csv
import io
import pickle
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("deepinv")

from mge_deepinv import cli
from mge_deepinv.cli import build_parser, check_args, main
from mge_deepinv.datasets import PAPER_DATASETS, paper_dataset, paper_images, take_images
from PIL import Image

CIFAR_LAYOUT = (
    "expected {root}/cifar-10-batches-py/data_batch_1..5, test_batch and batches.meta "
    "(the python version from https://www.cs.toronto.edu/~kriz/cifar.html)"
)


def _pixels(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 2, test: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's python version: pickled dicts whose ``data`` rows are 1024 R, 1024 G, 1024 B bytes, row-major.

    :return: the training and the test images as ``(N, 3, 32, 32)`` uint8 arrays, in file order.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    batches = []
    for name in names:
        count = test if name == "test_batch" else per_batch
        images = _pixels(rng, count, 3, 32, 32)
        batch = {
            "batch_label": name, "labels": rng.integers(0, 10, count).tolist(),
            "data": images.reshape(count, 3072), "filenames": [f"{name}_{i}.png" for i in range(count)],
        }  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches.append(images)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return np.concatenate(batches[:5]), batches[5]


def write_stl10(root: Path, train: int = 3, test: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """STL-10's binary version: 3 x 96 x 96 bytes per image, each channel column-major; labels 1..10, one byte each.

    :return: the training and the test images as ``(N, 3, 96, 96)`` uint8 arrays (channel, row, column).
    """
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = []
    for split, count in (("train", train), ("test", test)):
        images = _pixels(rng, count, 3, 96, 96)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(rng.integers(1, 11, count, dtype=np.uint8).tobytes())
        out.append(images)
    return out[0], out[1]


def write_celeba(root: Path, partition: list[int], size: tuple[int, int] = (24, 20)) -> list[tuple[int, int, int]]:
    """CelebA: ``celeba/img_align_celeba/000001.jpg...`` (one flat colour each) and ``list_eval_partition.txt``.

    :return: the colour of each image, in file order.
    """
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    colours, lines = [], []
    for i, part in enumerate(partition):
        colour = (20 * i % 256, 200 - 10 * i, 40 + 30 * i % 200)
        Image.new("RGB", (size[1], size[0]), colour).save(folder / f"{i + 1:06d}.jpg", quality=95)
        colours.append(colour)
        lines.append(f"{i + 1:06d}.jpg {part}")
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return colours


def write_pngs(
    folder: Path, names: list[str], seed: int = 0, size: tuple[int, int] = (20, 24)
) -> dict[str, np.ndarray]:
    """RGB PNGs of random pixels; returns each file's ``(3, H, W)`` pixels by name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = {}
    for name in names:
        image = _pixels(rng, *size, 3)
        Image.fromarray(image).save(folder / name)
        pixels[name] = image.transpose(2, 0, 1)
    return pixels


def _bytes(image: torch.Tensor) -> np.ndarray:
    """A [0, 1] image back to its 8-bit pixels (exact when it was read as byte / 255)."""
    return (image * 255).round().to(torch.uint8).numpy()


def test_cifar10_reads_the_pickled_batches_in_order_with_their_pixel_layout(tmp_path: Path) -> None:
    train, test = write_cifar10(tmp_path)
    images = paper_images("cifar10", tmp_path, channels=3)
    assert len(images) == 10 and all(im.shape == (3, 32, 32) and im.dtype == torch.float32 for im in images)
    assert all(np.array_equal(_bytes(im), raw) for im, raw in zip(images, train))  # batch 1 first, R, G, B planes
    assert torch.equal(images[3], torch.from_numpy(train[3]).float() / 255)
    held = paper_images("cifar10", tmp_path, channels=3, split="test")
    assert [im.shape for im in held] == [(3, 32, 32)] * 3 and np.array_equal(_bytes(held[2]), test[2])
    gray = paper_images("cifar10", tmp_path, channels=1, limit=4)
    assert len(gray) == 4 and gray[1].shape == (1, 32, 32)
    torch.testing.assert_close(gray[1], torch.from_numpy(train[1]).float().div(255).mean(0, keepdim=True))


def test_stl10_undoes_the_column_major_layout(tmp_path: Path) -> None:
    train, test = write_stl10(tmp_path)
    images = paper_images("stl10", tmp_path, channels=3)
    assert [im.shape for im in images] == [(3, 96, 96)] * 3
    assert all(np.array_equal(_bytes(im), raw) for im, raw in zip(images, train))
    held = paper_images("stl10", tmp_path, channels=3, split="test")
    assert len(held) == 2 and np.array_equal(_bytes(held[1]), test[1])
    # negative control, written byte by byte: a bright top row (row 0) is bytes c*9216 + column*96 + 0
    raw = np.zeros(3 * 96 * 96, dtype=np.uint8)
    raw[np.arange(3)[:, None] * 9216 + np.arange(96)[None] * 96] = 255
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(raw.tobytes())
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([1]))
    (top,) = paper_images("stl10", tmp_path, channels=3, split="test")
    assert torch.equal(top[:, 0], torch.ones(3, 96)) and top[:, 1:].sum() == 0


def test_stl10_needs_only_the_files_of_the_requested_split(tmp_path: Path) -> None:
    write_stl10(tmp_path)  # no unlabeled_X.bin
    assert len(paper_dataset("stl10", tmp_path, "train")) == 3
    with pytest.raises(FileNotFoundError, match=r"no STL-10 found; expected .*stl10_binary/train_X\.bin"):
        paper_dataset("stl10", tmp_path, "unlabeled")


def test_celeba_reads_the_partition_in_file_order(tmp_path: Path) -> None:
    colours = write_celeba(tmp_path, [0, 0, 2, 1, 0, 2])
    train = paper_images("celeba", tmp_path, channels=3)
    test = paper_images("celeba", tmp_path, channels=3, split="test")
    valid = paper_images("celeba", tmp_path, channels=3, split="valid")
    assert (len(train), len(test), len(valid)) == (3, 2, 1) and train[0].shape == (3, 24, 20)
    for images, indices in ((train, [0, 1, 4]), (test, [2, 5]), (valid, [3])):
        for image, i in zip(images, indices):  # flat colours survive JPEG to within 2 levels
            expected = torch.tensor(colours[i], dtype=torch.float32)[:, None, None] / 255
            assert (image - expected).abs().max() <= 2 / 255, i


def test_celeba_names_a_listed_image_that_is_missing(tmp_path: Path) -> None:
    write_celeba(tmp_path, [0, 0])
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(ValueError, match=r"cannot decode .*img_align_celeba/000002\.jpg"):
        paper_images("celeba", tmp_path)


@pytest.mark.parametrize(
    "folder", ["Urban100_HR", "Urban100/Urban100_HR", "plain", "HR", "Urban100/image_SRF_{f}", "image_SRF_{f}"]
)
def test_urban100_layouts_hold_out_the_last_tenth_in_natural_order(tmp_path: Path, folder: str) -> None:
    names = [f"img_{i}.png" for i in range(1, 13)]  # natural order: img_2 before img_10
    if "SRF" in folder:  # the super-resolution release: HR and LR per factor; the smallest factor's HR is read
        base = tmp_path / folder.format(f=2)
        pixels = write_pngs(base, [n.replace(".png", "_SRF_2_HR.png") for n in names])
        pixels = {n: pixels[n.replace(".png", "_SRF_2_HR.png")] for n in names}
        write_pngs(base, [n.replace(".png", "_SRF_2_LR.png") for n in names], seed=1, size=(10, 12))
        write_pngs(tmp_path / folder.format(f=4), [n.replace(".png", "_SRF_4_HR.png") for n in names], seed=2)
    else:
        pixels = write_pngs(tmp_path / folder if folder != "plain" else tmp_path, names)
    train = paper_images("urban100", tmp_path, channels=3)
    test = paper_images("urban100", tmp_path, channels=3, split="test")
    assert (len(train), len(test)) == (11, 1)
    assert all(np.array_equal(_bytes(im), pixels[n]) for im, n in zip(train + test, names))


def test_take_images_caps_and_converts() -> None:
    dataset = [torch.rand(3, 4, 5) for _ in range(3)]
    assert len(take_images(dataset, 3, limit=2)) == 2 and len(take_images(dataset, 3, limit=9)) == 3
    assert take_images(dataset, 1)[2].shape == (1, 4, 5)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        take_images(dataset, 1, limit=0)


def test_a_missing_root_or_layout_is_one_line_naming_the_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        paper_images("cifar10", tmp_path)
    assert str(error.value) == f"{tmp_path}: no CIFAR-10 found; " + CIFAR_LAYOUT.format(root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing: no such folder; expected .*missing/cifar-10-batches-py"):
        paper_images("cifar10", tmp_path / "missing")
    for name, spec in PAPER_DATASETS.items():
        with pytest.raises(FileNotFoundError) as error:
            paper_images(name, tmp_path)
        message = str(error.value)
        assert "\n" not in message and f"no {spec.title} found; expected {tmp_path}/" in message, message
    with pytest.raises(ValueError, match="unknown data set 'mnist'; use one of cifar10, stl10, celeba, urban100"):
        paper_images("mnist", tmp_path)
    with pytest.raises(ValueError, match="CIFAR-10 has no split 'valid'; use one of train, test"):
        paper_images("cifar10", tmp_path, split="valid")


def test_an_incomplete_or_malformed_cifar10_names_what_is_wrong(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(FileNotFoundError, match="looks like the cifar-10-batches-py/ folder itself: pass its parent"):
        paper_images("cifar10", folder)
    (folder / "data_batch_3").rename(tmp_path / "aside")
    with pytest.raises(FileNotFoundError, match=r"incomplete CIFAR-10: cifar-10-batches-py/data_batch_3 missing; "):
        paper_images("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"the CIFAR-10 files do not parse \(UnpicklingError: .*\); expected "):
        paper_images("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({"pixels": np.zeros((1, 3072), np.uint8), "labels": [0]}))
    with pytest.raises(ValueError, match=r"do not parse \(KeyError: 'data'\)"):
        paper_images("cifar10", tmp_path)


def test_a_truncated_stl10_file_does_not_parse(tmp_path: Path) -> None:
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "train_X.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match=r"the STL-10 files do not parse \(ValueError: cannot reshape"):
        paper_images("stl10", tmp_path)


def test_urban100_with_a_single_image_cannot_hold_one_out(tmp_path: Path) -> None:
    write_pngs(tmp_path / "Urban100_HR", ["img_001.png"])
    with pytest.raises(ValueError, match=r"1 Urban100 image in .*; at least 2 are needed"):
        paper_images("urban100", tmp_path)


# ---- mge-train --dataset


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "cifar10"], "--dataset cifar10 needs --data-root DIR, the folder holding cifar-10-batches-py/"),
        (["--data-root", "{tmp}"], "--data-root is where --dataset is read from; add --dataset celeba|cifar10|"),
        (["--data", "{tmp}", "--dataset", "stl10", "--data-root", "{tmp}"], "--data and --dataset both name"),
        (["--limit", "5"], "--limit caps the images of --dataset; add --dataset"),
        (["--dataset", "cifar10", "--data-root", "{tmp}/none"], "--data-root {tmp}/none: no such folder; expected"),
        (["--dataset", "urban100", "--data-root", "{tmp}"], "--data-root {tmp}: no Urban100 found; expected"),
        (["--dataset", "cifar10", "--data-root", "{tmp}/c"],
         "--size 64 is larger than the CIFAR-10 images: the smallest is 32x32 px; use --size 32 or less"),
        (["--dataset", "celeba", "--data-root", "{tmp}/bad", "--size", "16"], "cannot decode {tmp}/bad/celeba/"),
    ],
)  # fmt: skip
def test_dataset_mistakes_end_with_one_line_before_anything_is_written(
    argv: list[str], message: str, tmp_path: Path, capsys
) -> None:
    write_cifar10(tmp_path / "c")
    write_celeba(tmp_path / "bad", [0, 2])
    (tmp_path / "bad" / "celeba" / "img_align_celeba" / "000001.jpg").write_bytes(b"\xff\xd8 truncated")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["denoise", *argv, "--out", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mge-train: error: ") and message.replace("{tmp}", str(tmp_path)) in last, last
    assert not (tmp_path / "results").exists()


def test_more_training_images_than_half_the_memory_holds_ask_for_a_limit(tmp_path: Path, monkeypatch) -> None:
    write_cifar10(tmp_path)
    argv = ["denoise", "--size", "32", "--dataset", "cifar10", "--data-root", str(tmp_path)]
    monkeypatch.setattr(cli, "_physical_memory", lambda: 20 * 4096 * 2)  # half of it: 20 grayscale 32x32 images
    assert len(check_args(build_parser().parse_args(argv)).images) == 10
    monkeypatch.setattr(cli, "_physical_memory", lambda: 8 * 4096 * 2)
    with pytest.raises(cli.UsageError, match=r"10 training images take about 0\.0 GB .*; use --limit 8 or fewer"):
        check_args(build_parser().parse_args(argv))
    assert len(check_args(build_parser().parse_args([*argv, "--limit", "8"])).images) == 8


def test_check_args_trains_on_the_train_split_and_evaluates_on_the_test_split(tmp_path: Path) -> None:
    train, test = write_cifar10(tmp_path)
    argv = ["denoise", "--size", "32", "--channels", "3", "--dataset", "cifar10", "--data-root", str(tmp_path)]
    inputs = check_args(build_parser().parse_args([*argv, "--limit", "7"]))
    assert len(inputs.images) == 7 and np.array_equal(_bytes(inputs.images[6]), train[6])
    # 32 x 32 crops of 32 x 32 images are the images: crop j is test image j mod 3
    assert inputs.test_clean.shape == (32, 3, 32, 32)
    assert all(np.array_equal(_bytes(inputs.test_clean[j]), test[j % 3]) for j in range(32))
    assert all(
        any(np.array_equal(_bytes(crop), raw) for raw in train[:7])
        for crop in map(inputs.train_set.__getitem__, range(64))
    )
    assert inputs.loaded == [
        f"training on random 32x32 crops of the first 7 of 10 CIFAR-10 training images in {tmp_path} (32x32 px, "
        "stored as RGB): 400 steps of 16 crops",
        "evaluating on 32 fixed 32x32 crops of all 3 CIFAR-10 test images, never trained on",
    ]
    gray = check_args(build_parser().parse_args(["denoise", "--size", "16", *argv[5:]]))
    assert gray.test_clean.shape == (32, 1, 16, 16) and "converted to grayscale" in gray.loaded[0]
    assert len({tuple(c.flatten().tolist()) for c in gray.test_clean}) > 3  # different positions, not just 3 crops


def test_mge_train_trains_on_cifar10_from_disk(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "data", per_batch=4)
    argv = ["denoise", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--size", "32", "--steps", "4",
            "--evals", "1", "--batch-size", "4", "--levels", "1", "--out", str(tmp_path / "out")]  # fmt: skip
    stdout = io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(io.StringIO()):
        main(argv)
    printed = stdout.getvalue()
    assert "crops of all 20 CIFAR-10 training images" in printed and "crops of all 3 CIFAR-10 test images" in printed
    (run,) = (tmp_path / "out" / "denoise").iterdir()
    rows = {r["strategy"]: r for r in csv.DictReader(open(run / "summary.csv"))}
    assert set(rows) == {"full-multiscale", "single"} and all(float(r["psnr"]) > 0 for r in rows.values())
