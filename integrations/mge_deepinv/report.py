"""The Markdown report ``mge-train`` writes next to its CSVs and figure."""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path
from typing import Any

import torch

from mge_plugins.diagnostics.load import LoadReport

__all__ = ["SETTINGS", "markdown_report", "write_report"]

SETTINGS = ("strategy", "levels", "mge_levels", "budget", "fused", "size", "steps", "batch_size", "network", "lr",
            "coarse_mode", "coarse_noise", "seed", "device")  # fmt: skip
"""The options a report lists, in this order (those a run's namespace has)."""


def _cell(value: float | None, fmt: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{suffix}"


def markdown_report(
    task: str, args: argparse.Namespace, rows: list[dict[str, Any]], measured: bool, load: LoadReport
) -> str:
    """The report of one ``mge-train`` run.

    :param str task: the task trained.
    :param argparse.Namespace args: the run's options.
    :param list[dict] rows: the summary rows (``summary.csv``), savings included.
    :param bool measured: whether a single-scale run measured the savings.
    :param mge_plugins.diagnostics.load.LoadReport load: the machine's load during training.
    :return: Markdown text.
    """
    settings = ", ".join(f"`{name}={getattr(args, name)}`" for name in SETTINGS if hasattr(args, name))
    timing = (
        f"Peak load {load.peak:.2f} on {load.cores} cores: the seconds are a measurement."
        if load.quiet
        else f"Peak load {load.peak:.2f} on {load.cores} cores, more than the cores: **the seconds and time savings "
        "do not measure the method** (other work shared the machine); FLOPs and quality do not depend on load."
    )
    lines = [
        f"# mge-train {task}",
        "",
        f"{datetime.date.today().isoformat()}, {platform.system()} {platform.machine()}, torch {torch.__version__}.",
        f"Settings: {settings}.",
        "",
        timing,
        "",
        "| strategy | PSNR (dB) | SSIM | GFLOPs | work units | seconds | FLOP saving | time saving |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        seconds = f"{r['seconds']:.1f}" if load.quiet else "—"
        time_saving = _cell(r.get("time_saving"), ".2f", "x") if load.quiet else "—"
        flop = _cell(r.get("flop_saving"), ".2f", "x" if measured else "x (estimated)")
        lines.append(
            f"| {r['strategy']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['flops'] / 1e9:.1f} | {r['work_units']:.0f} "
            f"| {seconds} | {flop} | {time_saving} |"
        )
    if not measured:
        lines += [
            "",
            "Estimated saving: no single-scale run (`--no-baseline`); single-scale's FLOPs for the same steps.",
        ]
    lines += ["", "![quality against FLOPs and seconds, and a held-out crop](figure.png)", ""]
    return "\n".join(lines)


def write_report(
    path: Path, task: str, args: argparse.Namespace, rows: list[dict[str, Any]], measured: bool, load: LoadReport
) -> None:
    """Write :func:`markdown_report` to ``path``.

    :param pathlib.Path path: where to write (``report.md`` in the run folder).
    :param str task: the task trained.
    :param argparse.Namespace args: the run's options.
    :param list[dict] rows: the summary rows.
    :param bool measured: whether a single-scale run measured the savings.
    :param mge_plugins.diagnostics.load.LoadReport load: the machine's load during training.
    """
    path.write_text(markdown_report(task, args, rows, measured, load))
