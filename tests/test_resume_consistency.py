"""A resumed run trains the strategy its checkpoint was trained with, or says why not."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from mge_plugins import build_strategy
from mge_plugins.host_step import check_resumed_strategy

dinv = pytest.importorskip("deepinv")
pytest.importorskip("monai")
pytest.importorskip("ignite")

from ignite.engine import Events  # noqa: E402
from mge_deepinv import MultiscaleTrainer  # noqa: E402
from mge_monai import MultiscaleSupervisedTrainer  # noqa: E402
from monai.handlers import CheckpointLoader, CheckpointSaver  # noqa: E402

from .deepinv.conftest import make_trainer  # noqa: E402
from .monai.test_engines import make  # noqa: E402


def quietly(fn) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fn()


def test_the_same_strategy_resumes_and_another_is_refused_naming_both() -> None:
    fms = build_strategy("full-multiscale", levels=2, loaded_batch_size=16, iterations=28)
    assert check_resumed_strategy(fms.describe(), fms)
    assert check_resumed_strategy(None, fms)
    for other in (
        build_strategy("mge", levels=1, loaded_batch_size=16),
        build_strategy("single", loaded_batch_size=16),
        build_strategy("full-multiscale", levels=3, loaded_batch_size=16, iterations=28),
        build_strategy("full-multiscale", levels=2, loaded_batch_size=16, iterations=56),
    ):
        with pytest.raises(ValueError, match=r"trained with strategy 'full-multiscale' \(stages L2x16\[16\].*builds"):
            check_resumed_strategy(fms.describe(), other)
        with pytest.warns(UserWarning, match="cost record starts again at zero"):
            assert not check_resumed_strategy(fms.describe(), other, allow_change=True)


def deepinv_checkpoint(tmp_path: Path) -> Path:
    trainer = make_trainer(
        MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=2, save_path=str(tmp_path), ckp_interval=1
    )
    quietly(trainer.train)
    return sorted(tmp_path.rglob("ckp_1.pth.tar"))[0]


def test_deepinv_resume_with_another_strategy_is_refused_or_restarts_the_cost(tmp_path: Path) -> None:
    checkpoint = deepinv_checkpoint(tmp_path)
    refused = make_trainer(MultiscaleTrainer, strategy="mge", levels=1, epochs=3, ckpt_pretrained=str(checkpoint))
    with pytest.raises(
        ValueError, match=r"trained with strategy 'full-multiscale'.*builds 'mge'.*allow_strategy_change"
    ):
        quietly(refused.train)
    allowed = make_trainer(
        MultiscaleTrainer, strategy="single", epochs=3, ckpt_pretrained=str(checkpoint), allow_strategy_change=True
    )
    with pytest.warns(UserWarning, match="cost record starts again at zero"):
        quietly(allowed.train)
    assert allowed.cost.steps == 4 and allowed.cost.saving == pytest.approx(1.0)  # not a mixed 2.58x


def test_a_plain_deepinv_checkpoint_resumes_with_a_warning_saying_what_is_not_exact(tmp_path: Path) -> None:
    plain = make_trainer(dinv.Trainer, epochs=1, save_path=str(tmp_path), ckp_interval=1)
    quietly(plain.train)
    checkpoint = sorted(tmp_path.rglob("ckp_0.pth.tar"))[0]
    resumed = make_trainer(MultiscaleTrainer, strategy="mge", levels=1, epochs=2, ckpt_pretrained=str(checkpoint))
    with pytest.warns(UserWarning, match=r"no multiscale state.*not the random streams.*cost record"):
        quietly(resumed.train)


def monai_checkpoint(tmp_path: Path, epochs: int = 2, **kwargs) -> Path:
    first = make(MultiscaleSupervisedTrainer, epochs=epochs, **kwargs)
    CheckpointSaver(
        save_dir=str(tmp_path), save_dict={"net": first.network, "opt": first.optimizer, "trainer": first},
        save_interval=1, n_saved=None,
    ).attach(first)  # fmt: skip
    quietly(first.run)
    return sorted(tmp_path.glob("*epoch=1.pt"))[0]


def resume_monai(checkpoint: Path, **kwargs) -> MultiscaleSupervisedTrainer:
    resumed = make(MultiscaleSupervisedTrainer, epochs=3, **kwargs)
    load_dict = {"net": resumed.network, "opt": resumed.optimizer, "trainer": resumed}
    CheckpointLoader(load_path=str(checkpoint), load_dict=load_dict).attach(resumed)
    return resumed


def test_monai_checkpoints_carry_the_strategy_and_a_change_is_refused(tmp_path: Path) -> None:
    options = dict(strategy="full-multiscale", levels=2, iterations=6)
    checkpoint = monai_checkpoint(tmp_path, epochs=3, **options)
    assert torch.load(checkpoint, weights_only=False)["trainer"]["mge_strategy"]["strategy"] == "full-multiscale"
    with pytest.raises(ValueError, match=r"trained with strategy 'full-multiscale'.*builds 'mge'"):
        quietly(resume_monai(checkpoint, strategy="mge", levels=2).run)
    same = resume_monai(checkpoint, **options)
    quietly(same.run)
    assert same.cost.steps == 6


def test_monai_mid_epoch_resume_is_warned_about(tmp_path: Path) -> None:
    first = make(MultiscaleSupervisedTrainer, epochs=2, strategy="mge", levels=1)
    CheckpointSaver(
        save_dir=str(tmp_path), save_dict={"net": first.network, "opt": first.optimizer, "trainer": first},
        save_interval=1, epoch_level=False, n_saved=None,
    ).attach(first)  # fmt: skip

    @first.on(Events.ITERATION_COMPLETED(once=3))
    def interrupt(engine) -> None:
        engine.terminate()

    quietly(first.run)
    checkpoint = sorted(tmp_path.glob("*iteration=3.pt"))[0]
    resumed = resume_monai(checkpoint, strategy="mge", levels=1)
    with pytest.warns(UserWarning, match=r"resumed mid-epoch, after iteration 3 of epochs of 2"):
        quietly(resumed.run)
