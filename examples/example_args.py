"""Command-line helpers shared by the example scripts: readable --help, checked numbers and devices.

Every mistake in the options or the inputs ends the script with one line naming the fix and exit
status 2, argparse's own convention, before anything is written.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

__all__ = [
    "HelpFormatter",
    "check_device",
    "fail",
    "make_parser",
    "nonnegative_int",
    "plain",
    "positive_float",
    "positive_int",
]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: ...)`` to every option that has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or action.default is None or action.default is False:
            return text
        if action.default == argparse.SUPPRESS:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += " (default: %(default)s)"
        return text


def plain(doc: str) -> str:
    """A module docstring as plain text for --help: without the reST and Markdown backticks."""
    return doc.replace("``", "").replace("`", "").strip() + "\n"


def make_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose --help shows ``doc`` as written (plain text) and every option's default."""
    return argparse.ArgumentParser(description=plain(doc), formatter_class=HelpFormatter)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def fail(message: str) -> None:
    """End the script as argparse does for a bad option: ``PROG: error: message`` on stderr, exit status 2."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """``parser.error`` unless ``device`` is a PyTorch device this machine has."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        parser.error(f"--device {device!r} is not a PyTorch device; use cpu, cuda or cuda:N")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            f"--device {device}: PyTorch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
            "use --device cpu"
        )
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        parser.error(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
