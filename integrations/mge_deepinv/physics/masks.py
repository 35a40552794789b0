"""Random inpainting masks of missing square blocks, a new one per sample."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from deepinv.physics.generator import BernoulliSplittingMaskGenerator

__all__ = ["BlockMaskGenerator"]


class BlockMaskGenerator(BernoulliSplittingMaskGenerator):
    r"""Inpainting masks that miss whole ``block x block`` squares, drawn anew for every sample.

    Each block is kept with probability ``split_ratio`` (deepinv's Bernoulli mask drawn on the grid
    of blocks, then enlarged), the same block in every channel. A mask of ``2^k``-pixel blocks stays
    exact (0/1) under the area restriction up to level ``k``: ``block=8`` gives levels up to 3.
    Pass it to the trainer as ``physics_generator=`` with ``online_measurements=True``, so every
    training batch is measured with fresh masks (``MultiscaleTrainer`` slices them per term and
    restricts each sample's mask for its coarse levels).

    :param tuple[int] img_size: ``(C, H, W)`` of the images; ``H`` and ``W`` multiples of ``block``.
    :param float split_ratio: fraction of the blocks kept (observed).
    :param int block: side of the blocks, in pixels.
    :param torch.Generator rng: the generator the masks are drawn from (default: a fresh one).
    :param str, torch.device device: where the masks are made.
    :param kwargs: the other options of :class:`deepinv.physics.generator.BernoulliSplittingMaskGenerator`.

    |sep|

    :Examples:

        >>> gen = BlockMaskGenerator((1, 32, 32), split_ratio=0.7, block=8, rng=torch.Generator().manual_seed(0))
        >>> gen.step(batch_size=2)["mask"].shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        img_size: Sequence[int],
        split_ratio: float,
        block: int = 8,
        *,
        rng: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> None:
        img_size = tuple(int(s) for s in img_size)
        if len(img_size) != 3 or block < 1 or img_size[1] % block or img_size[2] % block:
            raise ValueError(
                f"BlockMaskGenerator needs img_size=(C, H, W) with H and W multiples of block={block}, got {img_size}; "
                "crop the images to a multiple of the block size or use a smaller block"
            )
        grid = (img_size[0], img_size[1] // block, img_size[2] // block)
        super().__init__(grid, split_ratio, pixelwise=True, rng=rng, device=device, **kwargs)
        self.block = block
        self.full_size = img_size

    def step(self, batch_size: int = 1, seed: int | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw ``batch_size`` masks.

        :param int batch_size: masks to draw, one per sample.
        :param int seed: reseed the generator first (``None`` continues its stream).
        :return: ``{"mask": tensor of shape (batch_size, C, H, W)}`` with values 0 and 1.
        """
        blocks = super().step(batch_size=batch_size, seed=seed, **kwargs)["mask"]
        return {"mask": blocks.repeat_interleave(self.block, -2).repeat_interleave(self.block, -1)}
