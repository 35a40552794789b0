"""MRI and tomography at coarse levels: what the recipes' choices buy, adjoints, noise, options and refusals.

Errors are ``||R^k(A x) - A_k(R^k x)|| / ||R^k(A x)||`` on the photograph crop of
``operators.py``; the recipes' own errors are in ``test_physics.py``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

dinv = pytest.importorskip("deepinv")
pytest.importorskip("skimage.data")

from mge_deepinv import NoCoarseRecipeError, coarsen_physics, restrict_measurement  # noqa: E402
from mge_deepinv.physics import restrict_kspace, restrict_sinogram  # noqa: E402

from mge_plugins import CoupledRandomness, restrict  # noqa: E402

from .operators import astronaut_crop, coil_maps, commutation_error, make, without_recipe_detail  # noqa: E402


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return astronaut_crop()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(100 * (a - b).norm() / a.norm())


def inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


def test_coil_maps_restricted_through_k_space_beat_area_pooled_maps(photo) -> None:
    # k-space restriction of the maps: 3.8 % / 6.0 %; area-pooled maps: 4.3 % / 6.8 %.
    physics, image = make("multicoil-full"), photo[:, :2]
    for level in (1, 2):
        recipe, pooled = (
            commutation_error(physics, image, level),
            without_recipe_detail("multicoil-pooled-maps", photo, level),
        )
        assert recipe + 0.3 < pooled, f"level {level}: k-space maps {recipe:.2f} %, pooled maps {pooled:.2f} %"


def test_multicoil_k_space_cropped_without_phase_and_scale_is_far_off(photo) -> None:
    physics, image = make("multicoil-random"), photo[:, :2]
    y = physics.A(image)
    coarse = coarsen_physics(physics, 1)
    expected = coarse.A(restrict(image, 1))
    cropped = y[..., 32:96, 32:96]  # the block alone: twice the scale, half a pixel off
    assert relative(expected, cropped) > 40
    assert relative(expected, restrict_measurement(physics, y, 1)) < 6.5
    assert restrict_measurement(physics, y, 0) is y


def test_restrict_kspace_of_a_constant_image_is_the_constant_coarse_image() -> None:
    mri = dinv.physics.MRI(img_size=(16, 16))
    image = torch.ones(1, 2, 16, 16)
    coarse = restrict_kspace(torch.complex(*mri.A(image).unbind(1)), 2)
    assert coarse.shape == (1, 4, 4)
    back = dinv.physics.MRI(img_size=(4, 4)).A_adjoint(torch.stack((coarse.real, coarse.imag), 1))
    torch.testing.assert_close(back, torch.ones(1, 2, 4, 4), atol=1e-5, rtol=0)  # scale kept: the FFT is orthonormal


def test_coarse_multicoil_operator_shapes_and_adjoint() -> None:
    physics = dinv.physics.MultiCoilMRI(
        mask=torch.ones(64, 64), coil_maps=coil_maps(3, 64), img_size=(64, 64)
    )  # fmt: skip
    coarse = coarsen_physics(physics, 1)
    x, y = torch.randn(2, 2, 32, 32), torch.randn(2, 2, 3, 32, 32)
    assert coarse.A(x).shape == (2, 2, 3, 32, 32) and coarse.coil_maps.shape == (1, 3, 32, 32)
    lhs, rhs = inner(coarse.A(x), y), inner(x, coarse.A_adjoint(y))
    assert abs(lhs - rhs) < 1e-5 * abs(lhs)
    assert physics.coil_maps.shape == (1, 3, 64, 64)  # the fine operator is untouched


def test_multicoil_noise_is_drawn_per_coil_at_the_fine_grid_and_coupled() -> None:
    physics = dinv.physics.MultiCoilMRI(
        mask=torch.ones(32, 32), coil_maps=coil_maps(3, 32), img_size=(32, 32),
        noise_model=dinv.physics.GaussianNoise(0.1),
    )  # fmt: skip
    level0, level1 = coarsen_physics(physics, 0, noise="restrict"), coarsen_physics(physics, 1, noise="restrict")
    zeros = torch.zeros(2, 2, 3, 32, 32)
    coupling = CoupledRandomness()
    coupling.capture()
    fine = level0.noise(zeros)
    coupling.replay()
    coarse = level1.noise(zeros[..., :16, :16])
    per_coil = restrict(fine.reshape(2, 6, 32, 32), 1).reshape(2, 2, 3, 16, 16)
    torch.testing.assert_close(coarse, per_coil, rtol=1e-6, atol=1e-6)
    assert float(level1.noise_model.sigma) == pytest.approx(0.05)


@pytest.mark.parametrize("cls", [dinv.physics.MRI, dinv.physics.MultiCoilMRI])
def test_3d_and_indivisible_k_space_name_the_fix(cls) -> None:
    with pytest.raises(NoCoarseRecipeError, match=r"3D .* strategy='single'"):
        coarsen_physics(cls(img_size=(2, 8, 16, 16), three_d=True), 1)
    with pytest.raises(ValueError, match=r"k-space size \(12, 12\), which 2\*\*3 does not divide"):
        coarsen_physics(cls(img_size=(12, 12)), 3)


def tomography(width: int = 64, **options) -> dinv.physics.Tomography:
    options.setdefault("normalize", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dinv.physics.Tomography(angles=30, img_width=width, **options)


def test_sinogram_pooled_without_the_rotation_axis_shift_is_worse(photo) -> None:
    # DeepInverse's 64 px operator rotates about a point half a coarse pixel off the image centre:
    # plain pair pooling (times 1/2) is 5.0 % off, the shifted bins 0.44 %.
    error = without_recipe_detail("tomography-plain-pooling", photo, 1)
    assert error > 4 and error > 5 * commutation_error(make("tomography"), photo, 1), f"{error:.2f} %"
    assert coarsen_physics(make("tomography"), 1).A(restrict(photo, 1)).shape == (1, 3, 91, 60)


def test_coarse_tomography_keeps_angles_and_options() -> None:
    physics = tomography(circle=True, parallel_computation=False, adjoint_via_backprop=False, normalize=True)
    coarse = coarsen_physics(physics, 1)
    assert coarse.img_width == 32 and torch.equal(coarse.angles, physics.angles)
    assert coarse.radon.circle and not coarse.radon.parallel_computation and not coarse.adjoint_via_backprop
    own = tomography(32, circle=True, parallel_computation=False, adjoint_via_backprop=False, normalize=True)
    assert coarse.normalize and float(coarse.operator_norm) == pytest.approx(float(own.operator_norm), rel=1e-6)
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(coarse.A(x), own.A(x))  # deepinv's own operator for the coarse geometry


def test_coarse_tomography_operators_are_new_objects_sharing_only_their_grids() -> None:
    physics = tomography(noise_model=dinv.physics.GaussianNoise(0.1))
    a, b = coarsen_physics(physics, 1), coarsen_physics(physics, 1, noise="restrict")
    assert a is not b and a.radon is b.radon and a.radon is not physics.radon  # the grids are built once
    assert float(a.noise_model.sigma) == pytest.approx(0.1) and float(b.noise_model.sigma) < 0.1
    level0 = coarsen_physics(physics, 0)
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(level0.A(x), physics.A(x))
    assert level0.noise_model is not physics.noise_model


@pytest.mark.parametrize("normalize", [False, True])
def test_coarse_tomography_adjoint_is_its_adjoint(normalize: bool) -> None:
    coarse = coarsen_physics(tomography(normalize=normalize), 1)
    x = torch.rand(2, 1, 32, 32)
    y = torch.rand_like(coarse.A(x))
    lhs, rhs = inner(coarse.A(x), y), inner(x, coarse.A_adjoint(y))
    assert abs(lhs - rhs) < 1e-5 * abs(lhs)


def test_restricted_sinogram_scale_follows_normalisation(photo) -> None:
    # Unnormalised: rays cross half as many (coarse) pixels, so 1/2 per level; normalised: also the norms' ratio.
    for normalize in (False, True):
        physics = tomography(normalize=normalize)
        image = restrict(photo[:, :1], 1)
        y = physics.A(image)
        for level in (1, 2):
            coarse = coarsen_physics(physics, level)
            ratio = float(restrict_sinogram(physics, y, level).sum() / coarse.A(restrict(image, level)).sum())
            assert ratio == pytest.approx(1.0, abs=0.01), f"normalize={normalize} level {level}: {ratio:.4f}"


def test_tomography_noise_law_per_mode() -> None:
    physics = tomography(noise_model=dinv.physics.GaussianNoise(0.2))
    assert float(coarsen_physics(physics, 1, noise="keep").noise_model.sigma) == pytest.approx(0.2)
    restricted = coarsen_physics(physics, 1, noise="restrict").noise_model
    assert float(restricted.sigma) == pytest.approx(0.2 * 2**-1.5)  # scale 1/2, two bins averaged
    torch.manual_seed(0)
    white = 0.2 * torch.randn(64, 1, 91, 30)
    interior = restrict_sinogram(physics, white, 1)[..., 4:-4, :]
    assert float(interior.std()) == pytest.approx(float(restricted.sigma), rel=0.1)


def test_tomography_refusals_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"img_width 36, which 2\*\*3 does not divide"):
        coarsen_physics(tomography(36), 3)
    fan = tomography(32, fan_beam=True)
    with pytest.raises(NoCoarseRecipeError, match="fan-beam Tomography yet; train it with strategy='single'"):
        coarsen_physics(fan, 1)
    with pytest.raises(NoCoarseRecipeError, match="fan-beam"):
        restrict_measurement(fan, fan.A(torch.rand(1, 1, 32, 32)), 1)
