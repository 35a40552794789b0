"""LevelPyramid: coarse crops are the restricted fine crops at aligned offsets."""

from __future__ import annotations

import pytest
import torch

from mge_plugins import restrict
from mge_plugins.pyramid import LevelPyramid


@pytest.mark.parametrize("shape", [(1, 70, 90), (2, 20, 36, 44)])
def test_every_level_is_the_restriction_of_the_trimmed_image(shape) -> None:
    image = torch.rand(shape, dtype=torch.float64)
    pyramid = LevelPyramid([image], levels=2)
    kept = image[(slice(None), *(slice(0, n - n % 4) for n in shape[1:]))]  # trimmed to multiples of 4
    for level in (0, 1, 2):
        assert torch.allclose(restrict(kept[None], level)[0], pyramid.pyramid[level][0], rtol=0, atol=1e-15)
    crops = pyramid.crops(4, size=16, level=2, generator=torch.Generator().manual_seed(3))
    assert crops.shape == (4, shape[0], *([4] * (len(shape) - 1)))


def test_crops_equal_restricted_fine_crops_exactly() -> None:
    image = torch.rand(1, 64, 64, dtype=torch.float64)
    pyramid = LevelPyramid([image], levels=2)
    g = torch.Generator().manual_seed(0)
    coarse = pyramid.crops(8, size=32, level=2, generator=g)
    g = torch.Generator().manual_seed(0)
    torch.randint(1, (8,), generator=g)  # the image picks
    for crop in coarse:
        top, left = (int(torch.randint(16 - 8 + 1, (1,), generator=g)) for _ in range(2))
        fine = image[:, 4 * top : 4 * top + 32, 4 * left : 4 * left + 32]
        assert torch.allclose(restrict(fine[None], 2)[0], crop, rtol=0, atol=1e-15)


def test_pyramid_errors_name_the_problem() -> None:
    pyramid = LevelPyramid([torch.rand(1, 32, 32)], levels=1)
    with pytest.raises(ValueError, match=r"outside the pyramid's levels 0\.\.1"):
        pyramid.crops(1, 16, level=2)
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*level = 2"):
        pyramid.crops(1, 15, level=1)
    with pytest.raises(ValueError, match="do not fit images of shape"):
        pyramid.crops(1, 64, level=0)
    with pytest.raises(ValueError, match="smaller than 2\\*\\*levels = 8"):
        LevelPyramid([torch.rand(1, 4, 40)], levels=3)
