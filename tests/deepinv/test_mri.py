"""MRI with multiscale training: coarse k-space, single- and multi-coil, online and offline, with the EI losses."""

from __future__ import annotations

import warnings

import pytest
import torch

dinv = pytest.importorskip("deepinv")

from mge_deepinv import MultiscaleTrainer  # noqa: E402

from .operators import coil_maps  # noqa: E402


def mri_images(n: int = 8, size: int = 32) -> torch.Tensor:
    """Smooth complex images as two channels (real, imaginary)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 2, 4, 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i] if self.y is None else (self.x[i], self.y[i])


def mri_trainer(online: bool, strategy: str, losses, coils: int = 0) -> MultiscaleTrainer:
    torch.manual_seed(0)
    mask = (torch.rand(32, 32, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    noise = dinv.physics.GaussianNoise(0.01)
    if coils:
        physics = dinv.physics.MultiCoilMRI(mask=mask, coil_maps=coil_maps(coils, 32), noise_model=noise)
    else:
        physics = dinv.physics.MRI(mask=mask, img_size=(32, 32), noise_model=noise)
    x = mri_images()
    data = Pairs(x) if online else Pairs(x, physics(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dinv.models.ArtifactRemoval(dinv.models.DnCNN(2, 2, depth=3, nf=8, pretrained=None), mode="adjoint")
        return MultiscaleTrainer(
            model=model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
            train_dataloader=torch.utils.data.DataLoader(data, batch_size=8), epochs=4, losses=losses,
            online_measurements=online, save_path=None, verbose=False, show_progress_bar=False, device="cpu",
            non_blocking_transfers=False, strategy=strategy, levels=1,
        )  # fmt: skip


@pytest.mark.parametrize("online", [True, False], ids=["online-physics", "offline-k-space"])
@pytest.mark.parametrize("strategy", ["mge", "full-multiscale"])
def test_mri_trains_with_equivariant_imaging_losses_online_and_offline(online: bool, strategy: str) -> None:
    losses = [dinv.loss.MCLoss(), dinv.loss.EILoss(transform=dinv.transform.Rotate())]
    trainer = mri_trainer(online, strategy, losses)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        trainer.train()
    assert trainer.cost.steps == 4 and trainer.cost.saving > 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize("online", [True, False], ids=["online-physics", "offline-k-space"])
@pytest.mark.parametrize("strategy", ["mge", "full-multiscale"])
def test_multicoil_mri_trains_online_and_from_stored_coil_k_space(online: bool, strategy: str) -> None:
    trainer = mri_trainer(online, strategy, [dinv.loss.SupLoss()], coils=3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        trainer.train()
    assert trainer.cost.steps == 4 and trainer.cost.saving > 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))


def test_offline_k_space_at_a_coarse_level_is_the_coarse_operators_measurement() -> None:
    from mge_deepinv import coarsen_physics, restrict_measurement

    from mge_plugins import restrict

    x = mri_images(2, 64)
    physics = dinv.physics.MRI(img_size=(64, 64))
    coarse = coarsen_physics(physics, 1)
    a, b = restrict_measurement(physics, physics.A(x), 1), coarse.A(restrict(x, 1))
    assert a.shape == b.shape == (2, 2, 32, 32)
    assert (a - b).norm() / b.norm() < 0.02
