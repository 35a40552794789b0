"""The host-independent part of one multiscale training step, shared by every entry point.

:func:`~mge_plugins.mge_step`, ``mge_deepinv.MultiscaleTrainer.compute_loss`` and
``mge_monai.MultiscaleIteration`` are thin shells around :class:`MultiscaleStep`: a host loads
one batch, says how a run of its samples is posed at a level (``level_loss(indices, level)``,
with ``indices`` a :class:`slice` of the loaded batch), zeroes the gradients, calls
:meth:`MultiscaleStep.run`, and takes its optimizer step unless the step was skipped. The core
does the rest, the same way for every host:

- the plan of the global step, fitted to the loaded batch (:func:`~mge_plugins.batching.fit_sizes`
  is the one rule for a short last batch);
- agreement of the ranks on the step and the plan under ``DistributedDataParallel``;
- on the first step, the image sizes against the coarsest level and a dry run of the network
  there, which leaves weights, buffers and random streams as they were;
- the per-level FLOP probe, on one sample, with the random streams captured and replayed;
- the per-term index ranges and :func:`~mge_plugins.mge_backward`;
- the non-finite policy, and the cost record.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .batching import fit_sizes, term_slices
from .checks import check_deterministic, check_network
from .cost import CostMeter, StepCost, measure_level_flops, step_work_units
from .coupling import CoupledRandomness
from .distributed import check_ranks_agree, ddp_no_sync, mean_over_ranks, plan_fingerprint
from .estimator import MGEStepStats, mge_backward
from .gradient_check import GradientCheck
from .meshfree import at_level
from .nonfinite import NonFiniteError, NonFinitePolicy
from .strategies import StepPlan, Strategy, StrategyOptions, get_strategy

__all__ = [
    "DEFAULT_BUDGET",
    "HOST_OPTIONS",
    "MultiscaleStep",
    "StepOutcome",
    "check_resumed_strategy",
    "host_options",
    "validate_host_options",
]

IndexLoss = Callable[[slice, int], torch.Tensor]
"""``level_loss(indices, level) -> scalar``: mean loss of the loaded samples ``indices`` posed at ``level``."""


@dataclass(frozen=True)
class StepOutcome:
    """What :meth:`MultiscaleStep.run` did.

    Attributes:
        plan: the step's plan, fitted to the loaded batch.
        stats: the estimator's statistics (NaN values for a skipped step), or ``None`` when the
            host's own single-scale step ran.
        native: what the host's own step returned (``strategy="single"``), else ``None``.
        skipped: the step was skipped by the non-finite policy: the gradients are cleared and
            the host must not take an optimizer step.
    """

    plan: StepPlan
    stats: MGEStepStats | None = None
    native: Any = None
    skipped: bool = False


class MultiscaleStep:
    """One strategy's training steps, for any host.

    Args:
        strategy: the built strategy (see :func:`~mge_plugins.build_strategy`).
        meter: the run's cost record; its ``flops_per_sample`` is measured on the first step
            when it is ``None``.
        split: ``"nested"`` or ``"disjoint"`` per-term batches.
        nonfinite: ``"raise"``, ``"skip"`` or a :class:`~mge_plugins.NonFinitePolicy`.
        size_multiple: divisor the network needs at every level; ``None`` dry-runs the network at
            the coarsest level on the first step instead.
        spatial_dims: 2 or 3.
        warn_cost: warn when the finest step's per-term batches cost more than a single-scale step
            of ``meter.baseline_batch_size`` samples (a loaded batch too small for the levels).
        fused: one weighted pass per level (see :func:`~mge_plugins.mge_backward`); the level
            loss then returns one loss per sample and must be deterministic given the samples,
            which the first step checks.

    Example:
        >>> from mge_plugins import build_strategy, restrict
        >>> model = torch.nn.Conv2d(1, 1, 3, padding=1)
        >>> x = torch.randn(8, 1, 16, 16)
        >>> strategy = build_strategy("mge", levels=1, loaded_batch_size=8)
        >>> step = MultiscaleStep(strategy, CostMeter(baseline_batch_size=8))
        >>> def level_loss(indices, level):
        ...     xk = restrict(x[indices], level)
        ...     return (model(xk) - xk).pow(2).mean()
        >>> step.run(0, 8, level_loss, model=model).plan.batch_sizes
        (2, 8)
    """

    def __init__(
        self,
        strategy: Strategy,
        meter: CostMeter,
        *,
        split: str = "nested",
        nonfinite: str | NonFinitePolicy = "raise",
        size_multiple: int | None = None,
        spatial_dims: int = 2,
        warn_cost: bool = True,
        fused: bool = False,
    ) -> None:
        if fused and split != "nested":
            raise ValueError(f"fused passes need split='nested' (the terms share their samples), got split={split!r}")
        self.fused = fused
        self.strategy = strategy
        self.meter = meter
        self.split = split
        self.policy = NonFinitePolicy.of(nonfinite)
        self.size_multiple = size_multiple
        self.spatial_dims = spatial_dims
        self.checked = False
        self.determinism_checked = False  # fused passes: checked once, on the first step run
        self._weights_checked: tuple[str, ...] | None = None
        self.last_allocation: Any = None
        if warn_cost:
            self._warn_if_dearer()

    def _warn_if_dearer(self) -> None:
        """Warn when the finest step's per-term batches cost more than a single-scale step."""
        sizes = self.strategy.max_batch_sizes
        if self.native_single or len(sizes) < 2:
            return
        work = step_work_units(sizes, spatial_dims=self.spatial_dims, fused=self.fused)
        baseline = self.meter.baseline_batch_size
        if work >= baseline:
            warnings.warn(
                f"the per-term batches {list(sizes)} cost {work / baseline:.2f}x a single-scale step of {baseline} "
                f"samples, so MGE saves nothing here; load larger batches (at least "
                f"{2**self.spatial_dims}x the finest term per coarser level) or use fewer levels",
                stacklevel=3,
            )

    def after_update(self, model: nn.Module) -> None:
        """Check, after the first optimizer step and after any change of dtype, that the weights are finite.

        Half-precision weights updated by Adam overflow on the first step and the loss of that step
        is still finite: without this check, every later step would be skipped as non-finite.

        Raises:
            NonFiniteError: naming the first non-finite parameter and the likely cause.
        """
        dtypes = tuple(sorted({str(p.dtype) for p in model.parameters()}))
        if dtypes == self._weights_checked:
            return
        self._weights_checked = dtypes
        for name, parameter in model.named_parameters():
            if not bool(torch.isfinite(parameter.detach()).all()):
                raise NonFiniteError(0, (0,), "weights", parameter=name)

    @property
    def native_single(self) -> bool:
        """Whether the host's own step stands in for the estimator (``strategy="single"``)."""
        return self.strategy.name == "single"

    def plan(self, step: int, loaded: int) -> StepPlan:
        """The plan of global step ``step`` for a loaded batch of ``loaded`` samples."""
        plan = self.strategy.plan(step)
        sizes = fit_sizes(plan.batch_sizes, loaded, self.split)
        return plan if sizes == plan.batch_sizes else replace(plan, batch_sizes=sizes)

    def check(
        self,
        level_loss: IndexLoss,
        model: nn.Module,
        input_shape: Sequence[int],
        generators: Sequence[torch.Generator] = (),
    ) -> None:
        """Image sizes against the coarsest level and a dry run there (once; :meth:`run` calls it).

        Args:
            level_loss: the host's level loss.
            model: the network.
            input_shape: the fine network input's shape ``(B, C, *spatial)``.
            generators: the host's own generators, replayed after the dry run.
        """
        self.checked = True
        if self.native_single:
            return
        coarsest = self.strategy.coarsest_level
        self.strategy.check_image_size(tuple(input_shape[2:]), multiple=self.size_multiple or 1)
        if coarsest > 0 and self.size_multiple is None:

            def dry_run() -> torch.Tensor:
                with at_level(coarsest):
                    return level_loss(slice(0, 1), coarsest)

            check_network(
                dry_run,
                model,
                level=coarsest,
                input_shape=input_shape,
                generators=generators,
            )

    def run(
        self,
        step: int,
        loaded: int,
        level_loss: IndexLoss,
        *,
        model: nn.Module,
        input_shape: Sequence[int] | None = None,
        backward: Callable[[torch.Tensor], None] | None = None,
        check_gradients: bool = True,
        generators: Iterable[torch.Generator] = (),
        couple: bool = True,
        native: Callable[[], Any] | None = None,
        zero_grad: Callable[[], None] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> StepOutcome:
        """Accumulate one step's gradient into ``model`` (no optimizer step is taken here).

        Args:
            step: the global step (0-based), which drives the strategy.
            loaded: samples in the loaded batch.
            level_loss: ``level_loss(indices, level)``, the mean loss of the loaded samples
                ``indices`` (a :class:`slice`) posed at ``level``; the same call must define
                level ``k`` in every term. With ``fused=True``, one loss per sample instead.
            model: the network (a ``DistributedDataParallel`` wrapper included).
            input_shape: the fine network input's shape, for the first step's checks.
            backward: called on each signed level loss instead of ``loss.backward()`` (AMP).
            check_gradients: check the accumulated gradients for NaN/inf; turn it off when a
                ``GradScaler`` scales the terms (it checks them itself).
            generators: the host's own generators (noise models, physics generators), replayed
                for the second half of every difference term and after the probes.
            couple: replay the random streams for the second half of every difference term
                (``False`` only for measuring what the coupling is worth).
            native: the host's own single-scale step, run instead of the estimator when the
                strategy is ``"single"`` (so that strategy reproduces the host bit for bit).
            zero_grad: clears the gradients of a skipped step (default: the model's ``.grad``).
            optimizer: the host's optimizer: the gradients checked are then those of its
                parameters, exactly what the step updates, read from its flat parameter groups
                instead of walking the model's modules every step (default: the model's).

        Returns:
            A :class:`StepOutcome`.

        Raises:
            NonFiniteError: with ``nonfinite="raise"``, for a non-finite loss or gradient; the
                gradients are cleared first.
        """
        owned = list(generators)
        per_sample = level_loss
        if self.fused:  # fused passes take one loss per sample; the checks and probes take the mean
            level_loss = _mean_loss(per_sample)
        plan = self.plan(step, loaded)
        no_sync = ddp_no_sync(model)
        if no_sync is not None:  # ranks must run the same step, hence the same stage and plan
            check_ranks_agree(step=step, plan=plan_fingerprint(plan))
        if not self.checked and input_shape is not None:
            self.check(level_loss, model, input_shape, owned)
        if self.fused and not self.determinism_checked:
            self.determinism_checked = True
            if self.strategy.coarsest_level > 0:
                check_deterministic(level_loss, self.strategy.coarsest_level, owned)
        if self.meter.flops_per_sample is None:
            self._probe_flops(level_loss, model, no_sync, owned)
        if native is not None and self.native_single:
            result = native()
            self.meter.add(plan.batch_sizes, plan.level)
            return StepOutcome(plan, native=result)
        fused = self.fused and len(plan.batch_sizes) > 1
        try:
            stats = mge_backward(
                per_sample if fused else level_loss,
                term_slices(plan.batch_sizes, self.split),
                backward=backward,
                no_sync=no_sync,
                base_level=plan.level,
                coupling=CoupledRandomness(owned) if couple else False,
                spatial_dims=self.spatial_dims,
                flops_per_sample=self.meter.flops_per_sample or None,
                parameters=self._gradient_check(model, optimizer) if check_gradients else None,
                fused=fused,
            )
        except NonFiniteError as error:
            (zero_grad or (lambda: model.zero_grad(set_to_none=True)))()
            self.policy.handle(error)  # raises in "raise" mode
            return self.skipped(plan)
        self.policy.passed()
        self.meter.add(plan.batch_sizes, plan.level, fused)
        observe = getattr(self.strategy, "observe", None)
        if observe is not None and self.strategy.due(step):  # an adaptive allocation measures after the step
            with nullcontext() if no_sync is None else no_sync():
                self.last_allocation = observe(
                    step,
                    level_loss,
                    model,
                    loaded,
                    self.meter.flops_per_sample or None,
                    owned,
                    mean_over_ranks if no_sync is not None else None,
                )
        return StepOutcome(plan, stats=stats)

    @staticmethod
    def _gradient_check(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> GradientCheck:
        """The gradients a step checks: the optimizer's parameters when it is known, named from the model."""
        if optimizer is None:
            return GradientCheck(model)
        return GradientCheck([p for group in optimizer.param_groups for p in group["params"]], names=model)

    def skipped(self, plan: StepPlan) -> StepOutcome:
        """Record a skipped step (its cost counts: the work was done) and describe it."""
        self.meter.add(plan.batch_sizes, plan.level, self.fused)
        work = step_work_units(
            plan.batch_sizes, base_level=plan.level, spatial_dims=self.spatial_dims, fused=self.fused
        )
        nan = float("nan")
        stats = MGEStepStats(
            tuple(nan for _ in plan.batch_sizes), nan, plan.batch_sizes, plan.level, StepCost(work), skipped=True
        )
        return StepOutcome(plan, stats=stats, skipped=True)

    def clip(
        self,
        parameters: Iterable[torch.Tensor],
        max_norm: float,
        *,
        scaling: bool = False,
        zero_grad: Callable[[], None],
    ) -> float | None:
        """Clip the total gradient norm once; a non-finite norm is a non-finite gradient.

        ``clip_grad_norm_`` of an overflowing norm scales every gradient to zero (or NaN) and
        returns normally, so the norm it returns is checked: without a scaler, a non-finite norm
        clears the gradients and goes to the non-finite policy (with a ``GradScaler`` its own
        check skips the step).

        Returns:
            The norm before clipping, or ``None`` when the step must be skipped.

        Raises:
            NonFiniteError: in ``"raise"`` mode, for a non-finite norm without a scaler.
        """
        norm = nn.utils.clip_grad_norm_(parameters, max_norm)
        if scaling or bool(torch.isfinite(norm)):
            return float(norm)
        zero_grad()
        self.policy.handle(NonFiniteError(0, (0,), "gradient", parameter="the total gradient norm before clipping"))
        return None

    def _probe_flops(
        self,
        level_loss: IndexLoss,
        model: nn.Module,
        no_sync: Callable[[], AbstractContextManager[Any]] | None,
        generators: list[torch.Generator],
    ) -> None:
        """Per-level FLOPs on one sample, leaving every random stream as it was."""
        rng = CoupledRandomness(generators)
        rng.capture()
        try:
            with nullcontext() if no_sync is None else no_sync():  # no DDP reduction for the probe
                self.meter.flops_per_sample = measure_level_flops(
                    level_loss, slice(0, 1), self.strategy.coarsest_level, model.parameters()
                )
        finally:
            rng.replay()


def _mean_loss(per_sample: IndexLoss) -> IndexLoss:
    """The scalar level loss of a per-sample one."""

    def level_loss(indices: slice, level: int) -> torch.Tensor:
        return per_sample(indices, level).mean()

    return level_loss


DEFAULT_BUDGET: float = 0.33
"""The hosts' default ``budget``: a third of the single-scale compute of the user's epochs.

Chosen by measurement: at this share, 3.03x fewer FLOPs, Full-Multiscale ended 0.18 to 0.74 dB
above single-scale in the median of five seeds on each of the four bundled ``mge-train`` tasks,
no run more than 0.10 dB below, where the user's own number of steps (``"steps"``, 5.75x fewer)
stayed 0.15 to 1.08 dB below (``scripts/budget_seeds.py``; BENCHMARKS.md, "The default budget").
"""

HOST_OPTIONS: dict[str, str] = {
    "levels": "levels",
    "mge_batch_size": "batch_size",
    "growth": "growth",
    "batch_sizes": "batch_sizes",
    "restriction": "restriction",
    "iterations": "iterations",
    "mge_levels": "mge_levels",
    "split": "split",
    "allocation": "allocation",
    "reestimate_every": "reestimate_every",
    "budget": "budget",
}
"""The strategy options every host takes, by the host's attribute name, with their :class:`StrategyOptions` field."""


def host_options(host: Any, **fixed: Any) -> dict[str, Any]:
    """:class:`~mge_plugins.StrategyOptions` keywords from a host's attributes named as in :data:`HOST_OPTIONS`.

    Args:
        host: a trainer or iteration with those attributes (``iterations=None`` means the run's length).
        fixed: what the host knows itself (``loaded_batch_size``, ``spatial_dims``, ``iterations``).
    """
    options = {spec: getattr(host, name) for name, spec in HOST_OPTIONS.items()}
    if options["iterations"] is None:
        del options["iterations"]
    options.update(fixed)
    return options


def validate_host_options(host: Any) -> None:
    """Check a host's ``strategy``, strategy options and ``nonfinite`` when it is constructed.

    Typos then fail where they were written, not at the first iteration.

    Raises:
        ValueError: for an unknown strategy name or a bad option, naming it and the fix.
        TypeError: for a ``strategy`` that is neither a name nor a :class:`~mge_plugins.Strategy`.
    """
    strategy = host.strategy
    if isinstance(strategy, str):
        get_strategy(strategy)
    elif not isinstance(strategy, Strategy):
        raise TypeError(
            f"strategy must be a strategy name or a mge_plugins.Strategy, got {type(strategy).__name__}; "
            "use e.g. strategy='full-multiscale'"
        )
    StrategyOptions(**host_options(host))
    NonFinitePolicy.of(host.nonfinite)


def _strategy_summary(described: dict[str, Any]) -> str:
    """A one-line view of :meth:`Strategy.describe`'s data, for messages."""
    name = described.get("strategy", "?")
    if "stages" in described:
        stages = ", ".join(f"L{s['level']}x{s['stop'] - s['start']}{s['batch_sizes']}" for s in described["stages"])
        return f"{name!r} (stages {stages})"
    plan = described.get("plan", {})
    return f"{name!r} (level {plan.get('level')}, terms {plan.get('batch_sizes')})"


def check_resumed_strategy(saved: dict[str, Any] | None, strategy: Strategy, *, allow_change: bool = False) -> bool:
    """Compare the strategy a checkpoint was trained with against the one a resumed run builds.

    A resumed run applies its own plan from the restored step: with another strategy (or other
    levels, sizes or stages) it would silently train a schedule nobody chose and mix the cost
    record of two runs.

    Args:
        saved: the checkpoint's ``strategy.describe()``.
        strategy: the strategy of the resumed run.
        allow_change: accept a different strategy (fine-tuning from another one); the cost record
            then starts again, and a warning says so.

    Returns:
        Whether the checkpoint's cost record may be continued.

    Raises:
        ValueError: for a different strategy without ``allow_change``, naming both.
    """
    if saved is None:
        return True
    current = strategy.describe()
    if json.dumps(saved, sort_keys=True, default=str) == json.dumps(current, sort_keys=True, default=str):
        return True
    if not allow_change:
        raise ValueError(
            f"the checkpoint was trained with strategy {_strategy_summary(saved)} but this run builds "
            f"{_strategy_summary(current)}; resume with the same strategy options (and the same run length), or pass "
            "allow_strategy_change=True to fine-tune from it with the new strategy (the cost record then starts again)"
        )
    warnings.warn(
        f"resuming a checkpoint of strategy {_strategy_summary(saved)} with {_strategy_summary(current)} "
        "(allow_strategy_change=True): the cost record starts again at zero",
        stacklevel=3,
    )
    return False
