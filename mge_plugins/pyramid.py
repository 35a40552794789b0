"""Training images restricted once, so a coarse stage cuts its crops at its own resolution.

A Full-Multiscale stage at level ``L`` needs its samples at level ``L`` only. Cutting fine crops
and restricting them every step costs fine-resolution work that does not shrink with the stage
(on a CPU about a fifth of a whole 128² Full-Multiscale run). With area restriction, a crop cut
from the image restricted ``L`` times equals the restriction of the fine crop at the matching
offset (a multiple of ``2**L``), so :class:`LevelPyramid` gives the same samples for ``4**L``
(``8**L`` in 3D) less work per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .restriction import restrict

__all__ = ["LevelPyramid"]


class LevelPyramid:
    """Images (or volumes) restricted to every level once, with random crops cut at any level.

    Args:
        images: ``(C, H, W)`` images or ``(C, D, H, W)`` volumes, of any sizes.
        levels: the coarsest level to keep.
        method: the restriction (``"area"``, the default, makes coarse crops exactly the restricted
            fine crops at aligned offsets).

    Each image is first trimmed to a multiple of ``2**levels`` per axis (its top-left part), so
    every level is an exact restriction of the kept part.

    Example:
        >>> pyramid = LevelPyramid([torch.rand(1, 64, 80)], levels=2)
        >>> pyramid.crops(3, size=32, level=2).shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(self, images: Sequence[torch.Tensor], levels: int, method: str = "area") -> None:
        if not images:
            raise ValueError("LevelPyramid needs at least one image")
        if levels < 0:
            raise ValueError(f"levels must be >= 0, got {levels}")
        step = 2**levels
        self.levels = levels
        self.spatial_dims = images[0].dim() - 1
        self.pyramid: list[list[torch.Tensor]] = [[] for _ in range(levels + 1)]
        for image in images:
            if image.dim() != self.spatial_dims + 1 or image.dim() not in (3, 4):
                raise ValueError(
                    f"LevelPyramid takes (C, H, W) images or (C, D, H, W) volumes of one kind, got shape "
                    f"{tuple(image.shape)}"
                )
            kept = image[(slice(None), *(slice(0, n - n % step) for n in image.shape[1:]))]
            if min(kept.shape[1:]) < step:
                raise ValueError(f"an image of shape {tuple(image.shape)} is smaller than 2**levels = {step} px")
            for level in range(levels + 1):
                self.pyramid[level].append(restrict(kept[None], level, method)[0].contiguous())

    def crops(self, n: int, size: int, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random crops of fine side ``size``, cut at ``level``: shape ``(n, C, size / 2**level, ...)``.

        Each is the restriction of a fine crop whose offset is a multiple of ``2**level``.

        Args:
            n: number of crops.
            size: crop side at the finest level, divisible by ``2**level``.
            level: the level to cut at.
            generator: random stream for the images and offsets.

        Raises:
            ValueError: for a level beyond the pyramid, a size that ``2**level`` does not divide, or
                a crop larger than an image.
        """
        if not 0 <= level <= self.levels:
            raise ValueError(f"level {level} is outside the pyramid's levels 0..{self.levels}")
        if size % 2**level:
            raise ValueError(f"crop size {size} is not divisible by 2**level = {2**level}")
        side = size // 2**level
        images = self.pyramid[level]
        small = [tuple(im.shape[1:]) for im in images if min(im.shape[1:]) < side]
        if small:
            raise ValueError(f"crops of {size} px do not fit images of shape {small[0]} at level {level}")
        picks = torch.randint(len(images), (n,), generator=generator).tolist()
        out = []
        for i in picks:
            image = images[i]
            starts = [int(torch.randint(m - side + 1, (1,), generator=generator)) for m in image.shape[1:]]
            out.append(image[(slice(None), *(slice(s, s + side) for s in starts))])
        return torch.stack(out)
