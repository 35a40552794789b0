"""Batches sized per iteration by a strategy, composed in the main process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler

from mge_plugins import Strategy, required_batch_size

__all__ = ["MultiscaleBatchSampler"]


class MultiscaleBatchSampler(Sampler[list[int]]):
    """Yields, for global iteration ``t``, exactly the samples the strategy's step ``t`` needs.

    Use it as ``DataLoader(dataset, batch_sampler=MultiscaleBatchSampler(sampler, strategy))``.
    Batch composition is decided here, in the main process; worker processes only load the
    indices they are given, so no dataset state is mutated inside workers. Any index sampler
    works, ``DistributedSampler`` included (its ``set_epoch`` is forwarded), so a
    Full-Multiscale coarse stage loads only the samples it needs and not a fine-stage batch.

    The iteration counter advances with every batch yielded and survives across epochs; after a
    resume, set it from the engine (:meth:`attach` does so when the engine starts).

    Args:
        sampler: index sampler (``RandomSampler``, ``DistributedSampler``, ...).
        strategy: the strategy the engine trains with (the same object).
        split: ``"nested"`` or ``"disjoint"``, as in the engine.
        start_iteration: global iteration of the first batch.
    """

    def __init__(self, sampler: Sampler[int], strategy: Strategy, split: str = "nested", start_iteration: int = 0):
        self.sampler = sampler
        self.strategy = strategy
        self.split = split
        self.iteration = start_iteration

    def batch_size_at(self, iteration: int) -> int:
        """Samples loaded for global iteration ``iteration``."""
        return required_batch_size(self.strategy.plan(iteration).batch_sizes, self.split)

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        need = self.batch_size_at(self.iteration)
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == need:
                self.iteration += 1  # counted when handed out, so the count never lags the consumer
                yield batch
                batch, need = [], self.batch_size_at(self.iteration)

    def __len__(self) -> int:
        """Full batches in one pass over the sampler, starting at the current iteration."""
        remaining, iteration, count = len(self.sampler), self.iteration, 0
        while remaining >= (need := self.batch_size_at(iteration)):
            remaining -= need
            iteration += 1
            count += 1
        return count

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to a ``DistributedSampler`` (reshuffles every rank alike)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def attach(self, engine: Any) -> None:
        """Keep the counter on the engine's iteration at start (resume) and set epochs on the sampler."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda e: setattr(self, "iteration", e.state.iteration))
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.set_epoch(e.state.epoch))
