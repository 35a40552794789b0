from __future__ import annotations

import warnings

import pytest
import torch

monai = pytest.importorskip("monai")
pytest.importorskip("ignite")

from mge_monai import MultiscaleBatchSampler, MultiscaleSupervisedTrainer  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler  # noqa: E402

from mge_plugins import build_strategy  # noqa: E402

from .test_engines import network, samples  # noqa: E402


def fms():
    """Full-Multiscale over 14 steps: terms (1) x 8 steps, (1, 4) x 4, (1, 4, 16) x 2."""
    return build_strategy("full-multiscale", loaded_batch_size=16, levels=2, iterations=14, batch_size=1, growth=4)


def test_batches_follow_the_plan_of_each_iteration() -> None:
    sampler = MultiscaleBatchSampler(SequentialSampler(range(100)), fms())
    assert len(sampler) == 14 + 2  # 8 + 16 + 32 = 56 samples for the stages, then 2 more fine steps
    batches = list(sampler)
    assert [len(b) for b in batches] == [1] * 8 + [4] * 4 + [16] * 4
    assert batches[8] == [8, 9, 10, 11] and sampler.iteration == 16
    disjoint = MultiscaleBatchSampler(
        SequentialSampler(range(100)), build_strategy("mge", loaded_batch_size=16), split="disjoint"
    )
    assert [len(b) for b in disjoint] == [28, 28, 28]


def test_workers_load_exactly_what_the_main_process_decided() -> None:
    data = list(range(200))

    def loader(workers: int) -> DataLoader:
        random = RandomSampler(data, generator=torch.Generator().manual_seed(0))
        return DataLoader(data, num_workers=workers, batch_sampler=MultiscaleBatchSampler(random, fms()))

    in_process = [b.tolist() for b in loader(0)]
    assert [b.tolist() for b in loader(2)] == in_process
    assert [len(b) for b in in_process][:13] == [1] * 8 + [4] * 4 + [16]


def test_distributed_sampler_ranks_are_disjoint_and_epochs_reshuffle() -> None:
    data = list(range(64))
    ranks = [DistributedSampler(data, num_replicas=2, rank=r, shuffle=True, seed=3) for r in (0, 1)]
    batchers = [MultiscaleBatchSampler(s, build_strategy("mge", loaded_batch_size=8, levels=1)) for s in ranks]
    first = [[i for b in batcher for i in b] for batcher in batchers]
    assert not set(first[0]) & set(first[1]) and len(first[0]) == 32
    for batcher in batchers:
        batcher.set_epoch(1)
    second = [i for b in batchers[0] for i in b]
    assert second != first[0] and set(second) | set(i for b in batchers[1] for i in b) == set(data)


def test_trainer_with_the_batch_sampler_loads_only_what_each_stage_needs() -> None:
    loaded = []

    class Counting(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.items = samples(n=64)

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> dict:
            loaded.append(i)
            return self.items[i]

    strategy = fms()
    batch_sampler = MultiscaleBatchSampler(
        RandomSampler(range(64), generator=torch.Generator().manual_seed(0)), strategy
    )
    model = network()
    loader = DataLoader(Counting(), batch_sampler=batch_sampler, collate_fn=monai.data.list_data_collate)
    trainer = MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=7, epoch_length=2, train_data_loader=loader, network=model,
        optimizer=torch.optim.Adam(model.parameters(), 1e-3), loss_function=torch.nn.MSELoss(), strategy=strategy,
    )  # fmt: skip
    batch_sampler.attach(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    stage_sizes = [strategy.plan(t).batch_sizes for t in range(14)]
    assert len(loaded) == sum(max(s) for s in stage_sizes) == 8 * 1 + 4 * 4 + 2 * 16  # not 14 x 16
    assert trainer.cost.steps == 14


def test_attached_sampler_resumes_at_the_engines_iteration() -> None:
    strategy = fms()
    batch_sampler = MultiscaleBatchSampler(SequentialSampler(range(64)), strategy)
    model = network()
    loader = DataLoader(samples(n=64), batch_sampler=batch_sampler, collate_fn=monai.data.list_data_collate)
    trainer = MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=7, epoch_length=2, train_data_loader=loader, network=model,
        optimizer=torch.optim.Adam(model.parameters(), 1e-3), loss_function=torch.nn.MSELoss(), strategy=strategy,
    )  # fmt: skip
    batch_sampler.attach(trainer)
    trainer.state.iteration, trainer.state.epoch = 10, 5  # as CheckpointLoader restores them
    sizes = []
    trainer.add_event_handler(
        monai.engines.utils.IterationEvents.MODEL_COMPLETED, lambda e: sizes.append(len(e.state.batch))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    # Iterations 10..13: stage (1, 4) twice, then stage (1, 4, 16) twice; state.batch is term 0 (1 sample).
    assert batch_sampler.iteration == 14 and sizes == [1, 1, 1, 1]
    assert [strategy.plan(t).batch_sizes for t in (10, 12)] == [(1, 4), (1, 4, 16)]
