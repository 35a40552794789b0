from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mge_plugins import Restrict, check_level_sizes, restrict
from mge_plugins.restriction import RESTRICTION_METHODS, level_shape

SHAPES = {2: (2, 3, 32, 32), 3: (2, 2, 16, 16, 16)}


@pytest.mark.parametrize("method", RESTRICTION_METHODS)
@pytest.mark.parametrize("dims", [2, 3])
def test_constant_stays_constant(method: str, dims: int) -> None:
    x = torch.full(SHAPES[dims], 0.37, dtype=torch.float64)
    y = restrict(x, levels=2, method=method)
    assert y.shape == (*SHAPES[dims][:2], *(s // 4 for s in SHAPES[dims][2:]))
    torch.testing.assert_close(y, torch.full_like(y, 0.37), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dims, factor", [(2, 2.0), (3, 2.0**1.5)])
def test_area_lowers_white_noise_std_by_two_to_the_half_d(dims: int, factor: float) -> None:
    shape = (4, 1, 128, 128) if dims == 2 else (2, 1, 64, 64, 64)
    noise = torch.randn(shape, dtype=torch.float64)
    ratio = noise.std() / restrict(noise, 1, "area").std()
    # ~130k (2D) / ~65k (3D) coarse samples: relative std error of the std < 0.5 %.
    assert ratio == pytest.approx(factor, rel=0.02)
    two_levels = noise.std() / restrict(noise, 2, "area").std()
    assert two_levels == pytest.approx(factor**2, rel=0.03)


@pytest.mark.parametrize("dims", [2, 3])
def test_nearest_keeps_white_noise_std(dims: int) -> None:
    noise = torch.randn((4, 1, 64, 64) if dims == 2 else (2, 1, 32, 32, 32), dtype=torch.float64)
    assert restrict(noise, 1, "nearest").std() == pytest.approx(noise.std().item(), rel=0.03)


def test_area_is_the_mean_of_each_block() -> None:
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    expected = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]])
    assert torch.equal(restrict(x, 1, "area"), expected)
    assert torch.equal(restrict(x, 2, "area"), x.mean().reshape(1, 1, 1, 1))


def test_nearest_matches_interpolate_default() -> None:
    x = torch.randn(2, 3, 32, 48)
    assert torch.equal(restrict(x, 1, "nearest"), F.interpolate(x, scale_factor=0.5))
    x3 = torch.randn(1, 2, 8, 16, 32)
    assert torch.equal(restrict(x3, 2, "nearest"), F.interpolate(x3, scale_factor=0.25))


def test_antialias_matches_bilinear_antialias_in_2d() -> None:
    x = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    expected = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    torch.testing.assert_close(restrict(x, 1, "antialias"), expected, rtol=0, atol=1e-12)


def test_antialias_3d_is_separable_extension_of_2d() -> None:
    # A volume constant along D restricts like the 2D image on every slice.
    img = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    vol = img[:, :, None].expand(1, 1, 8, 16, 16).contiguous()
    out = restrict(vol, 1, "antialias")
    assert out.shape == (1, 1, 4, 8, 8)
    for d in range(4):
        torch.testing.assert_close(out[:, :, d], restrict(img, 1, "antialias"), rtol=0, atol=1e-12)


def test_area_is_mean_preserving_on_any_image() -> None:
    x = torch.rand(3, 2, 64, 32, dtype=torch.float64)
    torch.testing.assert_close(restrict(x, 3).mean(dim=(2, 3)), x.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", RESTRICTION_METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_keeps_dtype(method: str, dtype: torch.dtype) -> None:
    assert restrict(torch.rand(1, 1, 16, 16, dtype=dtype), 2, method).dtype == dtype


@pytest.mark.parametrize("method", RESTRICTION_METHODS)
@pytest.mark.parametrize("dims", [2, 3])
def test_gradients_flow(method: str, dims: int) -> None:
    shape = (1, 1, 8, 8) if dims == 2 else (1, 1, 4, 4, 4)
    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: restrict(t, 1, method), (x,))


def test_zero_levels_is_identity_and_module_twin_agrees() -> None:
    x = torch.randn(2, 1, 8, 8)
    assert restrict(x, 0) is x
    module = Restrict(levels=2, method="antialias")
    assert torch.equal(module(x), restrict(x, 2, "antialias"))
    assert "levels=2" in repr(module)


@pytest.mark.cuda
@pytest.mark.parametrize("method", RESTRICTION_METHODS)
def test_cuda_matches_cpu(method: str) -> None:
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(restrict(x.cuda(), 2, method).cpu(), restrict(x, 2, method))


def test_non_divisible_size_names_size_level_and_valid_sizes() -> None:
    with pytest.raises(ValueError) as info:
        restrict(torch.randn(1, 1, 100, 96), levels=3)
    msg = str(info.value)
    assert "100 (axis H)" in msg and "level 3" in msg and "96 or 104" in msg and "levels <= 2" in msg


def test_too_many_levels_for_image() -> None:
    with pytest.raises(ValueError, match=r"level 5 cannot be formed.*use levels <= 4"):
        restrict(torch.randn(1, 1, 16, 16), levels=5)


def test_network_divisibility_names_the_level_that_breaks() -> None:
    # A U-Net with 3 downsamplings at level 2 needs fine sides divisible by 32.
    check_level_sizes((64, 96), 2, multiple=8)
    with pytest.raises(ValueError) as info:
        check_level_sizes((64, 80), 2, multiple=8, what="U-Net")
    msg = str(info.value)
    assert "80 (axis W)" in msg and "level 2" in msg and "U-Net" in msg
    assert "8 * 2**2 = 32" in msg and "64 or 96" in msg and "levels <= 1" in msg


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: restrict(torch.randn(1, 1, 8, 8), 1, "bicubic"), "unknown restriction method 'bicubic'"),
        (lambda: restrict(torch.randn(8, 8), 1), r"add the missing batch/channel axes"),
        (lambda: restrict(torch.ones(1, 1, 8, 8, dtype=torch.long), 1), r"x.float\(\)"),
        (lambda: restrict(torch.randn(1, 1, 8, 8), -1), "levels must be an integer >= 0"),
        (lambda: Restrict(1, "linear"), "unknown restriction method"),
    ],
)
def test_bad_inputs(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_level_shape() -> None:
    assert level_shape((64, 32, 16), 3) == (8, 4, 2)
    assert math.prod(level_shape((64, 64), 2)) == 64 * 64 // 16
