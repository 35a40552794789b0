"""What a training step does when a loss or a gradient is not finite: raise, or skip the step.

A non-finite value at any level would spread into every weight at the next optimizer step, so
:func:`~mge_plugins.mge_backward` checks each level's loss before its backward pass and the
accumulated gradients after the last pass, and raises :class:`NonFiniteError` naming the term,
its levels and (for gradients) the first parameter concerned. The hosts (``mge_step``, the
DeepInverse and MONAI trainers) turn that error into one of two policies:

- ``"raise"`` (default): the gradients are cleared and the error propagates; the weights and the
  optimizer state are exactly as they were before the step.
- ``"skip"``: the gradients are cleared, no optimizer step is taken, a warning names the term
  and level the first time, and :attr:`NonFinitePolicy.skipped` counts the skipped steps.

With an active :class:`torch.amp.GradScaler` the gradient check is left to the scaler: scaled
gradients may overflow legitimately, and the scaler then skips the step and lowers its scale by
itself. The loss check stays on, since losses are not scaled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

__all__ = ["NONFINITE_MODES", "NonFiniteError", "NonFinitePolicy", "NonFiniteStepWarning"]

NONFINITE_MODES: tuple[str, ...] = ("raise", "skip")


class NonFiniteStepWarning(UserWarning):
    """Warned (once per policy) when a step is skipped because of a non-finite loss or gradient."""


class NonFiniteError(FloatingPointError):
    """A loss or an accumulated gradient of an MGE step is NaN or infinite.

    Attributes:
        term: index of the MGE term (0 = finest).
        levels: the term's levels, ``(k, k + 1)`` for a difference term, ``(k,)`` for the last.
        level: the level whose loss was not finite, or ``None`` for a gradient.
        quantity: ``"loss"`` or ``"gradient"``.
        parameter: name of the first parameter with a non-finite gradient, when known.
        value: the non-finite loss value, for a loss.
    """

    def __init__(
        self,
        term: int,
        levels: tuple[int, ...],
        quantity: str,
        *,
        level: int | None = None,
        parameter: str | None = None,
        value: float | None = None,
    ) -> None:
        self.term, self.levels, self.quantity = term, levels, quantity
        self.level, self.parameter, self.value = level, parameter, value
        span = f"levels {levels[0]} - {levels[1]}" if len(levels) == 2 else f"level {levels[0]}"
        if quantity == "loss":
            what = f"the loss at level {level} is {value}"
            fix = "check the data and the loss at that level, or lower the learning rate"
        else:
            named = f" (first: {parameter})" if parameter else ""
            what = f"the accumulated gradients are not finite after its backward pass{named}"
            fix = "lower the learning rate, clip gradients or check the network at that level"
        super().__init__(
            f"MGE term {term} ({span}): {what}, so this step's gradients are invalid and no optimizer step may "
            f"use them; {fix}, or pass nonfinite='skip' to skip such steps"
        )

    @property
    def where(self) -> str:
        """Short description for a warning: term and level."""
        at = f"level {self.level}" if self.level is not None else f"levels {', '.join(map(str, self.levels))}"
        return f"{self.quantity} of term {self.term} at {at}"


@dataclass
class NonFinitePolicy:
    """Raise or skip on a non-finite step; counts the skipped steps and warns once.

    Attributes:
        mode: ``"raise"`` or ``"skip"``.
        skipped: number of steps skipped so far.
        last_error: the most recent :class:`NonFiniteError` handled in skip mode.

    Example:
        >>> policy = NonFinitePolicy("skip")
        >>> policy.skipped
        0
    """

    mode: str = "raise"
    skipped: int = 0
    last_error: NonFiniteError | None = field(default=None, repr=False)
    _warned: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE_MODES))}, got {self.mode!r}")

    @classmethod
    def of(cls, value: str | NonFinitePolicy) -> NonFinitePolicy:
        """A policy from ``"raise"``/``"skip"``, or ``value`` itself when it is already one."""
        return value if isinstance(value, NonFinitePolicy) else cls(value)

    def handle(self, error: NonFiniteError) -> None:
        """Re-raise ``error`` (mode ``"raise"``), or count the skipped step and warn the first time."""
        if self.mode == "raise":
            raise error
        self.skipped += 1
        self.last_error = error
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"skipping a training step: {error.where} is not finite (further skips are counted, not warned)",
                NonFiniteStepWarning,
                stacklevel=3,
            )
