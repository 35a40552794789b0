"""Command-line helpers shared by the example scripts: readable --help, checked numbers and devices.

Every mistake in the options or the inputs ends the script with one line naming the fix and exit
status 2, argparse's own convention, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mge_plugins.cli_args import HelpFormatter, device_problem, nonnegative_int, positive_float, positive_int

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


def plain(doc: str) -> str:
    """A module docstring as plain text for --help: without the reST and Markdown backticks."""
    return doc.replace("``", "").replace("`", "").strip() + "\n"


def make_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose --help shows ``doc`` as written (plain text) and every option's default."""
    return argparse.ArgumentParser(description=plain(doc), formatter_class=HelpFormatter)


def fail(message: str) -> None:
    """End the script as argparse does for a bad option: ``PROG: error: message`` on stderr, exit status 2."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """``parser.error`` unless ``device`` is a PyTorch device this machine has."""
    problem = device_problem(device)
    if problem:
        parser.error(problem)
