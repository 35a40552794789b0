"""The three entry points behind one interface, for the host-contract battery.

Each host trains a model on the same clean images with its own trainer: ``train`` with a
multiscale strategy, ``native`` with the host's stock training (a hand-written loop, a
``deepinv.Trainer``, a MONAI ``SupervisedTrainer``). Both run on unshuffled loaders of
``batch_size`` with ``drop_last=False`` and plain SGD, so runs compare weight by weight.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mge_plugins import CostMeter, build_strategy, mge_step

NOISE = 0.1


def clean_images(n: int = 16, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Piecewise-constant images in [0, 1], smooth enough to restrict three times."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size // 4, size // 4, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)


def noisy(images: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A fixed noisy copy (offline measurements): the same input for every host and strategy."""
    g = torch.Generator().manual_seed(seed)
    return images + NOISE * torch.randn(images.shape, generator=g)


def conv_net(batchnorm: bool = False, seed: int = 0) -> nn.Module:
    """A small residual-free CNN that accepts any size (optionally with a BatchNorm)."""
    torch.manual_seed(seed)
    middle: list[nn.Module] = [nn.BatchNorm2d(8)] if batchnorm else []
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), *middle, nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))


class NeedsEightPixels(nn.Module):
    """Fails below 8 px per side, as a network with three poolings would."""

    def __init__(self) -> None:
        super().__init__()
        self.net = conv_net()

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        if min(x.shape[2:]) < 8:
            raise RuntimeError(f"input of {tuple(x.shape[2:])} px is below the 8 px this network needs")
        return self.net(x)


@dataclass
class Result:
    """What a run left: the network's weights and the steps its cost record counted."""

    weights: list[torch.Tensor]
    steps: int
    strategy: Any = None


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


class Host:
    """One entry point: multiscale training and the host's stock training on the same data."""

    name = ""

    def train(self, model: nn.Module, images: torch.Tensor, *, batch_size: int = 8, lr: float = 0.05, **options):
        raise NotImplementedError

    def native(self, model: nn.Module, images: torch.Tensor, *, batch_size: int = 8, lr: float = 0.05) -> Result:
        raise NotImplementedError


class PlainHost(Host):
    """``mge_step`` in a hand-written loop; the stock run is the same loop with ``loss.backward()``."""

    name = "plain"

    def _loader(self, images: torch.Tensor, batch_size: int):
        dataset = torch.utils.data.TensorDataset(noisy(images), images)
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)

    def train(self, model, images, *, batch_size=8, lr=0.05, strategy="mge", **options) -> Result:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        loader = self._loader(images, batch_size)
        iterations = options.pop("iterations", len(loader))
        built = build_strategy(strategy, loaded_batch_size=batch_size, iterations=iterations, **options)
        meter = CostMeter(baseline_batch_size=batch_size)
        for step, (y, x) in enumerate(loader):
            mge_step(model, optimizer, nn.MSELoss(), (y, x), built.plan(step), meter=meter, step=step)
        return Result(_weights(model), meter.steps)

    def native(self, model, images, *, batch_size=8, lr=0.05) -> Result:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        steps = 0
        for y, x in self._loader(images, batch_size):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model(y), x).backward()
            optimizer.step()
            steps += 1
        return Result(_weights(model), steps)


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class _Reconstructor(nn.Module):
    """``model(y, physics)`` for deepinv around a plain network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor, physics: Any = None, **kwargs: Any) -> torch.Tensor:
        return self.net(y)


class DeepinvHost(Host):
    """``MultiscaleTrainer`` against ``deepinv.Trainer``, offline pairs (restriction of ``x`` and ``y``)."""

    name = "deepinv"

    def _run(self, cls, model, images, batch_size, lr, **options):
        import deepinv as dinv

        loader = torch.utils.data.DataLoader(_Images(images, noisy(images)), batch_size=batch_size, shuffle=False)
        wrapped = _Reconstructor(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            trainer = cls(
                model=wrapped, physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(NOISE)),
                optimizer=torch.optim.SGD(wrapped.parameters(), lr=lr), train_dataloader=loader,
                epochs=options.pop("epochs", 1),
                online_measurements=False, save_path=None, verbose=False, show_progress_bar=False, device="cpu",
                non_blocking_transfers=False,
                **options,
            )  # fmt: skip
            trainer.train()
        return trainer

    def train(self, model, images, *, batch_size=8, lr=0.05, **options) -> Result:
        from mge_deepinv import MultiscaleTrainer

        options.setdefault("coarse_mode", "restrict")  # offline pairs: restriction of x and y, said explicitly
        options.setdefault("budget", "steps")  # the contract counts steps: the run's own, unless a test sets a budget
        trainer = self._run(MultiscaleTrainer, model, images, batch_size, lr, **options)
        return Result(_weights(model), trainer.cost.steps, trainer.built_strategy)

    def native(self, model, images, *, batch_size=8, lr=0.05) -> Result:
        import deepinv as dinv

        self._run(dinv.Trainer, model, images, batch_size, lr)
        return Result(_weights(model), -1)


class MonaiHost(Host):
    """``MultiscaleSupervisedTrainer`` against MONAI's ``SupervisedTrainer``."""

    name = "monai"

    def _run(self, cls: Callable[..., Any], model, images, batch_size, lr, **options):
        from monai.data import DataLoader, Dataset

        data = [{"image": y, "label": x} for y, x in zip(noisy(images), images)]
        trainer = cls(
            device="cpu", max_epochs=options.pop("epochs", 1),
            train_data_loader=DataLoader(Dataset(data), batch_size=batch_size),
            network=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), loss_function=nn.MSELoss(),
            **options,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            trainer.run()
        return trainer

    def train(self, model, images, *, batch_size=8, lr=0.05, **options) -> Result:
        from mge_monai import MultiscaleSupervisedTrainer

        options.setdefault("budget", "steps")  # as the deepinv host: the contract counts the run's own steps
        trainer = self._run(MultiscaleSupervisedTrainer, model, images, batch_size, lr, **options)
        return Result(_weights(model), trainer.cost.steps, trainer.multiscale.built_strategy)

    def native(self, model, images, *, batch_size=8, lr=0.05) -> Result:
        from monai.engines import SupervisedTrainer

        self._run(SupervisedTrainer, model, images, batch_size, lr)
        return Result(_weights(model), -1)


HOSTS: dict[str, Host] = {h.name: h for h in (PlainHost(), DeepinvHost(), MonaiHost())}
