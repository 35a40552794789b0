r"""Multiscale Gradient Estimation: the fine-level gradient as a telescoping sum over levels.

.. math::

    \hat g = \overline{\nabla \ell_K}(B_K)
        + \sum_{k<K} \overline{\nabla \ell_k - \nabla \ell_{k+1}}(B_k)

Each difference term evaluates its batch at two adjacent levels with the same samples and the
same random draws, so it is small and a small batch estimates it well; the coarse end takes the
largest batch because it is the cheapest. The estimator is unbiased for the fine-level gradient
whatever the coarse problems are, as long as level ``k`` is posed identically in the two terms
that use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from .batching import _tensor_leaves, batch_size_of
from .cost import StepCost, step_flops, step_work_units, term_levels
from .coupling import CoupledRandomness
from .gradient_check import GradientCheck
from .meshfree import at_level
from .nonfinite import NonFiniteError

__all__ = ["FusedLossError", "LevelLoss", "MGEStepStats", "check_nested", "mge_backward", "per_sample_mean"]

Parameters = Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | torch.nn.Module

LevelLoss = Callable[[Any, int], torch.Tensor]
"""``level_loss(batch, level) -> scalar``: mean loss of ``batch`` posed at ``level`` (0 = finest)."""


@dataclass(frozen=True)
class MGEStepStats:
    """What one MGE backward did.

    Attributes:
        term_values: value of each term, finest first (difference terms can be negative).
        fine_loss: loss of term 0's batch at the step's finest level, the quantity the
            estimator targets; log this, not the telescoped sum.
        batch_sizes: per-term batch sizes.
        base_level: level of the finest term.
        cost: work units (and FLOPs when per-level FLOPs were given) of the step.
        skipped: true when the host skipped the step because of a non-finite loss or gradient
            (then the values are NaN and no optimizer step was taken).
    """

    term_values: tuple[float, ...]
    fine_loss: float
    batch_sizes: tuple[int, ...]
    base_level: int
    cost: StepCost = field(default_factory=lambda: StepCost(0.0))
    skipped: bool = False

    @property
    def estimate(self) -> float:
        """The telescoped loss estimate, ``sum(term_values)``."""
        return float(sum(self.term_values))

    @property
    def levels(self) -> int:
        """Number of coarser levels used below the finest, ``K``."""
        return len(self.term_values) - 1


def _infer_spatial_dims(batch: Any) -> int:
    for tensor in _tensor_leaves(batch):
        if tensor.dim() in (4, 5):
            return tensor.dim() - 2
    raise ValueError(
        "cannot infer the number of spatial dimensions from the batch (no 4-D or 5-D tensor); "
        "pass spatial_dims=2 or spatial_dims=3"
    )


def _as_scalar_term(value: torch.Tensor, level: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"level_loss(batch, {level}) must return a scalar tensor (the mean loss of the batch), "
            f"got {shape}; reduce it with .mean()"
        )
    if not value.requires_grad:
        raise ValueError(
            f"level_loss(batch, {level}) returned a tensor that does not require grad; compute it "
            "from the model's output, outside torch.no_grad()"
        )
    # Differences of nearly equal half-precision losses lose their digits: subtract in >= float32.
    return value.to(torch.promote_types(value.dtype, torch.float32))


class FusedLossError(ValueError):
    """A level loss that fused passes cannot weigh: not one loss per sample."""


def per_sample_mean(loss: torch.Tensor, source: str, fix: str) -> torch.Tensor:
    """One loss per sample from an unreduced loss: the mean of each sample's elements, ``(B, ...) -> (B,)``.

    The hosts build fused passes' level losses with it from their loss functions.

    Args:
        loss: the loss function's output, batch axis first.
        source: what returned it, for the error (e.g. ``"loss_fn"``).
        fix: how to get an unreduced loss, for the error.

    Raises:
        FusedLossError: for a scalar, naming ``source`` and ``fix``.
    """
    if loss.dim() == 0:
        raise FusedLossError(f"fused=True needs one loss per sample, but {source} returned a scalar; {fix}")
    return loss.reshape(loss.shape[0], -1).mean(1)


def _as_per_sample(value: torch.Tensor, level: int, samples: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.shape[0] != samples:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise FusedLossError(
            f"with fused=True, level_loss(batch, {level}) must return one loss per sample, shape ({samples},), "
            f"got {shape}; reduce over every axis but the batch axis (e.g. loss.flatten(1).mean(1))"
        )
    if not value.requires_grad:
        raise ValueError(
            f"level_loss(batch, {level}) returned a tensor that does not require grad; compute it "
            "from the model's output, outside torch.no_grad()"
        )
    if type(value) is not torch.Tensor:  # e.g. MONAI's MetaTensor, whose per-sample metadata refuse slicing
        value = value.as_subclass(torch.Tensor)  # same storage, still in the graph
    return value.to(torch.promote_types(value.dtype, torch.float32))


def _first_leaf(batch: Any) -> torch.Tensor | None:
    leaves = _tensor_leaves(batch)
    return leaves[0] if leaves else None


def check_nested(batches: Sequence[Any]) -> None:
    """Refuse per-term batches that are not nested prefixes of one loaded batch (fused passes need them).

    Slices must start at 0; tensor batches must be views that start at the same element (as
    :func:`~mge_plugins.split_batch` makes them with ``mode="nested"``).

    Raises:
        ValueError: naming the first term that is not a prefix of the others.
    """
    for k, batch in enumerate(batches):
        if isinstance(batch, slice):
            nested = (batch.start or 0) == 0
        else:
            first, leaf = _first_leaf(batches[0]), _first_leaf(batch)
            nested = first is not None and leaf is not None and first.data_ptr() == leaf.data_ptr()
        if not nested:
            raise ValueError(
                f"fused passes need nested per-term batches (term k = the first N_k samples of one loaded batch), "
                f"but term {k} is not a prefix of the loaded batch; use split='nested' or fused=False"
            )


def _gradient_check(parameters: Parameters | GradientCheck | None) -> GradientCheck | None:
    if parameters is None or isinstance(parameters, GradientCheck):
        return parameters
    return GradientCheck(parameters)


def mge_backward(
    level_loss: LevelLoss,
    batches: Sequence[Any],
    *,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], AbstractContextManager[Any]] | None = None,
    base_level: int = 0,
    coupling: CoupledRandomness | bool = True,
    spatial_dims: int | None = None,
    flops_per_sample: Sequence[float] | None = None,
    parameters: Parameters | GradientCheck | None = None,
    fused: bool = False,
) -> MGEStepStats:
    """Accumulate the MGE gradient estimate into the parameters' ``.grad``, term by term.

    Term ``k < K`` is ``level_loss(batches[k], L + k) - level_loss(batches[k], L + k + 1)`` and
    term ``K`` is ``level_loss(batches[K], L + K)``, with ``L = base_level`` and
    ``K = len(batches) - 1``. Every level of every term is backpropagated before the next one is
    built (``+level_loss`` first, then ``-level_loss`` of the coarser level, replaying the same
    random draws), so peak memory is that of the largest single forward/backward, not of a
    difference term or of the sum. Gradients are not zeroed here (do that before, once per
    optimizer step) and no optimizer step is taken.

    Args:
        level_loss: ``level_loss(batch, level)`` returns the scalar mean loss of ``batch`` posed
            at ``level``. The caller decides how a sample is posed (restrict ``x`` and ``y``, or
            apply a coarse operator); the same call must define level ``k`` in every term.
        batches: the ``K + 1`` per-term batches, finest first (see
            :func:`~mge_plugins.split_batch`).
        backward: called with each signed level loss instead of ``loss.backward()`` (e.g.
            ``lambda t: scaler.scale(t).backward()`` for AMP).
        no_sync: a context-manager factory under which every pass except the last one runs, its
            forward included (DDP decides in the forward whether the backward all-reduces), e.g.
            ``ddp_model.no_sync`` so DistributedDataParallel all-reduces the accumulated gradient
            once per step instead of once per pass (:func:`~mge_plugins.ddp_no_sync`).
        base_level: level of the finest term (Full-Multiscale stages run above level 0).
        coupling: replay the random stream for the second half of every difference term
            (``True``, default), a :class:`CoupledRandomness` that also replays the caller's own
            generators, or ``False``.
        spatial_dims: 2 or 3 for the work units; inferred from the first 4-D/5-D tensor.
        flops_per_sample: per-sample FLOPs per absolute level, to report the step's FLOPs.
        parameters: parameters whose accumulated gradients are checked for NaN/inf after each
            term (a module or ``named_parameters()`` lets the error name the first one; a
            :class:`~mge_plugins.gradient_check.GradientCheck` names them only on failure).
            Finite entries pass however large they are. ``None`` checks the losses only; leave it
            ``None`` when a ``GradScaler`` scales the terms, since scaled gradients may overflow
            and the scaler skips such steps itself.
        fused: one weighted pass per level instead of two per difference term: level ``L + j``
            is evaluated once, on the larger of the batches of terms ``j - 1`` and ``j``, with
            weight ``+1/N_j`` on term ``j``'s samples and ``-1/N_{j-1}`` on term ``j - 1``'s, so a
            step takes ``K + 1`` passes instead of ``2K + 1`` and skips the ``N_{j-1}`` samples
            that the unfused estimator evaluates twice at level ``L + j``. The gradient is the
            unfused estimator's, exactly, when the batches are nested (``split="nested"``) and
            ``level_loss`` is a deterministic function of the samples: draw the noise once per
            loaded batch at the finest grid (or use stored measurements) instead of inside
            ``level_loss``. ``level_loss`` then returns one loss per sample, shape ``(N,)``, and
            ``coupling`` is not used.

    Returns:
        :class:`MGEStepStats` with per-term values, the fine loss and the step's cost.

    Raises:
        ValueError: for an empty batch list, an empty batch, or a ``level_loss`` that does not
            return a differentiable scalar.
        NonFiniteError: (a ``FloatingPointError``) when a level's loss is not finite, or when
            the gradients of ``parameters`` are not finite after the last pass; it names the
            first term and level concerned (losses first), and the first parameter. All checks
            are read with one device sync after the last pass. The gradients accumulated so far
            are then invalid: zero them and take no optimizer step.

    Example:
        >>> from mge_plugins import restrict
        >>> model = torch.nn.Conv2d(1, 1, 3, padding=1)
        >>> x = torch.randn(8, 1, 16, 16)
        >>> def level_loss(batch, level):
        ...     xk = restrict(batch, level)
        ...     return (model(xk) - xk).pow(2).mean()
        >>> stats = mge_backward(level_loss, [x[:2], x[:8]])
        >>> stats.batch_sizes
        (2, 8)
    """
    if len(batches) == 0:
        raise ValueError("batches is empty; give one batch per term (levels + 1 of them)")
    sizes = tuple(batch_size_of(b) for b in batches)
    if 0 in sizes:
        raise ValueError(f"per-term batch sizes {list(sizes)} include an empty batch; every term needs samples")
    if base_level < 0:
        raise ValueError(f"base_level must be >= 0, got {base_level}")
    if backward is None:
        backward = torch.Tensor.backward
    if fused:
        return _fused_backward(
            level_loss, batches, sizes, backward, no_sync, base_level, spatial_dims, flops_per_sample, parameters
        )
    if coupling is True:
        coupling = CoupledRandomness()
    last = len(batches) - 1
    values: list[torch.Tensor] = []
    fine_loss: torch.Tensor | None = None

    def sync_scope(final: bool) -> AbstractContextManager[Any]:
        # DDP decides in the forward pass whether the following backward all-reduces, so both the
        # forward and the backward of every pass but the last run under no_sync.
        return nullcontext() if no_sync is None or final else no_sync()

    gradients = _gradient_check(parameters)
    nonfinite_after: list[torch.Tensor] = []  # one flag per term
    seen: list[tuple[int, int, torch.Tensor]] = []  # (term, level, loss) of every pass
    # Every check is read with one device sync at the end of the step, not one per pass. A
    # non-finite loss is backpropagated meanwhile, which only touches .grad: the error is raised
    # before any optimizer step, the gradients are then cleared, and under DDP every rank sees
    # the same non-finite gradients after the all-reduce, so all ranks stop alike.

    def checked(value: torch.Tensor, k: int, level: int) -> torch.Tensor:
        seen.append((k, level, value.detach()))
        return value

    for k, batch in enumerate(batches):
        level = base_level + k
        if coupling and k < last:
            coupling.capture()
        with sync_scope(final=k == last):
            with at_level(level):
                fine = checked(_as_scalar_term(level_loss(batch, level), level), k, level)
            fine_value = fine.detach()
            backward(fine)
            del fine
        if k == 0:
            fine_loss = fine_value
        if k < last:
            if coupling:
                coupling.replay()
            with sync_scope(final=False):
                with at_level(level + 1):
                    coarse = checked(_as_scalar_term(level_loss(batch, level + 1), level + 1), k, level + 1)
                values.append(fine_value - coarse.detach())
                backward(-coarse)
                del coarse
        else:
            values.append(fine_value)
        if gradients is not None:
            nonfinite_after.append(gradients.flag())
    assert fine_loss is not None
    return _finish(
        seen,
        values,
        nonfinite_after,
        gradients,
        fine_loss,
        sizes,
        batches,
        base_level,
        spatial_dims,
        flops_per_sample,
        fused=False,
    )


def _read_scalars(tensors: list[torch.Tensor]) -> list[float]:
    """The values of 0-d tensors (losses, finiteness flags) as floats, with at most one device sync."""
    if all(t.device.type == "cpu" for t in tensors):  # nothing to synchronise: skip the stacking kernels
        return [float(t.item()) for t in tensors]
    device = next(t.device for t in tensors if t.device.type != "cpu")
    return torch.stack([t.to(device, torch.float64) for t in tensors]).tolist()  # the one sync of the step


def _finish(
    seen: list[tuple[int, int, torch.Tensor]],
    values: list[torch.Tensor],
    nonfinite_after: list[torch.Tensor],
    gradients: GradientCheck | None,
    fine_loss: torch.Tensor,
    sizes: tuple[int, ...],
    batches: Sequence[Any],
    base_level: int,
    spatial_dims: int | None,
    flops_per_sample: Sequence[float] | None,
    *,
    fused: bool,
) -> MGEStepStats:
    """Read every check of the step with one device sync, raise for the first failure, build the stats."""
    last = len(sizes) - 1
    read = _read_scalars([*(v for *_, v in seen), *values, fine_loss, *nonfinite_after])
    losses, term_values = read[: len(seen)], read[len(seen) : len(seen) + len(values)]
    fine, flags = read[len(seen) + len(values)], read[len(seen) + len(values) + 1 :]
    for (k, level, _), loss in zip(seen, losses, strict=True):
        if not math.isfinite(loss):
            raise NonFiniteError(k, term_levels(k, last + 1, base_level), "loss", level=level, value=loss)
    if any(flags):
        k = next(i for i, flag in enumerate(flags) if flag)
        assert gradients is not None
        first = gradients.first_nonfinite()
        raise NonFiniteError(k, term_levels(k, last + 1, base_level), "gradient", parameter=first)
    dims = spatial_dims if spatial_dims is not None else _infer_spatial_dims(batches[0])
    cost = StepCost(
        step_work_units(sizes, base_level=base_level, spatial_dims=dims, fused=fused),
        step_flops(sizes, flops_per_sample, base_level=base_level, fused=fused)
        if flops_per_sample is not None
        else None,
    )
    return MGEStepStats(tuple(term_values), fine, sizes, base_level, cost)


def _fused_backward(
    level_loss: LevelLoss,
    batches: Sequence[Any],
    sizes: tuple[int, ...],
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], AbstractContextManager[Any]] | None,
    base_level: int,
    spatial_dims: int | None,
    flops_per_sample: Sequence[float] | None,
    parameters: Parameters | None,
) -> MGEStepStats:
    """:func:`mge_backward` with ``fused=True``: one weighted pass per level over nested batches."""
    check_nested(batches)
    last = len(batches) - 1
    gradients = _gradient_check(parameters)
    seen: list[tuple[int, int, torch.Tensor]] = []
    nonfinite_after: list[torch.Tensor] = []
    means: list[torch.Tensor] = []  # mean loss of term j's samples at level L + j
    heads: list[torch.Tensor] = []  # mean loss of term j - 1's samples at level L + j
    for j in range(last + 1):
        level = base_level + j
        wider = j if j == 0 or sizes[j] >= sizes[j - 1] else j - 1
        with nullcontext() if no_sync is None or j == last else no_sync(), at_level(level):
            per_sample = _as_per_sample(level_loss(batches[wider], level), level, sizes[wider])
            mean = per_sample[: sizes[j]].mean()
            signed = mean
            if j > 0:
                head = per_sample[: sizes[j - 1]].mean()
                heads.append(head.detach())
                signed = mean - head
            seen.append((j, level, signed.detach()))
            means.append(mean.detach())
            backward(signed)
            del per_sample, signed
        if gradients is not None:
            nonfinite_after.append(gradients.flag())
    values = [means[k] - heads[k] for k in range(last)] + [means[last]]
    return _finish(
        seen,
        values,
        nonfinite_after,
        gradients,
        means[0],
        sizes,
        batches,
        base_level,
        spatial_dims,
        flops_per_sample,
        fused=True,
    )
