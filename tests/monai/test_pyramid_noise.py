from __future__ import annotations

import warnings

import pytest
import torch

monai = pytest.importorskip("monai")
pytest.importorskip("ignite")

from mge_monai import LevelPyramidd, MultiscaleSupervisedTrainer  # noqa: E402
from monai.data import CacheDataset, DataLoader  # noqa: E402

from mge_plugins import restrict  # noqa: E402

from .test_engines import network, samples  # noqa: E402


def test_level_pyramid_is_cached_and_equals_restriction() -> None:
    data = [{"label": torch.rand(1, 16, 16)} for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = CacheDataset(data, LevelPyramidd("label", levels=2), progress=False)
    item = dataset[1]
    assert set(item) == {"label", "label_level1", "label_level2"}
    torch.testing.assert_close(torch.as_tensor(item["label_level2"]), restrict(data[1]["label"][None], 2)[0])


class Spy(torch.nn.Module):
    """A network that records every input it is given, in ``seen``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


def trainer_with_spy(keep: bool, data: list[dict]):
    model = network()
    spy = Spy(model)
    seen = spy.seen
    trainer = MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=1, epoch_length=1, train_data_loader=DataLoader(data, batch_size=16), network=spy,
        optimizer=torch.optim.Adam(model.parameters(), 1e-3), loss_function=torch.nn.MSELoss(),
        strategy="mge", levels=1, batch_sizes=[4, 16], noise_sigma=0.1, keep_noise_std=keep, size_multiple=1,
    )  # fmt: skip
    return trainer, seen


@pytest.mark.parametrize("keep, factor", [(False, 1.0), (True, 2.0)])
def test_level_noise_is_coupled_across_the_two_halves_of_a_term(keep: bool, factor: float) -> None:
    data = samples(n=16)
    trainer, seen = trainer_with_spy(keep, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    # Calls: FLOP probe (levels 0, 1), then term 0 at levels 0 and 1, term 1 at level 1.
    fine, coarse = seen[2], seen[3]
    clean = torch.stack([d["label"] for d in data[:4]])
    noise_fine, noise_coarse = fine - clean, coarse - restrict(clean, 1)
    assert noise_fine.std().item() == pytest.approx(0.1, rel=0.1)
    # The coarse noise is the restriction of the fine draw (x2 per-pixel std kept in 2D when keep).
    torch.testing.assert_close(noise_coarse, factor * restrict(noise_fine, 1), rtol=1e-4, atol=1e-5)


def test_cached_pyramid_replaces_the_restriction_of_the_label() -> None:
    data = samples(n=16)
    for item in data:
        item["label_level1"] = torch.full((1, 16, 16), 0.25)  # a sentinel instead of the real restriction
    trainer, seen = trainer_with_spy(False, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    coarse = seen[3]
    assert abs(coarse.mean().item() - 0.25) < 0.02  # sentinel plus zero-mean noise


@pytest.mark.parametrize("keep, std, factor", [(False, 0.05, 1.0), (True, 0.1, 2.0)])
def test_fused_noise_of_a_coarse_stage_is_drawn_there_with_the_law_of_restricted_fine_noise(
    keep: bool, std: float, factor: float, monkeypatch
) -> None:
    data = samples(n=16, size=64)
    randn, drawn = torch.randn, []

    def recording_randn(*args, **kwargs):
        out = randn(*args, **kwargs)
        drawn.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "randn", recording_randn)
    model = network()
    spy = Spy(model)
    seen = spy.seen
    trainer = MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=1, epoch_length=5, train_data_loader=DataLoader(data, batch_size=16), network=spy,
        optimizer=torch.optim.Adam(model.parameters(), 1e-3), loss_function=torch.nn.MSELoss(reduction="none"),
        strategy="full-multiscale", levels=2, iterations=7, noise_sigma=0.1, keep_noise_std=keep, fused=True,
        size_multiple=1, budget="steps",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    monkeypatch.undo()
    # Four steps at level 2 and one at level 1 drew on their own grids, never on the 64x64 one.
    assert drawn.count((16, 1, 16, 16)) == 4 and drawn.count((16, 1, 32, 32)) == 1
    assert (16, 1, 64, 64) not in drawn
    plan = trainer.multiscale.multiscale.plan(4, 16)
    assert (plan.level, plan.batch_sizes) == (1, (8, 16))  # step 4: the middle stage, terms at levels 1 and 2
    assert tuple(seen[-2].shape) == (8, 1, 32, 32) and tuple(seen[-1].shape) == (16, 1, 16, 16)
    clean = torch.stack([d["label"] for d in data])
    noise_base = seen[-2] - restrict(clean[:8], 1)
    noise_coarse = seen[-1] - restrict(clean, 2)
    # Drawn on the 32x32 grid with the std a restricted 64x64 draw has there (halved per level in 2D)...
    assert noise_base.std().item() == pytest.approx(std, rel=0.05)
    # ...and restricted from there for the next level, so the two passes share it.
    torch.testing.assert_close(noise_coarse[:8], factor * restrict(noise_base, 1), rtol=1e-4, atol=1e-5)


def test_single_scale_with_noise_sigma_trains_on_noisy_inputs() -> None:
    data = samples(n=16)
    for item in data:
        item["image"] = item["label"].clone()  # as CopyItemsd gives it: the engine adds the noise
    model = network()
    spy = Spy(model)
    seen = spy.seen
    trainer = MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=1, epoch_length=2, train_data_loader=DataLoader(data, batch_size=16), network=spy,
        optimizer=torch.optim.Adam(model.parameters(), 1e-3), loss_function=torch.nn.MSELoss(), strategy="single",
        noise_sigma=0.1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    clean = torch.stack([d["label"] for d in data])
    trained = [x for x in seen if x.shape[0] == 16]  # the steps' passes (the FLOP probe takes one sample)
    assert len(trained) == 2 and trainer.cost.steps == 2
    # SupervisedTrainer's own iteration would feed the clean copy: the baseline would learn the identity.
    assert all((x - clean).std().item() == pytest.approx(0.1, rel=0.05) for x in trained)
