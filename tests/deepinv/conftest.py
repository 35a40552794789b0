from __future__ import annotations

import warnings

import pytest
import torch

dinv = pytest.importorskip("deepinv")
from mge_deepinv import MultiscaleTrainer  # noqa: E402


class CleanImages(torch.utils.data.Dataset):
    """Ground-truth images only, for online measurements."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def smooth_images(n: int = 64, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random smooth images (sums of a few low-frequency cosines) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    out = torch.zeros(n, 1, size, size)
    for _ in range(4):
        fx, fy, phase = torch.rand(3, n, 1, 1, generator=g) * torch.tensor([4.0, 4.0, 6.28])[:, None, None, None]
        out[:, 0] += torch.cos(6.28 * (fx * xx + fy * yy) + phase)
    return (out - out.amin(dim=(2, 3), keepdim=True)) / (
        out.amax(dim=(2, 3), keepdim=True) - out.amin(dim=(2, 3), keepdim=True)
    )


def small_model() -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None))


def make_trainer(cls, *, images=None, physics=None, batch_size=16, epochs=2, lr=1e-3, seed=0, **kwargs):
    torch.manual_seed(seed)
    images = smooth_images() if images is None else images
    model = kwargs.pop("model", None) or small_model()
    physics = physics or dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    optimizer = kwargs.pop("optimizer", None) or torch.optim.Adam(model.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(CleanImages(images), batch_size=batch_size, shuffle=False)
    defaults = dict(
        epochs=epochs, online_measurements=True, save_path=None, verbose=False, show_progress_bar=False,
        device="cpu", metrics=dinv.metric.PSNR(),
    )  # fmt: skip
    if issubclass(cls, MultiscaleTrainer):
        defaults["budget"] = "steps"  # these tests count steps: the run's own, unless a test sets a budget
    defaults.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model=model, physics=physics, optimizer=optimizer, train_dataloader=loader, **defaults)


@pytest.fixture
def trainer_factory():
    return make_trainer
