"""Multi-process training with ``torch.distributed``: DDP gradient sync, rank agreement, epochs.

Every rank runs the same plan on its own shard of the loaded batch. DistributedDataParallel
averages the ranks' gradients, so term ``k`` of the estimate is the mean over ``world_size * N_k``
samples: the per-rank nested prefixes together form one global term. The helpers here keep that
true and cheap: the gradient is all-reduced once per optimizer step (every backward pass but the
last runs under ``no_sync``), the ranks are checked to run the same step, and samplers get the
epoch so that every rank reshuffles alike.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "check_ranks_agree",
    "ddp_no_sync",
    "is_main_process",
    "mean_over_ranks",
    "plan_fingerprint",
    "rank",
    "set_loader_epoch",
    "unwrap_model",
    "world_size",
]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the default group, or 1 when ``torch.distributed`` is not initialised."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's rank in the default group, or 0 when ``torch.distributed`` is not initialised."""
    return dist.get_rank() if _active() else 0


def is_main_process() -> bool:
    """``True`` on rank 0 (the process that logs and writes checkpoints) and in single-process runs."""
    return rank() == 0


def ddp_no_sync(model: nn.Module) -> Callable[[], AbstractContextManager[Any]] | None:
    """``model.no_sync`` for a :class:`~torch.nn.parallel.DistributedDataParallel` model, else ``None``.

    Give it to :func:`~mge_plugins.mge_backward` as ``no_sync=`` so gradients are all-reduced once
    per optimizer step, by the last backward pass.
    """
    return model.no_sync if isinstance(model, nn.parallel.DistributedDataParallel) else None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def plan_fingerprint(plan: Any) -> int:
    """A 31-bit checksum of a plan's ``repr`` that is the same in every process.

    Python's ``hash`` of strings differs between processes, so a CRC is used instead.
    """
    return zlib.crc32(repr(plan).encode()) & 0x7FFFFFFF


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_ranks_agree(**values: int) -> None:
    """Raise on every rank unless all ranks hold the same integers (one tiny all-reduce).

    Used once per optimizer step with the global step and the plan's fingerprint: the
    Full-Multiscale stage is a pure function of the step, so ranks that agree on the step train
    at the same level with the same per-term batch sizes. A no-op without ``torch.distributed``
    or with one process.

    Args:
        values: named integers, e.g. ``step=12, plan=plan_fingerprint(plan)``.

    Raises:
        RuntimeError: naming each value that differs and its range over the ranks.
    """
    if not values or world_size() == 1:
        return
    names = list(values)
    local = torch.tensor([int(values[n]) for n in names], dtype=torch.int64)
    both = torch.cat([local, -local]).to(_collective_device())
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    high, low = both[: len(names)].tolist(), [-v for v in both[len(names) :].tolist()]
    differ = [f"{n} ranges over {lo}..{hi}" for n, lo, hi in zip(names, low, high, strict=True) if lo != hi]
    if differ:
        raise RuntimeError(
            f"ranks disagree ({'; '.join(differ)}; this is rank {rank()} with "
            f"{', '.join(f'{n}={values[n]}' for n in names)}): every rank must run the same global step, so give "
            "every rank the same number of batches per epoch (DistributedSampler pads the shards to equal length) "
            "and resume every rank from the same checkpoint"
        )


def set_loader_epoch(loaders: Iterable[Any], epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on each loader's sampler and batch sampler that has one.

    A ``DistributedSampler`` reshuffles only when told the epoch; call this before iterating the
    loaders each epoch. Covers a ``DistributedSampler`` given as ``sampler=`` and a batch sampler
    that forwards the epoch (:class:`mge_monai.MultiscaleBatchSampler`).
    """
    for loader in loaders:
        seen: set[int] = set()
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if sampler is not None and id(sampler) not in seen and hasattr(sampler, "set_epoch"):
                seen.add(id(sampler))
                sampler.set_epoch(epoch)


def mean_over_ranks(values: list[float]) -> list[float]:
    """The mean of ``values`` over the ranks (one all-reduce); ``values`` itself without DDP."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64).to(_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return (tensor / world_size()).tolist()
