"""Cost accounting: FLOPs and fine-equivalent work units per level, per step and per run.

Two units are kept side by side:

- **work units**: fine-equivalent samples, ``sum_k N_k * pixels_k / pixels_0``. Exact, free to
  compute, and independent of the network.
- **FLOPs** of forward + backward, measured once per level with
  :class:`torch.utils.flop_counter.FlopCounterMode` on a small batch (convolutional networks
  cost FLOPs linear in batch size and pixel count, so one measurement per level is exact).

:class:`CostMeter` accumulates both over a run, next to what single-scale training with the
finest batch size would have spent for the same number of optimizer steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .batching import batch_size_of
from .distributed import world_size as distributed_world_size
from .meshfree import at_level

__all__ = [
    "CostMeter",
    "StepCost",
    "count_flops",
    "measure_level_flops",
    "pixel_fraction",
    "step_flops",
    "step_passes",
    "step_work_units",
    "term_levels",
]


def pixel_fraction(level: int, spatial_dims: int) -> float:
    """Pixels (voxels) at ``level`` as a fraction of the finest level: ``2**(-d * level)``."""
    return 2.0 ** (-spatial_dims * level)


def term_levels(k: int, num_terms: int, base_level: int = 0) -> tuple[int, ...]:
    """Levels evaluated by term ``k`` of ``num_terms``: ``(L+k, L+k+1)``, or ``(L+k,)`` for the last."""
    level = base_level + k
    return (level,) if k == num_terms - 1 else (level, level + 1)


def _term_levels(batch_sizes: Sequence[int], base_level: int) -> list[tuple[int, tuple[int, ...]]]:
    """``(N_k, levels evaluated by term k)`` for each term of an MGE step."""
    return [(int(n), term_levels(k, len(batch_sizes), base_level)) for k, n in enumerate(batch_sizes)]


def step_passes(batch_sizes: Sequence[int], *, base_level: int = 0, fused: bool = False) -> list[tuple[int, int]]:
    """``(samples, level)`` of every forward/backward pass of one MGE step.

    Unfused, term ``k < K`` evaluates ``N_k`` samples at levels ``k`` and ``k + 1`` and term ``K``
    evaluates ``N_K`` samples at level ``K`` (all offset by ``base_level``): ``2K + 1`` passes.
    Fused (see :func:`~mge_plugins.mge_backward`), level ``j`` is evaluated once, on
    ``max(N_{j-1}, N_j)`` samples: ``K + 1`` passes.

    Example:
        >>> step_passes((2, 8))
        [(2, 0), (2, 1), (8, 1)]
        >>> step_passes((2, 8), fused=True)
        [(2, 0), (8, 1)]
    """
    if fused:
        sizes = [int(n) for n in batch_sizes]
        return [(max(n, sizes[j - 1]) if j else n, base_level + j) for j, n in enumerate(sizes)]
    return [(n, lv) for n, levels in _term_levels(batch_sizes, base_level) for lv in levels]


def step_work_units(
    batch_sizes: Sequence[int], *, base_level: int = 0, spatial_dims: int = 2, fused: bool = False
) -> float:
    """Fine-equivalent samples processed by one MGE step (its passes: :func:`step_passes`)."""
    return sum(
        n * pixel_fraction(lv, spatial_dims) for n, lv in step_passes(batch_sizes, base_level=base_level, fused=fused)
    )


def step_flops(
    batch_sizes: Sequence[int], flops_per_sample: Sequence[float], *, base_level: int = 0, fused: bool = False
) -> float:
    """Forward + backward FLOPs of one MGE step from per-sample FLOPs per absolute level."""
    passes = step_passes(batch_sizes, base_level=base_level, fused=fused)
    deepest = max(lv for _, lv in passes)
    if deepest >= len(flops_per_sample):
        raise ValueError(
            f"flops_per_sample covers levels 0..{len(flops_per_sample) - 1} but the step reaches "
            f"level {deepest}; measure the FLOPs for levels 0..{deepest}"
        )
    return float(sum(n * flops_per_sample[lv] for n, lv in passes))


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP counts under ``"Global"``.

    The tracker's backward hooks fail (``_will_engine_execute_node``) when the counted code runs
    :func:`torch.autograd.grad` through a module itself, as an operator whose adjoint autograd computes
    does (DeepInverse's ``Tomography``), and only the total is read here.
    """

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs counted by :class:`~torch.utils.flop_counter.FlopCounterMode` while ``fn()`` runs (the total only)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return int(counter.get_total_flops())


def measure_level_flops(
    level_loss: Callable[[Any, int], torch.Tensor],
    batch: Any,
    levels: int,
    parameters: Iterable[torch.Tensor],
) -> tuple[float, ...]:
    """Forward + backward FLOPs per sample of ``level_loss`` at levels ``0..levels``.

    The backward is taken with :func:`torch.autograd.grad`, so the parameters' ``.grad`` are left
    untouched. Use a batch of one or a few samples: the result is divided by its size.

    Args:
        level_loss: ``level_loss(batch, level) -> scalar`` as given to :func:`mge_backward`.
        batch: a small batch.
        levels: deepest level to measure.
        parameters: the trainable parameters the loss depends on.

    Returns:
        Per-sample FLOPs, indexed by level.
    """
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise ValueError("measure_level_flops needs at least one parameter that requires grad")
    n = batch_size_of(batch)

    def run(level: int) -> None:
        with at_level(level):
            loss = level_loss(batch, level)
        torch.autograd.grad(loss, params, allow_unused=True)

    return tuple(count_flops(lambda lv=lv: run(lv)) / n for lv in range(levels + 1))


