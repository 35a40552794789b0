"""Arguments and data loaders shared by the DeepInverse examples (bundled images, no download)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from example_args import check_device, fail, make_parser, positive_int
from mge_deepinv.data import TEST_IMAGES, ImageCrops, bundled_images, folder_images

from mge_plugins import build_strategy


def parse_args(description: str) -> argparse.Namespace:
    """The examples' options, checked: a bad number or a missing device ends the script with one line."""
    parser = make_parser(description)
    parser.add_argument(
        "--data", type=Path, metavar="DIR", help="folder of training images (default: scikit-image's photographs)"
    )
    parser.add_argument("--strategy", default="full-multiscale", help="full-multiscale, mge or single")
    parser.add_argument("--size", type=positive_int, default=64, metavar="PX", help="crop side in pixels")
    parser.add_argument("--epochs", type=positive_int, default=4, metavar="N", help="epochs, one evaluation each")
    parser.add_argument(
        "--steps-per-epoch", type=positive_int, default=100, metavar="N", help="optimizer steps per epoch"
    )
    parser.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="loaded batch")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, default=Path("results/examples"), metavar="DIR", help="checkpoint folder")
    args = parser.parse_args()
    check_device(parser, args.device)
    try:  # the trainer's defaults: levels=2, terms cut from the loaded batch
        build_strategy(
            args.strategy, loaded_batch_size=args.batch_size, levels=2, iterations=args.epochs * args.steps_per_epoch
        )
    except ValueError as error:
        parser.error(
            f"--strategy {args.strategy} with --epochs {args.epochs} --steps-per-epoch {args.steps_per_epoch}: {error}"
        )
    return args  # fmt: skip


def loaders(args: argparse.Namespace) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """Random crops of the training images, and fixed crops of two held-out images for evaluation.

    A missing or empty ``--data`` folder, an unreadable image or images smaller than ``--size`` end the
    script with one line naming the fix (exit status 2).
    """
    try:
        images = folder_images(args.data) if args.data else bundled_images()
    except (FileNotFoundError, ValueError) as error:
        fail(str(error) if str(error).startswith("--data") else f"--data: {error}")
    try:
        train = ImageCrops(images, args.size, args.steps_per_epoch * args.batch_size)
        held_out = ImageCrops(bundled_images(TEST_IMAGES), args.size, 2 * args.batch_size, seed=1)
    except ValueError as error:
        fail(f"--size {args.size}: {error}")
    if args.data:
        print(
            f"training on {len(images)} images from {args.data} (grayscale); evaluating on the bundled camera and moon"
        )
    return (
        torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True),
        torch.utils.data.DataLoader(held_out, batch_size=args.batch_size),
    )
