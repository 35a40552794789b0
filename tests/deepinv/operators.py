"""The operators whose commutation with restriction the tests measure, and a table of the measured errors.

Commutation error: ``||R^k(A x) - A_k(R^k x)|| / ||R^k(A x)||`` on a 128 px crop of scikit-image's
astronaut photograph, noise off, where ``R^k(A x)`` is the fine measurement posed at level ``k``
by ``restrict_measurement``. ``python -m tests.deepinv.operators`` prints every case's measured
values at levels 1 and 2 (the README's table).
"""

from __future__ import annotations

import math
import warnings

import deepinv as dinv
import numpy as np
import torch
from deepinv.physics.functional.blur import gaussian_blur
from deepinv.physics.generator import DiffractionBlurGenerator, MotionBlurGenerator
from mge_deepinv import coarsen_filter, coarsen_physics, restrict_measurement

from mge_plugins import restrict

# name, bound at level 1 (%), bound at level 2 (%): about 1.5x what was measured
CASES = [
    ("gaussian-blur", 1.2, 4.0),
    ("gaussian-blur-fft", 1.2, 4.0),
    ("motion-blur", 1.6, 3.6),
    ("diffraction-blur", 1.7, 3.2),
    ("sr-bicubic", 2.4, 3.1),
    ("sr-gaussian", 1.0, 2.7),
    ("sr4-bicubic", 0.9, 1.8),
    ("sr4-gaussian", 0.4, 1.0),
    ("inpainting-blocks", 1e-5, 1e-5),
    ("inpainting-pixels", 7.0, 7.0),
    ("mri-full", 4.5, 7.0),
    ("mri-random", 6.5, 10.0),
    ("multicoil-full", 4.6, 7.2),
    ("multicoil-random", 6.5, 10.0),
    ("tomography", 0.7, 2.0),
    ("tomography-normalized", 0.7, 2.0),
    ("tomography-circle-inside", 1.3, 3.4),
    ("tomography-circle", 5.2, 15.0),
]


def astronaut_crop() -> torch.Tensor:
    """A ``(1, 3, 128, 128)`` crop of scikit-image's astronaut photograph in [0, 1]."""
    from skimage import data

    img = np.asarray(data.astronaut(), dtype=np.float32) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1)[None, :, 128:256, 128:256].contiguous()


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def coil_maps(coils: int = 4, size: int = 128) -> torch.Tensor:
    """Smooth complex coil sensitivities ``(coils, size, size)``: Gaussian profiles around the field, linear phases."""
    grid = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    maps = []
    for i in range(coils):
        a = 2 * math.pi * i / coils
        magnitude = torch.exp(-((yy - 1.2 * math.sin(a)) ** 2 + (xx - 1.2 * math.cos(a)) ** 2) / (2 * 0.8**2))
        phase = 1.5 * math.cos(a + 1) * xx + 1.5 * math.sin(a + 1) * yy + a
        maps.append(magnitude * torch.exp(1j * phase))
    return torch.stack(maps).to(torch.complex64)


def disc(size: int = 128, radius: float = 0.9) -> torch.Tensor:
    """The indicator of a centred disc, ``radius`` times the half-width."""
    grid = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    return (yy**2 + xx**2 <= radius**2).float()


def random_mask(size: int = 128) -> torch.Tensor:
    return (torch.rand(size, size, generator=generator()) > 0.5).float()


