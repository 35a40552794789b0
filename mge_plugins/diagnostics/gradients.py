"""Does MGE pay on this problem? Gradient variance at equal cost, and level-difference norms.

MGE's variance is small when ``grad l_k - grad l_{k+1}`` is small for every sample, so that the small
fine batches estimate the differences well while the large coarse batch carries the mean.
:func:`level_difference_norms` measures those differences per level;
:func:`estimator_variance` measures any gradient estimator's variance over random batches, so
MGE and single-scale SGD can be compared at the same cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["EstimatorVariance", "LevelNorms", "estimator_variance", "flat_gradient", "level_difference_norms"]


def flat_gradient(loss_backward: Callable[[], Any], params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    """Zero the gradients, run ``loss_backward()`` (which calls ``backward``), return them flattened.

    Args:
        loss_backward: computes a loss and calls ``backward`` on it (or several, accumulating).
        params: the parameters whose gradients are read; they are left without gradients.

    Returns:
        The gradients concatenated in ``params`` order, float64 and detached; parameters without a
        gradient contribute zeros.
    """
    for p in params:
        p.grad = None
    loss_backward()
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).double() for p in params])
    for p in params:
        p.grad = None
    return flat


@dataclass(frozen=True)
class EstimatorVariance:
    """Spread of a stochastic gradient estimator over independent draws.

    Attributes:
        variance: ``E||ĝ - E ĝ||²`` (trace of the covariance, unbiased over the draws).
        mean_norm: ``||E ĝ||`` of the draws' mean.
        draws: number of draws.
        cost: cost of one draw (work units or FLOPs), as given.
    """

    variance: float
    mean_norm: float
    draws: int
    cost: float

    @property
    def variance_times_cost(self) -> float:
        """Variance x cost: the variance an estimator would have at unit cost. Lower is better."""
        return self.variance * self.cost

    def to_dict(self) -> dict[str, float]:
        """Plain data, with :attr:`variance_times_cost`."""
        return {**asdict(self), "variance_times_cost": self.variance_times_cost}


def estimator_variance(draw: Callable[[], torch.Tensor], draws: int, cost: float = 1.0) -> EstimatorVariance:
    """Variance of the estimator ``draw()`` (each call: a fresh random batch, a flat gradient).

    Args:
        draw: returns one draw of the estimator, e.g. :func:`flat_gradient` of a fresh batch.
        draws: number of independent draws, at least 2.
        cost: cost of one draw, recorded for :attr:`EstimatorVariance.variance_times_cost`.

    Returns:
        The variance, the norm of the mean, the number of draws and the cost.

    Raises:
        ValueError: for fewer than 2 draws.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> v = estimator_variance(lambda: torch.randn(1000, generator=g, dtype=torch.float64), 200)
        >>> abs(v.variance / 1000 - 1.0) < 0.05
        True
    """
    if draws < 2:
        raise ValueError(f"a variance needs at least 2 draws, got {draws}")
    samples = torch.stack([draw().double() for _ in range(draws)])
    mean = samples.mean(dim=0)
    variance = (samples - mean).pow(2).sum(dim=1).sum().item() / (draws - 1)
    return EstimatorVariance(variance, mean.norm().item(), draws, float(cost))


@dataclass(frozen=True)
class LevelNorms:
    """Per-sample gradient norms of one level pair, averaged over samples.

    Attributes:
        level: the finer level ``k`` of the pair.
        difference: mean over samples of ``||grad l_k - grad l_{k+1}||``.
        gradient: mean over samples of ``||grad l_k||``.
    """

    level: int
    difference: float
    gradient: float

    @property
    def relative(self) -> float:
        """``difference / gradient``: below 1, the difference is cheaper to estimate than the gradient."""
        return self.difference / self.gradient if self.gradient else float("nan")

    def to_dict(self) -> dict[str, float]:
        """Plain data, with :attr:`relative`."""
        return {**asdict(self), "relative": self.relative}


def level_difference_norms(
    level_loss: Callable[[Any, int], torch.Tensor],
    samples: Iterable[Any],
    levels: int,
    params: Sequence[torch.nn.Parameter],
    *,
    coupled: bool = True,
) -> list[LevelNorms]:
    """``||grad l_k(i) - grad l_{k+1}(i)||`` and ``||grad l_k(i)||`` per level ``k < levels``, averaged over samples.

    Args:
        level_loss: ``level_loss(sample, level)`` as for :func:`~mge_plugins.mge_backward`.
        samples: single-sample (or small) batches.
        levels: number of coarser levels ``K``; pairs ``(k, k+1)`` for ``k < K``.
        params: the parameters to differentiate.
        coupled: evaluate every level of a sample on the same random draws, as the MGE terms do.

    Returns:
        One :class:`LevelNorms` per level pair, finest first.

    Raises:
        ValueError: when ``samples`` is empty.
    """
    from ..coupling import CoupledRandomness

    differences = [0.0] * levels
    gradients = [0.0] * levels
    count = 0
    for sample in samples:
        rng = CoupledRandomness()
        rng.capture()
        grads = []
        for level in range(levels + 1):
            if coupled:
                rng.replay()
            grads.append(flat_gradient(lambda lv=level, s=sample: level_loss(s, lv).backward(), params))
        for k in range(levels):
            differences[k] += (grads[k] - grads[k + 1]).norm().item()
            gradients[k] += grads[k].norm().item()
        count += 1
    if count == 0:
        raise ValueError("samples is empty")
    return [LevelNorms(k, differences[k] / count, gradients[k] / count) for k in range(levels)]
