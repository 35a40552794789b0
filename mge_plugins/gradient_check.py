"""The non-finite gradient check of a step: one kernel per term, names looked up only on failure.

A step checks its accumulated gradients after every term so that a :class:`~mge_plugins.NonFiniteError`
can name the term and level that broke them. The check is a fixed cost per term, paid on every
step: on a small network's coarsest level it is a measurable share of the step. So:

- the tensors checked are taken once per step from a flat list (the optimizer's parameter groups:
  exactly what the step updates) rather than by walking the module tree;
- the verdict (any NaN or inf entry) comes from one fused kernel over every gradient of a device,
  :func:`torch._amp_foreach_non_finite_check_and_unscale_` with a unit scale (the kernel
  :class:`torch.amp.GradScaler` runs every step; multiplying by 1 leaves every value as it was),
  up to :data:`FUSED_CHECK_MAX_ELEMENTS` elements, and from a read-only norm per tensor above it
  (and off CPU/CUDA), where the kernel's write costs more than its launches save (``isfinite``
  per tensor, which writes a mask, is slower still);
- parameter names are looked up only when a check fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["FUSED_CHECK_MAX_ELEMENTS", "GradientCheck", "any_nonfinite_flag"]

FUSED_CHECK_MAX_ELEMENTS = 1 << 20
"""Gradient elements up to which one fused kernel checks them: in a one-off timing on a 2-core CPU
(not kept as a script) it was about 5x faster than norms per tensor at 10^4 elements, as fast at
10^6, and 1.4x slower at 4·10^6, where its write costs more than its launches save."""


def _fused_flag(grads: list[torch.Tensor]) -> torch.Tensor | None:
    """1.0 when an entry is NaN or inf, from one fused kernel; ``None`` where the kernel does not apply."""
    device = grads[0].device
    if device.type not in ("cpu", "cuda"):
        return None
    elements = 0
    for g in grads:  # one pass: the kernel takes dense floating tensors of one device, outside any graph
        if g.device != device or not g.is_floating_point() or g.is_sparse or g.requires_grad:
            return None
        elements += g.numel()
    if elements > FUSED_CHECK_MAX_ELEMENTS:
        return None
    found = torch.zeros((), device=device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones((), device=device))
    return found


def any_nonfinite_flag(grads: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d tensor, nonzero when an entry of ``grads`` is NaN or inf (read it once per step).

    Entries that are finite but large pass: only NaN and inf make a gradient non-finite (an
    overflowing total norm is refused where it is used, by the clipping).
    """
    if not grads:
        return torch.tensor(0.0)
    flag = _fused_flag(grads)
    if flag is not None:
        return flag
    device = grads[0].device
    # a 2-norm per tensor is NaN or inf when an entry is, and also when a huge finite tensor's norm
    # overflows; the max-norm, which does not overflow, settles those few
    norms = torch.stack([torch.linalg.vector_norm(g.detach()).to(device, torch.float32) for g in grads])
    if bool(torch.isfinite(norms).all()):
        return torch.tensor(0.0, device=device)
    maxima = [torch.linalg.vector_norm(g.detach(), float("inf")).to(device, torch.float32) for g in grads]
    return (~torch.isfinite(torch.stack(maxima))).any().to(torch.float32)


class GradientCheck:
    """The parameters whose accumulated gradients a step checks, named only when one fails.

    Args:
        parameters: the tensors checked, a module (its parameters), or ``(name, tensor)`` pairs.
        names: a module to name the tensors from when a check fails (default: ``parameters``
            when it is a module or pairs; otherwise a tensor is called ``parameter i``).

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> model(torch.ones(1, 2)).sum().backward()
        >>> check = GradientCheck([p for p in model.parameters()], names=model)
        >>> float(check.flag()), check.first_nonfinite()
        (0.0, None)
    """

    def __init__(
        self,
        parameters: torch.nn.Module | Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
        names: torch.nn.Module | None = None,
    ) -> None:
        self._pairs: list[tuple[str, torch.Tensor]] | None = None
        if isinstance(parameters, torch.nn.Module):
            names = names if names is not None else parameters
            self.tensors: Sequence[torch.Tensor] = list(parameters.parameters())
        else:
            items = list(parameters)
            if items and isinstance(items[0], tuple):
                self._pairs = list(items)  # type: ignore[arg-type]
                self.tensors = [t for _, t in self._pairs]
            else:
                self.tensors = items  # type: ignore[assignment]
        self._names = names

    def flag(self) -> torch.Tensor:
        """Nonzero when a gradient entry is NaN or inf (see :func:`any_nonfinite_flag`)."""
        return any_nonfinite_flag([t.grad for t in self.tensors if t.grad is not None])

    def first_nonfinite(self) -> str | None:
        """Name of the first tensor whose gradient holds a NaN or inf (slow; for the error message)."""
        if self._pairs is not None:
            pairs = self._pairs
        elif self._names is not None:
            by_id = {id(t): n for n, t in self._names.named_parameters()}
            pairs = [(by_id.get(id(t), f"parameter {i}"), t) for i, t in enumerate(self.tensors)]
        else:
            pairs = [(f"parameter {i}", t) for i, t in enumerate(self.tensors)]
        return next((n for n, t in pairs if t.grad is not None and not bool(torch.isfinite(t.grad).all())), None)
