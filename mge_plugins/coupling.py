"""Keep the two halves of an MGE difference term on the same random draws.

Term ``k`` of the estimator is ``level_loss(B_k, k) - level_loss(B_k, k + 1)``. Its variance is
small only if both halves see the same samples *and the same randomness*: the same noise
realisation, the same random mask, the same per-sample blur. Two tools give that:

- :class:`CoupledRandomness` captures the state of PyTorch's global generators (CPU and every
  initialised CUDA device) and of any extra :class:`torch.Generator` a caller owns (e.g. the
  ``rng`` of a physics operator) before the first half, and restores it before the second half.
  :func:`~mge_plugins.mge_backward` does this for every difference term by default.
- :func:`restricted_randn` draws noise at the *finest* resolution and restricts it to the level
  asked for. With the random stream replayed, both halves of a term draw the same fine noise,
  so the coarse half sees exactly the restriction of the fine half's noise. With area
  restriction, Gaussian noise of std ``sigma`` becomes ``sigma / 2**(d/2)`` per level, which is
  the coarse noise model's own law, so the coupling costs nothing in correctness.

Randomness drawn at a shape that depends on the level (``torch.randn`` of the coarse shape) is
replayed from the same stream but is *not* spatially coupled: draw at the fine shape and
restrict instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .restriction import restrict

__all__ = ["CoupledRandomness", "restricted_randn"]


class CoupledRandomness:
    """Snapshot and replay of random number generator states.

    Args:
        generators: extra generators to capture and replay besides PyTorch's global ones
            (for instance the ``rng`` generators of noise models or physics generators).
        include_cuda: also capture the global generators of every initialised CUDA device.

    Example:
        >>> coupling = CoupledRandomness()
        >>> coupling.capture()
        >>> a = torch.randn(3)
        >>> coupling.replay()
        >>> b = torch.randn(3)
        >>> torch.equal(a, b)
        True
    """

    def __init__(self, generators: Iterable[torch.Generator] = (), include_cuda: bool = True) -> None:
        self.generators: list[torch.Generator] = list(generators)
        self.include_cuda = include_cuda
        self._cpu: torch.Tensor | None = None
        self._cuda: list[torch.Tensor] | None = None
        self._extra: list[torch.Tensor] = []

    def capture(self) -> None:
        """Record the current state of every generator."""
        self._cpu = torch.get_rng_state()
        cuda_live = self.include_cuda and torch.cuda.is_available() and torch.cuda.is_initialized()
        self._cuda = torch.cuda.get_rng_state_all() if cuda_live else None
        self._extra = [g.get_state() for g in self.generators]

    def replay(self) -> None:
        """Restore every generator to the state recorded by the last :meth:`capture`."""
        if self._cpu is None:
            raise RuntimeError("CoupledRandomness.replay() called before capture()")
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)
        for generator, state in zip(self.generators, self._extra):
            generator.set_state(state)


def restricted_randn(
    fine_shape: Sequence[int],
    level: int,
    *,
    method: str = "area",
    keep_std: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard normal noise drawn at the finest resolution and restricted to ``level``.

    Args:
        fine_shape: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` of the finest grid.
        level: level to restrict to (0 returns the fine draw).
        method: restriction method.
        keep_std: rescale so the noise keeps unit std per pixel at every level, i.e. the coarse
            problem keeps the fine noise level. Without it, ``"area"`` lowers the std by
            ``2**(d/2)`` per level (the law of the restricted fine measurement). Supported for
            ``"area"`` and ``"nearest"``, whose restricted white noise stays white.
        dtype: dtype of the draw.
        device: device of the draw.
        generator: generator to draw from (default: PyTorch's global one).

    Returns:
        Tensor of shape ``fine_shape`` restricted ``level`` times. With ``"area"`` its std is
        ``2**(-d * level / 2)``, or 1 with ``keep_std``.

    Example:
        >>> noise = restricted_randn((2, 1, 64, 64), 2, keep_std=True)
        >>> noise.shape
        torch.Size([2, 1, 16, 16])
    """
    noise = restrict(torch.randn(tuple(fine_shape), dtype=dtype, device=device, generator=generator), level, method)
    if not keep_std or method == "nearest":
        return noise
    if method != "area":
        raise ValueError(
            f"keep_std=True needs a restriction that keeps white noise white ('area' or 'nearest'), "
            f"got {method!r}; use method='area'"
        )
    return noise * 2.0 ** ((len(fine_shape) - 2) * level / 2)
