"""Command-line pieces shared by ``mge-train``, ``mge-bench`` and the example scripts.

argparse types that name the bad value and the fix, a help formatter that shows every default,
and the check of a ``--device`` option. Standard library and torch only, like the rest of the core.
"""

from __future__ import annotations

import argparse
import math

import torch

__all__ = ["HelpFormatter", "budget_value", "device_problem", "nonnegative_int", "positive_float", "positive_int"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: ...)`` to every option that has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "%(default)" in text
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
        ):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += " (default: %(default)s)"
        return text


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1.

    Raises:
        argparse.ArgumentTypeError: naming the value and the bound.
    """
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0.

    Raises:
        argparse.ArgumentTypeError: naming the value and the bound.
    """
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0.

    Raises:
        argparse.ArgumentTypeError: naming the value and the bound.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def budget_value(text: str) -> str | float:
    """An argparse type: ``steps``, ``compute`` or a fraction above 0 of the single-scale compute.

    Raises:
        argparse.ArgumentTypeError: naming the value and the choices.
    """
    if text in ("steps", "compute"):
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a budget: use steps, compute, or a fraction of the single-scale compute such as 0.33"
        ) from None


def device_problem(device: str) -> str | None:
    """Why ``--device`` cannot be used on this machine, or ``None`` when it can.

    Args:
        device: a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Returns:
        One line naming the fix, or ``None``.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a PyTorch device; use cpu, cuda or cuda:N"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return (
                f"--device {device}: PyTorch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
                "use --device cpu"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            return f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: the MPS backend is not available on this machine; use --device cpu"
    return None
