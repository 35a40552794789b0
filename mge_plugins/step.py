"""A functional MGE training step for hand-written PyTorch loops."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .batching import _map_tensors, batch_size_of, slice_batch
from .checks import check_batch_rank, check_integer_images
from .config import MGEConfig
from .cost import CostMeter
from .coupling import CoupledRandomness
from .estimator import MGEStepStats, _infer_spatial_dims, per_sample_mean
from .host_step import MultiscaleStep
from .nonfinite import NonFinitePolicy
from .restriction import restrict
from .strategies import MGEStrategy, StepPlan, Strategy

__all__ = ["mge_step", "restrict_batch"]

Pose = Callable[[Any, int], tuple[torch.Tensor, torch.Tensor]]


class _FixedPlan(Strategy):
    """The same given plan at every step."""

    name = "plan"

    def __init__(self, plan: StepPlan) -> None:
        self._plan = plan

    def plan(self, step: int) -> StepPlan:
        """The given plan."""
        return self._plan


class _Unmeasured(CostMeter):
    """A cost record that keeps nothing and measures no FLOPs (``mge_step`` without ``meter=``)."""

    def __init__(self) -> None:
        super().__init__(world_size=1, flops_per_sample=())

    def add(self, batch_sizes: Any, base_level: int = 0, fused: bool = False) -> Any:
        """Record nothing."""
        return None


_UNMEASURED = _Unmeasured()


def restrict_batch(batch: Any, levels: int, method: str = "area") -> Any:
    """Restrict every floating 4-D/5-D tensor of a (nested) batch ``levels`` times.

    Other leaves (labels, per-sample scalars) pass through unchanged; :func:`mge_step` refuses
    integer images, which would pass through at full size at every level.
    """
    if levels == 0:
        return batch

    def maybe_restrict(t: torch.Tensor) -> torch.Tensor:
        return restrict(t, levels, method) if t.dim() in (4, 5) and t.is_floating_point() else t

    return _map_tensors(batch, maybe_restrict)


def mge_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: Any,
    config: MGEConfig | StepPlan,
    *,
    pose: Pose | None = None,
    split: str = "nested",
    scaler: torch.amp.GradScaler | None = None,
    max_grad_norm: float | None = None,
    coupling: CoupledRandomness | bool = True,
    meter: CostMeter | None = None,
    nonfinite: str | NonFinitePolicy = "raise",
    step: int | None = None,
    fused: bool = False,
) -> MGEStepStats:
    """One optimizer step of MGE training: zero grads, term-by-term backward, one update.

    Args:
        model: the network, called as ``model(input)``.
        optimizer: its optimizer.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` (e.g. ``nn.MSELoss()``).
        batch: one loaded batch at the finest resolution, large enough for the split (see
            :func:`~mge_plugins.required_batch_size`): an ``(input, target)`` pair for the default
            ``pose``, anything ``pose`` understands otherwise.
        config: an :class:`MGEConfig` (steps start at level 0) or a strategy's
            :class:`StepPlan` (Full-Multiscale stages start at ``plan.level``).
        pose: ``pose(batch, level) -> (input, target)`` posing a per-term batch at ``level``;
            default restricts both tensors with the configured method. Use it to apply a coarse
            forward operator instead (draw noise with
            :func:`~mge_plugins.restricted_randn` to keep the terms coupled).
        split: ``"nested"`` or ``"disjoint"`` per-term batches (see
            :func:`~mge_plugins.split_batch`).
        scaler: a :class:`torch.amp.GradScaler` for mixed precision: each term is scaled, the
            gradients unscaled once before clipping and the step.
        max_grad_norm: clip the total gradient norm once, after all terms.
        coupling: see :func:`~mge_plugins.mge_backward`.
        meter: a :class:`CostMeter` that records the step.
        nonfinite: what a NaN/inf loss at any level, or a non-finite accumulated gradient,
            does: ``"raise"`` (default) a :class:`~mge_plugins.NonFiniteError` naming the term
            and level, with the gradients cleared and the weights and optimizer state untouched;
            ``"skip"`` clears the gradients and takes no optimizer step. Pass one
            :class:`~mge_plugins.NonFinitePolicy` to every step to warn once and count the
            skipped steps (``policy.skipped``). With a ``scaler``, gradients are left to the
            scaler's own inf/NaN check (scaled gradients may overflow legitimately).
        step: the global step; with a ``DistributedDataParallel`` model it is checked, with the
            plan, to be the same on every rank (one small all-reduce per step).
        fused: one weighted pass per level instead of two per difference term (see
            :func:`~mge_plugins.mge_backward`), the same gradient for fewer FLOPs. Needs the
            nested split, ``loss_fn`` without reduction (``nn.MSELoss(reduction="none")``) and a
            ``pose`` that depends on the samples only: put the noise in the batch, drawn once at
            the fine grid, rather than drawing it inside ``pose``. The first step checks this.

    Under ``torch.distributed``, wrap the model in ``DistributedDataParallel`` and give every rank
    its shard of the loaded batch (``DistributedSampler``): every pass but the last runs under
    the model's ``no_sync``, so the ranks' gradients are averaged once per step, and term ``k``
    is estimated from ``world_size * N_k`` samples.

    Returns:
        The :class:`MGEStepStats` of the step; ``stats.skipped`` is true for a skipped step.

    Raises:
        NonFiniteError: with ``nonfinite="raise"``, for a non-finite loss or gradient.

    Example:
        >>> model = torch.nn.Conv2d(1, 1, 3, padding=1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> x = torch.randn(16, 1, 32, 32)
        >>> stats = mge_step(model, opt, torch.nn.MSELoss(), (x + 0.1, x), MGEConfig(levels=1, batch_size=4))
        >>> stats.batch_sizes
        (4, 16)
    """
    strategy = MGEStrategy(config) if isinstance(config, MGEConfig) else _FixedPlan(config)
    method = strategy.plan(0).restriction
    if pose is None:  # the default pose restricts every image tensor, so integer images would stay fine
        check_batch_rank(batch[0], what="the inputs")
        check_batch_rank(batch[1], what="the targets")
        check_integer_images(batch)

        def pose(b: Any, level: int) -> tuple[torch.Tensor, torch.Tensor]:
            return restrict_batch(b[0], level, method), restrict_batch(b[1], level, method)

    loaded = batch_size_of(batch)

    def level_loss(indices: slice, level: int) -> torch.Tensor:
        whole = indices.start == 0 and indices.stop == loaded  # the whole batch: no slicing to do
        inputs, targets = pose(batch if whole else slice_batch(batch, indices.start, indices.stop), level)
        loss = loss_fn(model(inputs), targets)
        if not fused:
            return loss
        return per_sample_mean(loss, "loss_fn", 'build it without reduction (e.g. nn.MSELoss(reduction="none"))')

    dims = _infer_spatial_dims(batch) if meter is None else meter.spatial_dims
    runner = MultiscaleStep(
        strategy,
        meter if meter is not None else _UNMEASURED,
        split=split,
        nonfinite=nonfinite,
        spatial_dims=dims,
        warn_cost=False,
        fused=fused,
    )
    runner.checked = True  # hand-written loops check their own sizes
    # a new runner per call: the determinism of fused passes is checked on the run's first step only
    runner.determinism_checked = not (step == 0 or (meter is not None and meter.steps == 0))
    scaling = scaler is not None and scaler.is_enabled()
    optimizer.zero_grad(set_to_none=True)
    outcome = runner.run(
        0 if step is None else step,
        loaded,
        level_loss,
        model=model,
        backward=None if scaler is None else (lambda term: scaler.scale(term).backward()),
        check_gradients=not scaling,
        generators=coupling.generators if isinstance(coupling, CoupledRandomness) else (),
        couple=coupling is not False,
        zero_grad=lambda: optimizer.zero_grad(set_to_none=True),
        optimizer=optimizer,
    )
    assert outcome.stats is not None
    if outcome.skipped:
        return outcome.stats
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm is not None:
        clear = lambda: optimizer.zero_grad(set_to_none=True)  # noqa: E731
        if runner.clip(model.parameters(), max_grad_norm, scaling=scaling, zero_grad=clear) is None:
            return replace(outcome.stats, skipped=True)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    first = step == 0 or (meter is not None and meter.steps == 1)
    updated = (p for group in optimizer.param_groups for p in group["params"])  # a flat list: no module walk
    if first or any(p.dtype in (torch.float16, torch.bfloat16) for p in updated):
        runner.after_update(model)  # half-precision weights can overflow in the update itself
    return outcome.stats
