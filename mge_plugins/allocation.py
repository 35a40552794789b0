r"""Variance-optimal per-level batches, measured online (multilevel Monte Carlo allocation).

MGE's per-step variance is :math:`\sum_k V_k / N_k`, where :math:`V_k` is the per-sample variance
(trace of the covariance) of term :math:`k`'s gradient, :math:`\nabla\ell_k - \nabla\ell_{k+1}`
for :math:`k < K` and :math:`\nabla\ell_K` for the last, and its cost is :math:`\sum_k N_k C_k`.
For a budget :math:`B` the minimum is reached at

.. math::

    N_k = \frac{B}{\sum_j \sqrt{V_j C_j}} \sqrt{V_k / C_k}, \qquad
    \mathrm{Var} = \frac{\left(\sum_k \sqrt{V_k C_k}\right)^2}{B},

the classic multilevel Monte Carlo rule. Comparing that variance over the number of levels
:math:`K = 0, 1, \dots` (``K = 0`` is plain SGD) chooses the levels too, so the estimator is never
chosen worse than single-scale at equal cost, as measured.

:func:`measure_level_variances` measures :math:`V_k` (and the plain per-level variances, which
truncated sums need) from per-sample gradients of a small probe; :func:`optimal_allocation` applies
the rule under a loaded batch's bound; :class:`AdaptiveMGEStrategy` (and
:class:`AdaptiveFullMultiscaleStrategy` inside each Full-Multiscale stage) re-measures every
``every`` steps and changes its sizes only for the steps after a measurement, so a step's sizes
never depend on the batch they are used for and the estimator stays unbiased.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .cost import pixel_fraction
from .coupling import CoupledRandomness
from .meshfree import at_level
from .schedule import FullMultiscaleSchedule
from .strategies import FullMultiscaleStrategy, StepPlan, Strategy

__all__ = [
    "AdaptiveFullMultiscaleStrategy",
    "AdaptiveMGEStrategy",
    "Allocation",
    "Diagnosis",
    "LevelVariances",
    "allocation_at",
    "diagnose",
    "diagnosis",
    "measure_level_variances",
    "optimal_allocation",
]


@dataclass(frozen=True)
class LevelVariances:
    """Per-sample gradient variances by level, from one probe.

    Attributes:
        plain: ``V(grad l_k)`` for ``k = 0..K`` (trace of the covariance over the probe samples).
        difference: ``V(grad l_k - grad l_{k+1})`` for ``k = 0..K-1``.
        samples: probe samples used.
        resampled: the same variances over bootstrap resamples of the probe samples (drawn with
            replacement), when :func:`measure_level_variances` was asked for them: how much the
            figures would move with another probe of the same size.
        relative_difference: ``mean ||grad l_k - grad l_{k+1}|| / mean ||grad l_k||`` over the
            probe samples, per level pair ``k = 0..K-1`` (the norms of
            :func:`~mge_plugins.diagnostics.level_difference_norms`, from the same gradients):
            how far a sample's gradient moves between two levels, relative to its size.
    """

    plain: tuple[float, ...]
    difference: tuple[float, ...]
    samples: int
    resampled: tuple[LevelVariances, ...] = ()
    relative_difference: tuple[float, ...] = ()

    def term_variances(self, levels: int) -> tuple[float, ...]:
        """``V_k`` of the terms of an MGE step with ``levels`` coarser levels."""
        return (*self.difference[:levels], self.plain[levels])


@dataclass(frozen=True)
class Allocation:
    """What :func:`optimal_allocation` chose.

    Attributes:
        batch_sizes: per-term batch sizes, finest first (``len - 1`` levels).
        variance: the predicted variance of one step, ``sum V_k / N_k``.
        cost: its cost, ``sum N_k C_k`` (units of ``costs``).
        single_variance: plain SGD's variance at the same cost (``V_0 / (cost / C_0)``).
        capped: the unconstrained optimum wanted more samples in some term than a loaded batch holds.
    """

    batch_sizes: tuple[int, ...]
    variance: float
    cost: float
    single_variance: float
    capped: bool = False

    @property
    def levels(self) -> int:
        """Coarser levels used, ``K``."""
        return len(self.batch_sizes) - 1

    @property
    def variance_ratio(self) -> float:
        """Variance x cost against single-scale SGD at equal cost (``< 1``: MGE pays)."""
        return self.variance / self.single_variance if self.single_variance > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs."""
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        data["levels"] = self.levels
        data["variance_ratio"] = self.variance_ratio
        return data


