"""Level-aware physics: commutation with restriction, coupling, and what is left untouched.

Commutation error is ``||R^k(A x) - A_k(R^k x)|| / ||R^k(A x)||`` on a 128 px crop of
scikit-image's astronaut photograph, noise off, where ``R^k(A x)`` is the fine measurement posed
at level ``k`` by ``restrict_measurement`` (area restriction for image-domain operators). Bounds
sit about 1.5x above what was measured; ``python -m tests.deepinv.operators`` prints the
measured values (the README's table). MRI and tomography details: ``test_medical_physics.py``.
"""

from __future__ import annotations

import pytest
import torch

dinv = pytest.importorskip("deepinv")
pytest.importorskip("skimage.data")

from deepinv.physics.functional.blur import gaussian_blur  # noqa: E402
from deepinv.physics.generator import MotionBlurGenerator  # noqa: E402
from mge_deepinv import (  # noqa: E402
    LevelGaussianNoise,
    NoCoarseRecipeError,
    coarsen_filter,
    coarsen_noise,
    coarsen_physics,
    downsampling_filter,
    restrict_measurement,
)

from mge_plugins import CoupledRandomness, restrict  # noqa: E402

from .operators import (  # noqa: E402
    CASES,
    astronaut_crop,
    commutation_error,
    generator,
    image_for,
    make,
    without_recipe_detail,
)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return astronaut_crop()


@pytest.mark.parametrize("name, bound_level1, bound_level2", CASES)
def test_commutation_error_with_restriction(photo, name: str, bound_level1: float, bound_level2: float) -> None:
    physics, image = make(name), image_for(name, photo)
    for level, bound in ((1, bound_level1), (2, bound_level2)):
        error = commutation_error(physics, image, level)
        assert error < bound, f"{name} level {level}: {error:.2f} %"


def test_k_space_is_cropped_not_averaged(photo) -> None:
    # Area-averaging k-space (what restriction does to an image) is 76 % off the coarse operator.
    physics = make("mri-full")
    image = photo[:, :2]
    coarse = coarsen_physics(physics, 1).A(restrict(image, 1))
    averaged = restrict(physics.A(image), 1)
    assert 100 * (averaged - coarse).norm() / coarse.norm() > 50
    y = physics.A(image)
    assert restrict_measurement(physics, y, 0) is y  # level 0 is the measurement itself


def test_coarsening_without_the_shift_would_fail_the_bounds(photo) -> None:
    # The factor-2 recipe's sub-pixel offset matters: without it 5.9 %, against 1.6 %.
    error = without_recipe_detail("sr-no-shift", photo, 1)
    assert error > 3 * commutation_error(make("sr-bicubic"), photo, 1) and error > 4, f"{error:.2f} %"


def test_factor_four_needs_the_spread_of_the_averaged_samples(photo) -> None:
    # The (f - 1) / 4 shift alone (the factor-2 rule) leaves 6.0 % / 9.6 %; the recipe gives 0.55 % / 1.15 %.
    physics = make("sr4-bicubic")
    for level, floor in ((1, 5.0), (2, 8.0)):
        error = without_recipe_detail("sr4-shift-only", photo, level)
        assert error > floor, f"level {level}: {error:.2f} %"
        assert commutation_error(physics, photo, level) < error / 5


def test_downsampling_filter_is_centred_keeps_its_sum_and_is_the_coarse_blur_for_factor_one() -> None:
    psf = MotionBlurGenerator((15, 15), rng=generator()).step(2)["filter"]
    coarse = downsampling_filter(psf, 4, 2)
    assert coarse.shape[:2] == (2, 1) and coarse.shape[-1] % 2 == 1 and coarse.shape[-2] % 2 == 1
    torch.testing.assert_close(coarse.sum(dim=(-2, -1)), psf.sum(dim=(-2, -1)))
    torch.testing.assert_close(coarse[1:2], downsampling_filter(psf[1:2], 4, 2))
    # Factor 1 samples every pixel: the ratio of averages is 1 and the filter is the coarse blur, padded.
    blur = torch.nn.functional.pad(coarsen_filter(psf, 2), (2, 2, 2, 2))
    torch.testing.assert_close(downsampling_filter(psf, 1, 2), blur, atol=1e-6, rtol=0)
    assert torch.equal(downsampling_filter(psf, 4, 0), coarsen_filter(psf, 0))


def test_coarse_downsampling_adjoint_is_its_adjoint() -> None:
    coarse = coarsen_physics(make("sr4-bicubic"), 1)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 16, 16)
    lhs, rhs = (coarse.A(x) * y).sum(), (x * coarse.A_adjoint(y)).sum()
    assert abs(float(lhs - rhs)) < 1e-5 * float(lhs)


def test_coarse_filter_is_odd_centred_and_keeps_its_sum() -> None:
    psf = MotionBlurGenerator((31, 31), rng=generator()).step(3)["filter"]
    coarse = coarsen_filter(psf, 2)
    assert coarse.shape[:2] == (3, 1) and coarse.shape[-1] % 2 == 1
    torch.testing.assert_close(coarse.sum(dim=(-2, -1)), psf.sum(dim=(-2, -1)))
    # Per-sample filters are coarsened independently.
    torch.testing.assert_close(coarse[1:2], coarsen_filter(psf[1:2], 2))
    # A centred delta stays a centred delta.
    delta = torch.zeros(1, 1, 5, 5)
    delta[..., 2, 2] = 1
    out = coarsen_filter(delta, 1)
    expected = torch.zeros(1, 1, 3, 3)
    expected[..., 1, 1] = 1
    assert torch.equal(out, expected)  # the identity stays the identity


