from __future__ import annotations

import signal
import time
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("monai")
pytest.importorskip("ignite")

from mge_plugins.schedule import halving_split

from ..killing import finish, kill_after_checkpoint, run_child, start_child

CHILD = Path(__file__).with_name("resume_child.py")


@pytest.mark.slow  # about 40 s on a busy 2-core machine: three MONAI processes start
def test_sigkilled_run_resumed_from_its_latest_checkpoint_ends_with_identical_weights(tmp_path: Path) -> None:
    start = time.monotonic()
    uninterrupted = start_child(CHILD, str(tmp_path / "full"), str(tmp_path / "full.pt"))
    code = kill_after_checkpoint(
        CHILD, str(tmp_path / "killed"), str(tmp_path / "never.pt"), "--delay", "0.1",
        folder=tmp_path / "killed", pattern="checkpoint_epoch=*.pt",
    )  # fmt: skip
    finish(uninterrupted)
    assert code == -signal.SIGKILL and not (tmp_path / "never.pt").exists()
    checkpoints = sorted((tmp_path / "killed").glob("checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    latest = checkpoints[-1]
    state = torch.load(latest, weights_only=False)
    # 6 epochs of 4 iterations; the checkpoint lies strictly inside a Full-Multiscale stage.
    done = state["trainer"]["iteration"]
    boundaries = torch.tensor(halving_split(24, 3)).cumsum(0).tolist()
    assert done not in boundaries and done < boundaries[-1], (done, boundaries)
    assert {"net", "opt", "rng"} <= set(state) and state["trainer"]["mge_cost"]["steps"] == done
    run_child(CHILD, str(tmp_path / "resumed"), str(tmp_path / "resumed.pt"), str(latest))
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "resumed.pt")
    assert full["steps"] == resumed["steps"] == 24
    for name, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
    assert time.monotonic() - start < 120


def test_bf16_autocast_on_cpu_runs_the_network_in_bf16_and_the_loss_in_float32() -> None:
    from mge_monai import MultiscaleSupervisedTrainer
    from monai.data import DataLoader, Dataset
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    clean = torch.rand(16, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    network = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 16), strides=(2,), num_res_units=1)
    dtypes: list[torch.dtype] = []
    network.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype) if out.requires_grad else None)
    losses: list[torch.dtype] = []

    def loss_function(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses.append(pred.dtype)
        return torch.nn.functional.mse_loss(pred, target)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = MultiscaleSupervisedTrainer(
            device="cpu", max_epochs=1, train_data_loader=DataLoader(Dataset([{"image": c, "label": c} for c in clean]),
            batch_size=16), network=network, optimizer=torch.optim.Adam(network.parameters(), 1e-3),
            loss_function=loss_function, strategy="mge", levels=2, amp=True, amp_kwargs={"dtype": torch.bfloat16},
        )  # fmt: skip
        trainer.run()
    assert set(dtypes) == {torch.bfloat16} and set(losses) == {torch.float32}
    assert all(torch.isfinite(p).all() for p in network.parameters()) and trainer.cost.steps == 1