def make(name: str) -> dinv.physics.Physics:
    """The fine operator of case ``name`` for 128 px images."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "gaussian-blur":
            return dinv.physics.Blur(filter=gaussian_blur(sigma=(2.0, 2.0)), padding="circular")
        if name == "gaussian-blur-fft":
            return dinv.physics.BlurFFT(img_size=(3, 128, 128), filter=gaussian_blur(sigma=(2.0, 2.0)))
        if name == "motion-blur":
            psf = MotionBlurGenerator((31, 31), rng=generator()).step(1)["filter"]
            return dinv.physics.Blur(filter=psf, padding="circular")
        if name == "diffraction-blur":
            psf = DiffractionBlurGenerator((31, 31), rng=generator()).step(1)["filter"]
            return dinv.physics.Blur(filter=psf, padding="circular")
        if name.startswith("sr"):
            factor, kind = (4 if name.startswith("sr4") else 2), name.split("-")[1]
            return dinv.physics.Downsampling(filter=kind, factor=factor, img_size=None, padding="circular")
        if name == "inpainting-blocks":
            blocks = (torch.rand(1, 1, 16, 16, generator=generator()) > 0.3).float()
            mask = blocks.repeat_interleave(8, -1).repeat_interleave(8, -2)
            return dinv.physics.Inpainting(img_size=(3, 128, 128), mask=mask)
        if name == "inpainting-pixels":
            return dinv.physics.Inpainting(img_size=(3, 128, 128), mask=0.5, rng=generator())
        if name == "mri-full":
            return dinv.physics.MRI(img_size=(128, 128))
        if name == "mri-random":
            return dinv.physics.MRI(mask=random_mask(), img_size=(128, 128))
        if name.startswith("multicoil"):
            mask = random_mask() if name.endswith("random") else torch.ones(128, 128)
            return dinv.physics.MultiCoilMRI(mask=mask, coil_maps=coil_maps(), img_size=(128, 128))
        if name.startswith("tomography"):
            return dinv.physics.Tomography(
                angles=60, img_width=128, circle="circle" in name, normalize=name.endswith("normalized")
            )
    raise KeyError(name)


def image_for(name: str, photo: torch.Tensor) -> torch.Tensor:
    """The image case ``name`` measures: two channels (real, imaginary) for MRI, inside the disc if asked."""
    if "mri" in name or "multicoil" in name:
        return photo[:, :2]
    if name.endswith("inside"):
        return photo * disc()
    return photo


def commutation_error(physics: dinv.physics.Physics, image: torch.Tensor, level: int) -> float:
    """``100 ||R^k(A x) - A_k(R^k x)|| / ||R^k(A x)||`` (%)."""
    fine_then_restrict = restrict_measurement(physics, physics.A(image), level)
    restrict_then_coarse = coarsen_physics(physics, level).A(restrict(image, level))
    if fine_then_restrict.shape != restrict_then_coarse.shape:
        raise AssertionError(f"shapes differ: {tuple(fine_then_restrict.shape)} != {tuple(restrict_then_coarse.shape)}")
    return float(100 * (fine_then_restrict - restrict_then_coarse).norm() / fine_then_restrict.norm())


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """``100 ||reference - other|| / ||reference||`` (%)."""
    return float(100 * (reference - other).norm() / reference.norm())


def without_recipe_detail(control: str, photo: torch.Tensor, level: int) -> float:
    """The commutation error of a recipe with one of its details left out (the negative controls).

    ``sr-no-shift``: factor-2 super-resolution with the coarse blur alone; ``sr4-shift-only``: factor 4
    with the ``(f - 1) / 4`` shift but not the samples' spread; ``multicoil-pooled-maps``: area-pooled
    coil maps; ``tomography-plain-pooling``: sinogram bins pooled in plain pairs, times 1/2 (level 1).
    """
    if control.startswith("sr"):
        factor = 4 if control.startswith("sr4") else 2
        physics = make(f"sr{'4' if factor == 4 else ''}-bicubic")
        shift = (factor - 1) / 4 if control.endswith("shift-only") else 0.0
        naive = dinv.physics.Downsampling(
            filter=coarsen_filter(physics.filter, level, shift=shift), factor=factor, img_size=None, padding="circular"
        )
        return relative_error(restrict(physics.A(photo), level), naive.A(restrict(photo, level)))
    if control == "multicoil-pooled-maps":
        physics, image = make("multicoil-full"), photo[:, :2]
        maps = physics.coil_maps
        pooled = torch.complex(restrict(maps.real, level), restrict(maps.imag, level))
        mask = coarsen_physics(physics, level).mask
        naive = dinv.physics.MultiCoilMRI(mask=mask, coil_maps=pooled, img_size=tuple(mask.shape[-2:]))
        return relative_error(restrict_measurement(physics, physics.A(image), level), naive.A(restrict(image, level)))
    if control == "tomography-plain-pooling" and level == 1:
        physics = make("tomography")
        plain = torch.nn.functional.avg_pool2d(physics.A(photo), (2, 1)) / 2
        return relative_error(plain, coarsen_physics(physics, 1).A(restrict(photo, 1)))
    raise KeyError((control, level))


CONTROLS = [
    ("sr-no-shift", (1,)),
    ("sr4-shift-only", (1, 2)),
    ("multicoil-pooled-maps", (1, 2)),
    ("tomography-plain-pooling", (1,)),
]


def main() -> None:
    torch.set_num_threads(1)
    photo = astronaut_crop()
    print(f"{'case':<26} {'level 1':>8} {'level 2':>8}")
    for name, _, _ in CASES:
        physics, image = make(name), image_for(name, photo)
        errors = [commutation_error(physics, image, level) for level in (1, 2)]
        print(f"{name:<26} {errors[0]:>7.2f}% {errors[1]:>7.2f}%")
    print("\nwithout a detail of the recipe (negative controls)")
    for control, levels in CONTROLS:
        errors = [f"{without_recipe_detail(control, photo, level):>7.2f}%" for level in levels]
        print(f"{control:<26} {' '.join(errors)}")


if __name__ == "__main__":
    main()
