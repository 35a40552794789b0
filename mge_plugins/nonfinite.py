"""What a training step does when a loss or a gradient is not finite: raise, or skip the step.

A non-finite value at any level would spread into every weight at the next optimizer step, so
:func:`~mge_plugins.mge_backward` checks each level's loss and the accumulated gradients, all
read with one device sync after the last pass, and raises :class:`NonFiniteError` naming the term,
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
        quantity: ``"loss"``, ``"gradient"`` or ``"weights"`` (after an optimizer step; never skipped).
        parameter: name of the first parameter with a non-finite gradient, when known.
        value: the non-finite loss value, for a loss.
        repeated: for the error that stops a run of skipped steps, how many were skipped in a row.
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
        repeated: int = 0,
    ) -> None:
        self.term, self.levels, self.quantity = term, levels, quantity
        self.level, self.parameter, self.value = level, parameter, value
        self.repeated = repeated
        span = f"levels {levels[0]} - {levels[1]}" if len(levels) == 2 else f"level {levels[0]}"
        if quantity == "loss":
            what = f"the loss at level {level} is {value}"
            fix = "check the data and the loss at that level, or lower the learning rate"
        elif quantity == "weights":
            what = f"the weights are not finite after the optimizer step (first: {parameter})"
            fix = (
                "half-precision weights (float16) overflow in optimizers such as Adam: keep the weights in float32 "
                "and train under autocast (mixed precision), or lower the learning rate"
            )
        else:
            named = f" (first: {parameter})" if parameter else ""
            what = f"the accumulated gradients are not finite after its backward pass{named}"
            fix = "lower the learning rate, clip gradients or check the network at that level"
        if quantity == "weights":
            message = f"{what}; {fix}"
        elif repeated:
            message = (
                f"{repeated} training steps in a row were skipped (last: MGE term {term}, {span}: {what}); the weights "
                "are most likely no longer finite (half-precision weights with Adam, or a learning rate far too high): "
                "train the weights in float32 (use autocast for half precision) or lower the learning rate"
            )
        else:
            message = (
                f"MGE term {term} ({span}): {what}, so this step's gradients are invalid and no optimizer step may "
                f"use them; {fix}, or pass nonfinite='skip' to skip such steps"
            )
        super().__init__(message)

    @property
    def where(self) -> str:
        """Short description for a warning: term and level."""
        at = f"level {self.level}" if self.level is not None else f"levels {', '.join(map(str, self.levels))}"
        return f"{self.quantity} of term {self.term} at {at}"


@dataclass
class NonFinitePolicy:
    """Raise or skip on a non-finite step; counts the skipped steps and warns with the count.

    The 1st, 2nd, 4th, 8th, ... skip warns. ``max_consecutive`` skips in a row raise: the weights
    are then most likely already broken (or the learning rate far too high), and skipping on
    would train nothing.

    Attributes:
        mode: ``"raise"`` or ``"skip"``.
        skipped: number of steps skipped so far.
        max_consecutive: skips in a row that stop training with a :class:`NonFiniteError`.
        last_error: the most recent :class:`NonFiniteError` handled in skip mode.
        consecutive: skips since the last finite step.

    Example:
        >>> policy = NonFinitePolicy("skip")
        >>> policy.skipped
        0
    """

    mode: str = "raise"
    skipped: int = 0
    max_consecutive: int = 10
    last_error: NonFiniteError | None = field(default=None, repr=False)
    consecutive: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE_MODES))}, got {self.mode!r}")

    def passed(self) -> None:
        """Record a step whose loss and gradients were finite (resets the run of skips)."""
        self.consecutive = 0

    @classmethod
    def of(cls, value: str | NonFinitePolicy) -> NonFinitePolicy:
        """A policy from ``"raise"``/``"skip"``, or ``value`` itself when it is already one."""
        return value if isinstance(value, NonFinitePolicy) else cls(value)

    def handle(self, error: NonFiniteError) -> None:
        """Re-raise ``error`` (mode ``"raise"``), or count the skipped step and warn the first time."""
        if self.mode == "raise":
            raise error
        self.skipped += 1
        self.consecutive += 1
        self.last_error = error
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(
                error.term,
                error.levels,
                error.quantity,
                level=error.level,
                parameter=error.parameter,
                value=error.value,
                repeated=self.consecutive,
            ) from error
        if self.skipped & (self.skipped - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... skip
            warnings.warn(
                f"skipping a training step: {error.where} is not finite ({self.skipped} skipped so far, "
                f"{self.consecutive} in a row; training stops after {self.max_consecutive} in a row)",
                NonFiniteStepWarning,
                stacklevel=3,
            )
