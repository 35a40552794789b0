"""DDP wiring in this process: a one-rank gloo group, so no process is launched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from mge_plugins import CostMeter, build_strategy, mge_step
from mge_plugins.distributed import (
    check_ranks_agree,
    ddp_no_sync,
    is_main_process,
    set_loader_epoch,
    unwrap_model,
    world_size,
)

from . import ddp_worker as w


class RecordingSampler(DistributedSampler):
    """A ``DistributedSampler`` that records the epochs it is given."""

    def __init__(self, data, **kwargs) -> None:
        super().__init__(data, num_replicas=1, rank=0, shuffle=True, seed=0, **kwargs)
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)
        super().set_epoch(epoch)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[None]:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def counted(model: nn.Module) -> tuple[nn.Module, list[int]]:
    ddp = nn.parallel.DistributedDataParallel(model)
    counts: list[int] = []
    ddp.register_comm_hook(None, w.counting_hook(counts))
    return ddp, counts


def test_helpers_without_torch_distributed() -> None:
    model = nn.Linear(2, 2)
    assert ddp_no_sync(model) is None and unwrap_model(model) is model
    assert world_size() == 1 and is_main_process()
    check_ranks_agree(step=3)  # a no-op with one process


def test_cost_meter_counts_every_rank_and_its_baseline() -> None:
    one, two = CostMeter(baseline_batch_size=8, world_size=1), CostMeter(baseline_batch_size=8, world_size=2)
    assert two.add((2, 8)).work_units == 2 * one.add((2, 8)).work_units == 2 * (2 + 2 / 4 + 8 / 4)
    assert two.baseline_work_units == 16.0 and two.saving == one.saving
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        CostMeter(world_size=0)


def test_set_loader_epoch_reaches_sampler_and_batch_sampler() -> None:
    sampler = RecordingSampler(range(8))
    set_loader_epoch([DataLoader(range(8), batch_size=2, sampler=sampler)], 3)

    class EpochBatches(list):
        epoch = -1

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

    batches = EpochBatches([[0, 1], [2, 3]])
    set_loader_epoch([DataLoader(range(8), batch_sampler=batches)], 5)
    assert sampler.epochs == [3] and batches.epoch == 5


def test_mge_step_on_ddp_reduces_once_per_step_and_matches_the_plain_step(group) -> None:
    ddp, counts = counted(w.small_net())
    plain = w.small_net()
    noisy, clean = (torch.stack(t) for t in zip(*w.pairs()[:16], strict=True))
    strategy = build_strategy("full-multiscale", loaded_batch_size=16, levels=2, iterations=6)
    optimizers = w.optimizer_for(ddp), w.optimizer_for(plain)
    assert ddp_no_sync(ddp) is not None and unwrap_model(ddp) is ddp.module
    for step in range(6):
        counts.append(0)
        mge_step(ddp, optimizers[0], nn.MSELoss(), (noisy, clean), strategy.plan(step), step=step)
        mge_step(plain, optimizers[1], nn.MSELoss(), (noisy, clean), strategy.plan(step))
    assert counts == [1] * 6  # 1, 3 and 5 backward passes per step, one all-reduce each
    for name, value in plain.state_dict().items():
        assert torch.equal(ddp.module.state_dict()[name], value), name


def test_deepinv_trainer_on_ddp_reduces_once_per_step_and_sets_sampler_epochs(group) -> None:
    dinv = pytest.importorskip("deepinv")
    from mge_deepinv import MultiscaleTrainer

    ddp, counts = counted(w.deepinv_net())
    sampler = RecordingSampler(w.pairs())

    class Counting(MultiscaleTrainer):
        def compute_loss(self, *args, **kwargs):
            counts.append(0)
            return super().compute_loss(*args, **kwargs)

    trainer = Counting(
        model=ddp,
        physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
        optimizer=w.optimizer_for(ddp),
        train_dataloader=DataLoader(w.pairs(), batch_size=32, sampler=sampler),
        epochs=2,
        online_measurements=False,
        coarse_mode="restrict",
        metrics=[],
        save_path=None,
        levels=2,
        budget="steps",  # counts the run's own steps
        device="cpu",
        verbose=False,
    )
    trainer.train()
    assert sampler.epochs == [0, 1]  # deepinv.Trainer itself never calls set_epoch
    assert counts == [1] * 6 and trainer.cost.steps == 6


def test_monai_iteration_on_ddp_reduces_once_per_step(group) -> None:
    pytest.importorskip("monai")
    pytest.importorskip("ignite")
    from mge_monai import MultiscaleSupervisedTrainer
    from monai.data import DataLoader as MonaiLoader

    ddp, counts = counted(w.small_net())
    data = [{"image": noisy, "label": clean} for noisy, clean in w.pairs()]
    trainer = MultiscaleSupervisedTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=MonaiLoader(data, batch_size=32, sampler=RecordingSampler(data)),
        network=ddp,
        optimizer=w.optimizer_for(ddp),
        loss_function=nn.MSELoss(),
        levels=2,
        budget="steps",  # counts the run's own steps
    )
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: counts.append(0))
    trainer.run()
    assert counts == [1] * 6 and trainer.cost.steps == 6
    assert trainer.data_loader.sampler.epochs == [1, 2]  # MONAI's workflow sets ignite's 1-based epoch
