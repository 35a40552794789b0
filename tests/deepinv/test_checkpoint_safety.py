from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepinv")

from deepinv import Trainer
from mge_deepinv import MultiscaleTrainer

from mge_plugins.checkpoint import CHECKSUM_KEY, CheckpointError, compute_checksum

from .conftest import make_trainer


def train(trainer: Trainer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultiscaleTrainer, Path]:
    """A trainer after one epoch of Full-Multiscale training, and the checkpoint it wrote."""
    folder = tmp_path_factory.mktemp("run")
    trainer = make_trainer(
        MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=1, save_path=str(folder), ckp_interval=1
    )
    train(trainer)
    (path,) = folder.rglob("ckp_0.pth.tar")
    return trainer, path


def fresh_trainer(**kwargs) -> MultiscaleTrainer:
    return make_trainer(MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=2, **kwargs)


def test_the_checkpoint_holds_what_deepinv_saves_plus_the_checksum(saved, tmp_path: Path) -> None:
    trainer, path = saved
    ours = torch.load(path, weights_only=True)  # tensors and plain containers only
    save_path, trainer.save_path = trainer.save_path, str(tmp_path)
    try:
        Trainer.save_model(trainer, "deepinv.pth.tar", 0)  # what deepinv's own save_model writes
    finally:
        trainer.save_path = save_path
    theirs = torch.load(tmp_path / "deepinv.pth.tar", weights_only=True)
    assert set(ours) == set(theirs) | {"multiscale", CHECKSUM_KEY}
    for key, value in theirs.items():
        assert compute_checksum(ours[key]) == compute_checksum(value), key
    assert ours[CHECKSUM_KEY] == compute_checksum(ours)


def test_a_crafted_checkpoint_is_refused_and_its_code_never_runs(saved, tmp_path: Path) -> None:
    trainer, _ = saved
    marker, path = tmp_path / "marker", tmp_path / "crafted.pth.tar"

    class RunsCode:
        def __reduce__(self):
            return open, (str(marker), "w")  # unpickling it creates the marker file

    torch.save({"state_dict": trainer.model.state_dict(), "epoch": 0, "payload": RunsCode()}, path)
    resumed = fresh_trainer(ckpt_pretrained=str(path))
    fix = re.escape("pass MultiscaleTrainer(..., trust_checkpoint=True)")
    message = rf"^{re.escape(str(path))} holds a pickled io.open, .*{fix}$"
    with pytest.raises(CheckpointError, match=message):
        resumed.load_model()
    assert not marker.exists()
    Trainer.load_model(fresh_trainer(), str(path))  # deepinv's own load_model runs the payload
    assert marker.exists()
    marker.unlink()
    fresh_trainer(ckpt_pretrained=str(path), trust_checkpoint=True).load_model()  # loading it on purpose
    assert marker.exists()


def test_a_flipped_weight_byte_is_refused_naming_the_file(saved, tmp_path: Path) -> None:
    trainer, source = saved
    path = tmp_path / "ckp_0.pth.tar"
    data = bytearray(source.read_bytes())
    weight = trainer.model.state_dict()["backbone_net.in_conv.weight"]
    data[data.find(weight.numpy().tobytes()) + 5] ^= 0x20
    path.write_bytes(bytes(data))
    plain = fresh_trainer()
    Trainer.load_model(plain, str(path))  # deepinv loads the damaged weight without a word
    assert not torch.equal(plain.model.state_dict()["backbone_net.in_conv.weight"], weight)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} is corrupted: "):
        fresh_trainer(ckpt_pretrained=str(path)).load_model()


@pytest.mark.parametrize("content", ["empty", "truncated"])
def test_an_unreadable_checkpoint_names_the_file(saved, tmp_path: Path, content: str) -> None:
    _, source = saved
    path = tmp_path / "ckp_0.pth.tar"
    data = source.read_bytes()
    path.write_bytes(b"" if content == "empty" else data[: len(data) // 2])
    with pytest.raises((EOFError, OSError)) as plain:  # deepinv: EOFError, or OSError [Errno 22]
        Trainer.load_model(fresh_trainer(), str(path))
    assert str(path) not in str(plain.value)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} is not a readable checkpoint"):
        fresh_trainer(ckpt_pretrained=str(path)).load_model()


def test_resuming_restores_what_deepinv_restores(saved) -> None:
    trainer, path = saved
    resumed = fresh_trainer(ckpt_pretrained=str(path))
    checkpoint = resumed.load_model()
    assert resumed.ckpt_pretrained is None and resumed.load_model() is None  # loaded once, as in deepinv
    assert resumed.epoch_start == 1 and checkpoint["epoch"] == 0
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    assert compute_checksum(resumed.optimizer.state_dict()) == compute_checksum(trainer.optimizer.state_dict())
    assert resumed._resumed_multiscale_state["cost"] == checkpoint["multiscale"]["cost"]
