"""Arguments and data loaders shared by the DeepInverse examples (bundled images, no download)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from mge_deepinv.data import TEST_IMAGES, ImageCrops, bundled_images, folder_images


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, help="folder of training images (default: scikit-image photographs)")
    parser.add_argument("--strategy", default="full-multiscale", help="full-multiscale, mge or single")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/examples"))
    return parser.parse_args()


def loaders(args: argparse.Namespace) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """Random crops of the training images, and fixed crops of two held-out images for evaluation."""
    images = folder_images(args.data) if args.data else bundled_images()
    train = ImageCrops(images, args.size, args.steps_per_epoch * args.batch_size)
    held_out = ImageCrops(bundled_images(TEST_IMAGES), args.size, 2 * args.batch_size, seed=1)
    return (
        torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True),
        torch.utils.data.DataLoader(held_out, batch_size=args.batch_size),
    )
