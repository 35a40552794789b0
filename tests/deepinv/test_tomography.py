"""Tomography with multiscale training: coarse image grid and detector, online and from stored sinograms."""

from __future__ import annotations

import warnings

import pytest
import torch

dinv = pytest.importorskip("deepinv")

from mge_deepinv import MultiscaleTrainer  # noqa: E402

from .conftest import smooth_images  # noqa: E402
from .test_mri import Pairs  # noqa: E402


def tomography_trainer(online: bool, strategy: str) -> MultiscaleTrainer:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        physics = dinv.physics.Tomography(
            angles=20, img_width=32, normalize=True, noise_model=dinv.physics.GaussianNoise(0.01)
        )
        x = smooth_images(8, 32)
        data = Pairs(x) if online else Pairs(x, physics(x))
        model = dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None), mode="adjoint")
        return MultiscaleTrainer(
            model=model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
            train_dataloader=torch.utils.data.DataLoader(data, batch_size=8), epochs=4, losses=[dinv.loss.SupLoss()],
            online_measurements=online, save_path=None, verbose=False, show_progress_bar=False, device="cpu",
            non_blocking_transfers=False, strategy=strategy, levels=1,
        )  # fmt: skip


@pytest.mark.parametrize("online", [True, False], ids=["online-physics", "offline-sinograms"])
@pytest.mark.parametrize("strategy", ["mge", "full-multiscale"])
def test_tomography_trains_online_and_from_stored_sinograms(online: bool, strategy: str) -> None:
    trainer = tomography_trainer(online, strategy)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        trainer.train()
    assert trainer.cost.steps == 4 and trainer.cost.saving > 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