def test_three_dimensional_filters() -> None:
    g = torch.exp(-(torch.linspace(-3, 3, 9) ** 2) / 2)
    psf = (g[:, None, None] * g[None, :, None] * g[None, None, :])[None, None]
    psf = psf / psf.sum()
    coarse = coarsen_filter(psf, 1)
    assert coarse.dim() == 5 and coarse.shape[-3:] == (5, 5, 5)
    assert coarse.sum().item() == pytest.approx(1.0)


def test_fine_physics_is_never_mutated() -> None:
    physics = make("motion-blur")
    before = physics.filter.clone()
    coarse = coarsen_physics(physics, 2)
    coarse.update(filter=torch.ones_like(coarse.filter))
    assert coarse is not physics and torch.equal(physics.filter, before)


@pytest.mark.parametrize("noise, expected", [("keep", 0.2), ("restrict", 0.05)])
def test_gaussian_noise_level_per_mode(noise: str, expected: float) -> None:
    fine = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.2))
    coarse = coarsen_physics(fine, 2, noise=noise)
    assert float(coarse.noise_model.sigma) == pytest.approx(expected)
    torch.manual_seed(0)
    y = coarse(torch.zeros(16, 1, 32, 32))
    assert y.std().item() == pytest.approx(expected, rel=0.05)


def test_gaussian_noise_is_coupled_across_levels() -> None:
    fine = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x = torch.rand(2, 1, 32, 32)
    level0, level1 = coarsen_physics(fine, 0, noise="restrict"), coarsen_physics(fine, 1, noise="restrict")
    coupling = CoupledRandomness()
    coupling.capture()
    y0 = level0(x)
    coupling.replay()
    y1 = level1(restrict(x, 1))
    torch.testing.assert_close(y1, restrict(y0, 1), rtol=1e-6, atol=1e-6)


def test_level_gaussian_noise_uses_its_generator() -> None:
    noise = LevelGaussianNoise(0.1, level=1, rng=torch.Generator().manual_seed(4))
    a = noise(torch.zeros(1, 1, 8, 8))
    noise.rng.manual_seed(4)
    assert torch.equal(a, noise(torch.zeros(1, 1, 8, 8)))


def test_poisson_gain_per_mode() -> None:
    fine = dinv.physics.Denoising(dinv.physics.PoissonNoise(gain=0.4))
    assert float(coarsen_noise(fine.noise_model, 1, "restrict").gain) == pytest.approx(0.1)
    assert float(coarsen_noise(fine.noise_model, 1, "keep").gain) == pytest.approx(0.4)


def test_unknown_operator_and_noise_name_the_fix() -> None:
    class Custom(dinv.physics.LinearPhysics):
        pass

    with pytest.raises(NoCoarseRecipeError, match="no coarse recipe for Custom; use coarse_mode='restrict'"):
        coarsen_physics(Custom(), 1)
    odd_noise = dinv.physics.Denoising(dinv.physics.UniformNoise(0.1))
    with pytest.raises(NoCoarseRecipeError, match="noise model UniformNoise"):
        coarsen_physics(odd_noise, 1)
    with pytest.raises(ValueError, match="noise must be one of"):
        coarsen_noise(dinv.physics.GaussianNoise(0.1), 1, "halve")


def test_size_tied_operator_with_indivisible_size() -> None:
    physics = dinv.physics.BlurFFT(img_size=(1, 36, 36), filter=gaussian_blur(sigma=(1.0, 1.0)))
    with pytest.raises(ValueError, match=r"img_size \(1, 36, 36\), which 2\*\*3 does not divide"):
        coarsen_physics(physics, 3)


def test_coarse_operators_are_built_once_while_the_operator_is_unchanged() -> None:
    from mge_deepinv.physics import CoarsePhysicsCache

    blur = dinv.physics.Blur(
        gaussian_blur(sigma=(1.5, 1.5)), padding="circular", noise_model=dinv.physics.GaussianNoise(0.1)
    )
    sr = dinv.physics.Downsampling(img_size=(1, 32, 32), factor=2, filter="bicubic", padding="circular")
    cache = CoarsePhysicsCache()
    x = torch.rand(2, 1, 32, 32)
    for physics in (blur, sr):
        first = cache(physics, 1)
        physics.A(x)  # deepinv's Downsampling rebuilds its FFT buffers here: still the same operator
        assert cache(physics, 1) is first and cache(physics, 2) is not first  # per level
        fresh = coarsen_physics(physics, 1)
        torch.testing.assert_close(first.A(restrict(x, 1)), fresh.A(restrict(x, 1)))
    assert (cache.hits, cache.misses) == (2, 4)
    # A new filter, an in-place edit of one, or a new noise level builds a new coarse operator.
    before = cache(blur, 1)
    blur.update(filter=gaussian_blur(sigma=(0.8, 0.8)))
    after_update = cache(blur, 1)
    assert after_update is not before
    torch.testing.assert_close(after_update.filter, coarsen_physics(blur, 1).filter)
    blur.filter.mul_(2.0)
    assert cache(blur, 1) is not after_update
    edited = cache(blur, 1)
    blur.noise_model.update_parameters(sigma=0.2)
    assert cache(blur, 1) is not edited
    # Another operator object with equal settings is another entry, not a hit.
    twin = dinv.physics.Blur(gaussian_blur(sigma=(1.5, 1.5)), padding="circular")
    assert cache(twin, 1) is not cache(dinv.physics.Blur(gaussian_blur(sigma=(1.5, 1.5)), padding="circular"), 1)