@dataclass(frozen=True)
class StepCost:
    """What one optimizer step spent.

    Attributes:
        work_units: fine-equivalent samples.
        flops: forward + backward FLOPs, or ``None`` when per-level FLOPs were not measured.
    """

    work_units: float
    flops: float | None = None


class CostMeter:
    """Accumulates the cost of a run and of its single-scale equivalent.

    The single-scale equivalent of a step is ``baseline_batch_size`` samples at the finest level:
    what plain training with the finest batch size spends per optimizer step.

    Args:
        spatial_dims: 2 or 3.
        baseline_batch_size: batch size of the single-scale reference.
        flops_per_sample: per-sample FLOPs per level (see :func:`measure_level_flops`), or
            ``None`` to count work units only.
        world_size: processes that each run every recorded step on their own shard (DDP). The
            counters then hold the work of all ranks: each step counts ``world_size`` times, and
            so does the single-scale baseline. Default: ``torch.distributed``'s world size when
            it is initialised, else 1. Every rank runs the same plan (checked by the hosts), so
            the totals need no communication and every rank reports them.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        baseline_batch_size: int = 1,
        flops_per_sample: Sequence[float] | None = None,
        world_size: int | None = None,
    ) -> None:
        if world_size is None:
            world_size = distributed_world_size()
        if world_size < 1:
            raise ValueError(f"CostMeter world_size must be >= 1, got {world_size}")
        self.world_size = int(world_size)
        self.spatial_dims = spatial_dims
        self.baseline_batch_size = baseline_batch_size
        self.flops_per_sample = tuple(flops_per_sample) if flops_per_sample is not None else None
        self.steps = 0
        self.work_units = 0.0
        self.flops = 0.0
        self._warned_disagree = False

    def step_cost(self, batch_sizes: Sequence[int], base_level: int = 0, fused: bool = False) -> StepCost:
        """Cost of one step with these per-term batch sizes, without recording it."""
        work = step_work_units(batch_sizes, base_level=base_level, spatial_dims=self.spatial_dims, fused=fused)
        flops = (
            step_flops(batch_sizes, self.flops_per_sample, base_level=base_level, fused=fused)
            if self.flops_per_sample is not None
            else None
        )
        return StepCost(work, flops)

    def add(self, batch_sizes: Sequence[int], base_level: int = 0, fused: bool = False) -> StepCost:
        """Record one optimizer step and return its cost, summed over the ``world_size`` ranks."""
        cost = self.step_cost(batch_sizes, base_level, fused)
        if self.world_size > 1:
            flops = None if cost.flops is None else cost.flops * self.world_size
            cost = StepCost(cost.work_units * self.world_size, flops)
        self.steps += 1
        self.work_units += cost.work_units
        if cost.flops is not None:
            self.flops += cost.flops
        return cost

    @property
    def baseline_work_units(self) -> float:
        """Work units single-scale training would have spent for the same number of steps."""
        return float(self.steps * self.baseline_batch_size * self.world_size)

    @property
    def baseline_flops(self) -> float | None:
        """FLOPs single-scale training would have spent for the same number of steps."""
        if self.flops_per_sample is None:
            return None
        return self.steps * self.baseline_batch_size * self.world_size * self.flops_per_sample[0]

    @property
    def work_saving(self) -> float | None:
        """Single-scale work units divided by the work units spent (pixels processed)."""
        return self.baseline_work_units / self.work_units if self.work_units else None

    @property
    def flop_saving(self) -> float | None:
        """Single-scale FLOPs divided by the FLOPs spent, when FLOPs were measured."""
        baseline = self.baseline_flops
        return baseline / self.flops if baseline is not None and self.flops else None

    @property
    def saving(self) -> float | None:
        """The saving to report (``> 1`` means cheaper): FLOPs when measured, else work units.

        A network that pads its input (SCUNet pads every level to 64 px) does more work than its
        pixels say, so the two can disagree; when they differ by more than 20 %, a warning says so
        once, and the FLOP figure is the one that holds.
        """
        flop, work = self.flop_saving, self.work_saving
        if flop is not None and work is not None and abs(flop / work - 1) > 0.2 and not self._warned_disagree:
            self._warned_disagree = True
            warnings.warn(
                f"the FLOP saving ({flop:.2f}x) and the pixel saving ({work:.2f}x) differ by more than 20 %: the "
                "network's work is not proportional to its input's pixels (it pads or resizes internally); the "
                "FLOP figure is reported",
                stacklevel=2,
            )
        return flop if flop is not None else work

    def summary(self) -> dict[str, float | int | None]:
        """Plain-data summary for logs and tables (``saving`` is the FLOP saving when FLOPs were measured)."""
        return {
            "steps": self.steps,
            "work_units": self.work_units,
            "flops": self.flops if self.flops_per_sample is not None else None,
            "baseline_work_units": self.baseline_work_units,
            "baseline_flops": self.baseline_flops,
            "work_saving": self.work_saving,
            "flop_saving": self.flop_saving,
            "saving": self.saving,
        }

    def state_dict(self) -> dict[str, Any]:
        """Counters to save in a checkpoint."""
        return {"steps": self.steps, "work_units": self.work_units, "flops": self.flops}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters saved by :meth:`state_dict`."""
        self.steps = int(state["steps"])
        self.work_units = float(state["work_units"])
        self.flops = float(state["flops"])