def _per_sample_gradients(
    level_loss: Callable[[slice, int], torch.Tensor],
    params: list[torch.Tensor],
    samples: int,
    levels: int,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """``(samples, levels + 1, P)`` flattened float64 gradients of every probe sample at every level.

    Every level of a sample replays the same random draws (the coupling of MGE's terms), and the
    random streams are left as they were.
    """
    outer = CoupledRandomness(list(generators))
    outer.capture()
    rows = []
    for i in range(samples):
        per_level = []
        coupling = CoupledRandomness(list(generators))
        coupling.capture()
        for level in range(levels + 1):
            coupling.replay()
            with at_level(level):
                loss = level_loss(slice(i, i + 1), level)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            flat = [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
            per_level.append(torch.cat(flat).double())
        rows.append(torch.stack(per_level))
    outer.replay()
    return torch.stack(rows)


def _variance(vectors: torch.Tensor) -> float:
    """Unbiased trace of the covariance of the rows of ``vectors``."""
    centred = vectors - vectors.mean(0, keepdim=True)
    return float(centred.pow(2).sum() / max(1, vectors.shape[0] - 1))


def _trace_covariance(gram: torch.Tensor, rows: torch.Tensor) -> float:
    """Unbiased trace of the covariance of the vectors ``rows`` (with repeats) from their Gram matrix."""
    sub = gram[rows][:, rows]
    m = len(rows)
    return float((sub.diagonal().sum() - sub.sum() / m) / max(1, m - 1))


def _resampled_variances(grads: torch.Tensor, resamples: int, seed: int) -> tuple[LevelVariances, ...]:
    """:class:`LevelVariances` of ``resamples`` bootstrap resamples of the rows of ``grads`` ``(n, K + 1, P)``.

    Every resample is read from the ``n x n`` Gram matrices of the levels and of their differences,
    so it costs ``O(n^2)``, not a pass over the parameters.
    """
    n, deepest = grads.shape[0], grads.shape[1] - 1
    plain = [grads[:, k] @ grads[:, k].T for k in range(deepest + 1)]
    difference = []
    for k in range(deepest):
        d = grads[:, k] - grads[:, k + 1]
        difference.append(d @ d.T)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(resamples):
        rows = torch.randint(n, (n,), generator=generator)
        out.append(
            LevelVariances(
                tuple(_trace_covariance(g, rows) for g in plain),
                tuple(_trace_covariance(g, rows) for g in difference),
                n,
            )
        )
    return tuple(out)


def measure_level_variances(
    level_loss: Callable[[slice, int], torch.Tensor],
    model: nn.Module,
    samples: int,
    levels: int,
    generators: Sequence[torch.Generator] = (),
    *,
    resamples: int = 0,
    seed: int = 0,
) -> LevelVariances:
    """Measure :class:`LevelVariances` from per-sample gradients of the first ``samples`` samples.

    The gradients are taken with :func:`torch.autograd.grad`, so ``.grad`` is left untouched. Every
    level of a sample replays the same random draws (PyTorch's and ``generators``), as in MGE's
    terms, and the streams are left as they were.

    Args:
        level_loss: ``level_loss(indices, level)`` as given to :class:`~mge_plugins.MultiscaleStep`.
        model: the network.
        samples: probe samples (at least 2).
        levels: deepest level ``K``.
        generators: the host's own generators besides PyTorch's.
        resamples: bootstrap resamples of the probe samples to keep in
            :attr:`LevelVariances.resampled` (no extra passes: they are read from the same gradients).
        seed: seed of the resampling (its own generator: PyTorch's stream is not touched).

    Example:
        >>> from mge_plugins import restrict
        >>> model = torch.nn.Conv2d(1, 1, 3, padding=1)
        >>> x = torch.rand(4, 1, 16, 16)
        >>> def level_loss(indices, level):
        ...     xk = restrict(x[indices], level)
        ...     return (model(xk) - 0.5 * xk).pow(2).mean()
        >>> measured = measure_level_variances(level_loss, model, samples=4, levels=2)
        >>> len(measured.plain), len(measured.difference)
        (3, 2)
    """
    if samples < 2:
        raise ValueError(f"measuring a variance needs at least 2 probe samples, got {samples}")
    params = [p for p in model.parameters() if p.requires_grad]
    grads = _per_sample_gradients(level_loss, params, samples, levels, generators)
    plain = tuple(_variance(grads[:, k]) for k in range(levels + 1))
    difference = tuple(_variance(grads[:, k] - grads[:, k + 1]) for k in range(levels))
    resampled = _resampled_variances(grads, resamples, seed) if resamples else ()
    return LevelVariances(plain, difference, samples, resampled, _relative_differences(grads))


def _relative_differences(grads: torch.Tensor) -> tuple[float, ...]:
    """``mean_i ||g_k(i) - g_{k+1}(i)|| / mean_i ||g_k(i)||`` per level pair of ``grads`` ``(n, K + 1, P)``."""
    out = []
    for k in range(grads.shape[1] - 1):
        gradient = float(grads[:, k].norm(dim=1).mean())
        difference = float((grads[:, k] - grads[:, k + 1]).norm(dim=1).mean())
        out.append(difference / gradient if gradient > 0 else math.nan)
    return tuple(out)


def term_costs(costs: Sequence[float], levels: int) -> tuple[float, ...]:
    """``C_k`` of the terms of a step with ``levels`` levels from per-sample costs per level."""
    return (*(costs[k] + costs[k + 1] for k in range(levels)), costs[levels])


def _allocate(variances: Sequence[float], costs: Sequence[float], budget: float, bound: int | None) -> tuple:
    roots = [math.sqrt(max(v, 0.0) * c) for v, c in zip(variances, costs)]
    total = sum(roots) or 1.0
    raw = [budget * math.sqrt(max(v, 0.0) / c) / total for v, c in zip(variances, costs)]
    capped = bound is not None and any(n > bound for n in raw)
    sizes = [max(1, round(min(n, bound) if bound is not None else n)) for n in raw]
    variance = sum(v / n for v, n in zip(variances, sizes))
    cost = sum(n * c for n, c in zip(sizes, costs))
    return tuple(sizes), variance, cost, capped


def allocation_at(
    measured: LevelVariances,
    costs: Sequence[float],
    budget: float,
    levels: int,
    *,
    bound: int | None = None,
) -> Allocation:
    """The per-term sizes of least variance for a budget with exactly ``levels`` coarser levels.

    Args:
        measured: per-level variances.
        costs: per-sample cost of one pass at each level (FLOPs, seconds or pixel fractions).
        budget: cost of one step, in the units of ``costs``.
        levels: coarser levels ``K`` (``0``: plain SGD).
        bound: largest term size (the loaded batch, for nested terms); terms are capped there.
    """
    if not 0 <= levels < len(measured.plain):
        raise ValueError(f"levels must be in 0..{len(measured.plain) - 1} (the measured ones), got {levels}")
    sizes, variance, cost, capped = _allocate(measured.term_variances(levels), term_costs(costs, levels), budget, bound)
    single_variance = measured.plain[0] * costs[0] / cost
    return Allocation(sizes, variance, cost, single_variance, capped)


def optimal_allocation(
    measured: LevelVariances,
    costs: Sequence[float],
    budget: float,
    *,
    max_levels: int | None = None,
    bound: int | None = None,
) -> Allocation:
    """The per-term sizes (and number of levels) of least variance for a budget.

    Args:
        measured: per-level variances.
        costs: per-sample cost of one pass at each level (FLOPs, or pixel fractions).
        budget: cost of one step, in the units of ``costs`` (e.g. what the fixed allocation spends).
        max_levels: most coarser levels to consider (default: every measured one).
        bound: largest term size (the loaded batch, for nested terms); terms are capped there.

    Returns:
        The :class:`Allocation` of least predicted variance per unit cost over ``K = 0..max_levels``.
    """
    deepest = len(measured.plain) - 1 if max_levels is None else min(max_levels, len(measured.plain) - 1)
    candidates = [allocation_at(measured, costs, budget, k, bound=bound) for k in range(deepest + 1)]
    return min(candidates, key=lambda a: a.variance * a.cost)  # the first of equals: fewer levels win ties


def _remeasure(
    level_loss: Callable[[slice, int], torch.Tensor],
    model: nn.Module,
    loaded: int,
    current: StepPlan,
    max_levels: int,
    probe: int,
    bound: int | None,
    flops_per_sample: Sequence[float] | None,
    generators: Sequence[torch.Generator],
    reduce: Callable[[list[float]], list[float]] | None,
    spatial_dims: int,
) -> tuple[Allocation, dict[str, Any]]:
    """Measure levels ``current.level .. + max_levels`` on the loaded batch; the allocation at ``current``'s cost.

    The record says what was measured and chosen, for the strategy's history and the host's logs.
    """
    base = current.level

    def relative(indices: slice, k: int) -> torch.Tensor:
        return level_loss(indices, base + k)

    measured = measure_level_variances(relative, model, min(probe, loaded), max_levels, generators)
    if reduce is not None:
        both = reduce([*measured.plain, *measured.difference])
        plain = len(measured.plain)
        measured = LevelVariances(tuple(both[:plain]), tuple(both[plain:]), measured.samples)
    costs = (
        list(flops_per_sample[base : base + max_levels + 1])
        if flops_per_sample
        else [pixel_fraction(base + k, spatial_dims) for k in range(max_levels + 1)]
    )
    sizes = current.batch_sizes
    budget = sum(n * c for n, c in zip(sizes, term_costs(costs, len(sizes) - 1)))
    allocation = optimal_allocation(measured, costs, budget, bound=min(bound or loaded, loaded))
    entry = {
        "batch_sizes": list(allocation.batch_sizes),
        "plain_variances": list(measured.plain),
        "difference_variances": list(measured.difference),
        "costs": costs,
        "variance_ratio": allocation.variance_ratio,
        "capped": allocation.capped,
    }
    return allocation, entry


class _AllocationHistory:
    """The choices an adaptive strategy made (``history``, in step order), saved with a checkpoint."""

    history: list[dict[str, Any]]

    def state_dict(self) -> dict[str, Any]:
        """The choices so far, for a checkpoint."""
        return {"history": [dict(entry) for entry in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the choices saved by :meth:`state_dict`."""
        self.history = [dict(entry) for entry in state.get("history", [])]


class AdaptiveMGEStrategy(_AllocationHistory, Strategy):
    """MGE whose per-term sizes and levels follow :func:`optimal_allocation`, re-measured online.

    Until the first measurement, and between measurements, it plans the last chosen allocation;
    :meth:`observe` (called by :class:`~mge_plugins.MultiscaleStep` after a step) measures every
    ``every`` steps and sets the sizes of the *following* steps, so no step's sizes depend on its
    own batch. The choices are kept in :attr:`history` and in :meth:`state_dict`, so a resumed run
    plans exactly as the uninterrupted one.

    Args:
        initial: the per-term sizes to start from (e.g. the fixed allocation's).
        every: steps between measurements.
        probe: samples per measurement (per-sample gradients at every level).
        bound: largest term size (the loaded batch).
        restriction: restriction method.
        spatial_dims: 2 or 3 (for the pixel costs when no FLOPs are measured).
    """

    name = "mge-adaptive"

    def __init__(
        self,
        initial: Sequence[int],
        *,
        every: int = 100,
        probe: int = 4,
        bound: int | None = None,
        restriction: str = "area",
        spatial_dims: int = 2,
    ) -> None:
        self.initial = tuple(int(n) for n in initial)
        self.max_levels = len(self.initial) - 1
        self.every, self.probe, self.bound = every, probe, bound
        self.restriction, self.spatial_dims = restriction, spatial_dims
        self.history: list[dict[str, Any]] = []  # {"from_step", "batch_sizes", ...}, in step order

    def plan(self, step: int) -> StepPlan:
        """The allocation chosen by the last measurement before ``step``."""
        sizes = self.initial
        for entry in self.history:
            if entry["from_step"] <= step:
                sizes = tuple(entry["batch_sizes"])
        return StepPlan(0, sizes, self.restriction)

    @property
    def coarsest_level(self) -> int:
        """The deepest level any allocation may use."""
        return self.max_levels

    @property
    def max_batch_sizes(self) -> tuple[int, ...]:
        """The initial sizes (later ones are capped at ``bound``)."""
        return self.initial

    def due(self, step: int) -> bool:
        """Whether :meth:`observe` measures after ``step``."""
        return (step + 1) % self.every == 0

    def observe(
        self,
        step: int,
        level_loss: Callable[[slice, int], torch.Tensor],
        model: nn.Module,
        loaded: int,
        flops_per_sample: Sequence[float] | None = None,
        generators: Sequence[torch.Generator] = (),
        reduce: Callable[[list[float]], list[float]] | None = None,
    ) -> Allocation | None:
        """After ``step``: measure on the step's batch when due, and plan the next steps with the result.

        Args:
            step: the step just taken.
            level_loss: the host's level loss on that step's loaded batch.
            model: the network.
            loaded: samples in the loaded batch (the bound of a nested term).
            flops_per_sample: per-level FLOPs per sample, for the costs (pixels otherwise).
            generators: the host's own generators.
            reduce: averages the measured variances over the ranks under DDP, so every rank chooses
                the same sizes (:func:`mge_plugins.distributed.mean_over_ranks`).
        """
        if not self.due(step) or loaded < 2:
            return None
        allocation, entry = _remeasure(
            level_loss, model, loaded, self.plan(step), self.max_levels, self.probe, self.bound,
            flops_per_sample, generators, reduce, self.spatial_dims,
        )  # fmt: skip
        self.history.append({"from_step": step + 1, **entry})
        return allocation

    def describe(self) -> dict[str, Any]:
        """The initial plan and the options (the choices are in :attr:`history`)."""
        return {
            "strategy": self.name,
            "plan": StepPlan(0, self.initial, self.restriction).to_dict(),
            "every": self.every,
            "probe": self.probe,
        }


class AdaptiveFullMultiscaleStrategy(_AllocationHistory, FullMultiscaleStrategy):
    """Full-Multiscale whose MGE terms inside each stage follow :func:`optimal_allocation`, re-measured.

    The stages, their levels and lengths are the schedule's. Inside a stage with MGE levels, every
    ``every`` steps :meth:`observe` measures the per-level variances from the stage's level down and
    sets the sizes (and the number of levels, ``K = 0`` included) of the stage's *following* steps,
    at the cost of the stage's current step; a new stage starts from the schedule's sizes. So no
    step's sizes depend on its own batch, and :meth:`state_dict` lets a resumed run plan alike.

    Args:
        schedule: the Full-Multiscale stages.
        every: steps between measurements inside a stage.
        probe: samples per measurement.
        bound: largest term size (the loaded batch).
        spatial_dims: 2 or 3 (for the pixel costs when no FLOPs are measured).
    """

    def __init__(
        self,
        schedule: FullMultiscaleSchedule,
        *,
        every: int = 100,
        probe: int = 4,
        bound: int | None = None,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__(schedule, name="full-multiscale-adaptive")
        self.every, self.probe, self.bound, self.spatial_dims = every, probe, bound, spatial_dims
        self.history: list[dict[str, Any]] = []  # {"from_step", "stage", "batch_sizes", ...}, in step order

    def plan(self, step: int) -> StepPlan:
        """The stage's plan, with the sizes its last measurement before ``step`` chose."""
        plan = super().plan(step)
        sizes = plan.batch_sizes
        for entry in self.history:
            if entry["stage"] == plan.stage and entry["from_step"] <= step:
                sizes = tuple(entry["batch_sizes"])
        return StepPlan(plan.level, sizes, plan.restriction, plan.stage)

    def due(self, step: int) -> bool:
        """Whether :meth:`observe` measures after ``step``: every ``every`` steps of a stage with MGE levels."""
        stage = self.schedule.stage_at(step)
        return stage.levels_below > 0 and (step + 1 - stage.start) % self.every == 0 and step + 1 < stage.stop

    def observe(
        self,
        step: int,
        level_loss: Callable[[slice, int], torch.Tensor],
        model: nn.Module,
        loaded: int,
        flops_per_sample: Sequence[float] | None = None,
        generators: Sequence[torch.Generator] = (),
        reduce: Callable[[list[float]], list[float]] | None = None,
    ) -> Allocation | None:
        """After ``step``: measure when due and plan the stage's next steps (as :meth:`AdaptiveMGEStrategy.observe`)."""
        if not self.due(step) or loaded < 2:
            return None
        stage = self.schedule.stage_at(step)
        allocation, entry = _remeasure(
            level_loss, model, loaded, self.plan(step), stage.levels_below, self.probe, self.bound,
            flops_per_sample, generators, reduce, self.spatial_dims,
        )  # fmt: skip
        self.history.append({"from_step": step + 1, "stage": stage.index, **entry})
        return allocation

    def describe(self) -> dict[str, Any]:
        """The schedule and the options (the choices are in :attr:`history`)."""
        return {**super().describe(), "every": self.every, "probe": self.probe}


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnosis` measured and chose: does MGE pay on this model and data?

    Attributes:
        measured: the per-level gradient variances of the probe.
        costs: per-sample cost of one pass (forward and backward) at each level ``0..K``.
        loaded: samples in the loaded batch; the budget is one single-scale step of them.
        candidates: the least-variance allocation with exactly ``k`` coarser levels, ``k = 0..K``
            (``candidates[0]`` is plain SGD, variance x cost ratio 1).
        best: the candidate of least variance x cost (plain SGD when no level pays).
        resampled_ratios: the variance x cost ratio of the best allocation with coarser levels for
            each bootstrap resample in ``measured.resampled``, sorted (empty without resamples).
    """

    measured: LevelVariances
    costs: tuple[float, ...]
    loaded: int
    candidates: tuple[Allocation, ...]
    best: Allocation
    resampled_ratios: tuple[float, ...] = ()

    @classmethod
    def of(cls, measured: LevelVariances, costs: Sequence[float], loaded: int) -> Diagnosis:
        """Allocate for a budget of ``loaded`` fine samples with the given per-level costs."""
        costs = tuple(float(c) for c in costs[: len(measured.plain)])
        if len(costs) < len(measured.plain):
            raise ValueError(
                f"costs cover levels 0..{len(costs) - 1} but the variances reach level {len(measured.plain) - 1}; "
                "give one cost per measured level"
            )
        budget = loaded * costs[0]
        candidates = tuple(allocation_at(measured, costs, budget, k, bound=loaded) for k in range(len(measured.plain)))
        ratios = []
        for resample in measured.resampled if len(costs) > 1 else ():
            multiscale = [allocation_at(resample, costs, budget, k, bound=loaded) for k in range(1, len(costs))]
            ratio = min(multiscale, key=lambda a: a.variance * a.cost).variance_ratio
            if math.isfinite(ratio):  # a resample of one repeated sample has no variance at all
                ratios.append(ratio)
        best = min(candidates, key=lambda a: a.variance * a.cost)
        return cls(measured, costs, loaded, candidates, best, tuple(sorted(ratios)))

    def with_costs(self, costs: Sequence[float]) -> Diagnosis:
        """The same variances allocated with other per-level costs (e.g. measured seconds instead of FLOPs)."""
        return Diagnosis.of(self.measured, costs, self.loaded)

    @property
    def pays(self) -> bool:
        """Whether some allocation with coarser levels beats plain SGD's variance x cost."""
        return self.best.levels > 0 and self.best.variance_ratio < 1

    def ratio_interval(self, coverage: float = 0.8) -> tuple[float, float] | None:
        """The central ``coverage`` share of :attr:`resampled_ratios`, or ``None`` without resamples."""
        ratios = self.resampled_ratios
        if not ratios:
            return None
        cut = round((1 - coverage) / 2 * len(ratios), 9)  # resamples left out at each end (rounding noise removed)
        low = ratios[min(len(ratios) - 1, math.floor(cut))]
        high = ratios[max(0, math.ceil(len(ratios) - cut) - 1)]
        return low, high

    @property
    def pays_share(self) -> float | None:
        """The share of bootstrap resamples in which some allocation with coarser levels beats plain SGD."""
        ratios = self.resampled_ratios
        return sum(r < 1 for r in ratios) / len(ratios) if ratios else None

    @property
    def best_multiscale(self) -> Allocation | None:
        """The least variance x cost among the candidates with at least one coarser level (``None`` for ``K = 0``)."""
        multiscale = self.candidates[1:]
        return min(multiscale, key=lambda a: a.variance * a.cost) if multiscale else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs and JSON."""
        return {
            "loaded": self.loaded,
            "samples": self.measured.samples,
            "levels": len(self.measured.plain) - 1,
            "plain_variances": list(self.measured.plain),
            "difference_variances": list(self.measured.difference),
            "relative_differences": list(self.measured.relative_difference),
            "costs": list(self.costs),
            "candidates": [a.to_dict() for a in self.candidates],
            "best": self.best.to_dict(),
            "pays": self.pays,
            "resampled_ratios": list(self.resampled_ratios),
        }

    def report(self) -> str:
        """A plain-text table of the variances and costs per level, and the chosen allocation."""
        levels = len(self.measured.plain) - 1
        relative = self.measured.relative_difference
        lines = [f"{'level':>5} {'V(grad l_k)':>14} {'V(diff to k+1)':>15} {'|diff|/|grad|':>14} {'cost/sample':>12}"]
        for k in range(levels + 1):
            diff = f"{self.measured.difference[k]:15.4g}" if k < levels else f"{'':>15}"
            norm = f"{relative[k]:14.3f}" if k < len(relative) else f"{'':>14}"
            lines.append(f"{k:>5} {self.measured.plain[k]:14.4g} {diff} {norm} {self.costs[k]:12.4g}")
        best = self.best
        verdict = "MGE pays" if self.pays else "plain SGD is best here"
        lines.append(
            f"allocation for a step of {self.loaded} fine samples' cost: {list(best.batch_sizes)} ({best.levels} "
            f"levels); variance x cost {best.variance_ratio:.2f}x single-scale's: {verdict}"
            + (" (the optimum wants more samples than a loaded batch holds)" if best.capped else "")
        )
        interval = self.ratio_interval()
        if interval is not None:
            lines[-1] += (
                f"; best with coarser levels {interval[0]:.2f}-{interval[1]:.2f}x in 80 % of resamples of the "
                f"{self.measured.samples} probe samples"
            )
        return "\n".join(lines)


def diagnosis(
    level_loss: Callable[[slice, int], torch.Tensor],
    model: nn.Module,
    *,
    loaded: int,
    levels: int,
    samples: int = 8,
    costs: Sequence[float] | None = None,
    spatial_dims: int = 2,
    generators: Sequence[torch.Generator] = (),
    resamples: int = 200,
    seed: int = 0,
) -> Diagnosis:
    """Does MGE pay on this model and data? The measured ``V_k``, ``C_k`` and the allocation it would use.

    Runs in about the time of ``samples x (levels + 1)`` forward and backward passes of one sample.
    The budget is one single-scale step of the ``loaded`` samples; every number of coarser levels
    ``0..levels`` is a candidate, plain SGD included.

    Args:
        level_loss: ``level_loss(indices, level)`` on a loaded batch of ``loaded`` samples (the one
            the hosts build; for a plain loop, pose ``batch[indices]`` at ``level``).
        model: the network, at the weights to diagnose (initial or trained: the answer changes).
        loaded: samples in the loaded batch (the budget is one single-scale step of it).
        levels: deepest level to consider.
        samples: probe samples (at most ``loaded``).
        costs: per-sample cost per level (FLOPs, seconds); pixel fractions ``2**(-d k)`` by default.
        spatial_dims: 2 or 3, for the default costs.
        generators: the host's own generators.
        resamples: bootstrap resamples of the probe samples, for :meth:`Diagnosis.ratio_interval`
            (read from the same gradients, no extra passes).
        seed: seed of the resampling.

    Returns:
        The :class:`Diagnosis`; :meth:`Diagnosis.report` is :func:`diagnose`'s text.
    """
    measured = measure_level_variances(
        level_loss, model, min(samples, loaded), levels, generators, resamples=resamples, seed=seed
    )
    costs = list(costs) if costs is not None else [pixel_fraction(k, spatial_dims) for k in range(levels + 1)]
    return Diagnosis.of(measured, costs, loaded)


def diagnose(
    level_loss: Callable[[slice, int], torch.Tensor],
    model: nn.Module,
    *,
    loaded: int,
    levels: int,
    samples: int = 8,
    costs: Sequence[float] | None = None,
    spatial_dims: int = 2,
    generators: Sequence[torch.Generator] = (),
) -> str:
    """Does MGE pay on this model and data? A table of ``V_k``, ``C_k`` and the allocation it would use.

    Runs in about the time of ``samples x (levels + 1)`` forward and backward passes of one sample.
    ``mge-bench diagnose`` does the same from the command line, for a bundled task or your own trainer.

    Args:
        level_loss: ``level_loss(indices, level)`` on a loaded batch of ``loaded`` samples (the one
            the hosts build; for a plain loop, pose ``batch[indices]`` at ``level``).
        model: the network, at the weights to diagnose (initial or trained: the answer changes).
        loaded: samples in the loaded batch (the budget is one single-scale step of it).
        levels: deepest level to consider.
        samples: probe samples.
        costs: per-sample cost per level (FLOPs); pixel fractions ``2**(-d k)`` by default.
        spatial_dims: 2 or 3, for the default costs.
        generators: the host's own generators.

    Returns:
        A plain-text report: per level ``V(grad l_k)``, ``V(grad l_k - grad l_{k+1})``, ``C_k``; the
        chosen sizes; their variance x cost against single-scale SGD at equal cost.
    """
    return diagnosis(
        level_loss,
        model,
        loaded=loaded,
        levels=levels,
        samples=samples,
        costs=costs,
        spatial_dims=spatial_dims,
        generators=generators,
    ).report()
