"""Plotting helpers of ``mge-train`` and ``mge-bench``: quality against cost, image panels, PNG files.

Matplotlib is imported on first use, with the non-interactive ``Agg`` backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["COST_AXES", "CostAxis", "plot_quality_against_cost", "pyplot", "save_figure", "show_image"]


@dataclass(frozen=True)
class CostAxis:
    """A cost axis of a quality curve.

    :param str key: the cost's key in the curve's points (``"flops"``, ``"seconds"``).
    :param str label: the axis label.
    :param float scale: the points' costs are divided by it (``1e9`` shows FLOPs as GFLOPs).
    """

    key: str
    label: str
    scale: float = 1.0


COST_AXES: tuple[CostAxis, ...] = (CostAxis("flops", "GFLOPs", 1e9), CostAxis("seconds", "training seconds"))
"""The two costs both commands plot quality against: FLOPs (in GFLOPs) and training seconds."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the ``Agg`` backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality_against_cost(
    ax: Any,
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    axis: CostAxis,
    *,
    quality_key: str = "psnr",
    ylabel: str = "held-out PSNR (dB)",
    styles: Mapping[str, str] | None = None,
    **line: Any,
) -> None:
    """One line per named curve: quality against ``axis``'s cost, then the axis labels and a grid.

    Points without ``quality_key`` (e.g. training-only records) are skipped.

    :param matplotlib.axes.Axes ax: where to draw.
    :param dict curves: name (the legend label) to its points, each a mapping with the cost and quality keys.
    :param CostAxis axis: the cost on the x axis.
    :param str quality_key: the quality's key in the points.
    :param str ylabel: the y axis label.
    :param dict styles: matplotlib format string per curve name (default ``"o-"``).
    :param line: further keyword arguments of ``ax.plot`` (e.g. ``ms=4``).
    """
    styles = styles or {}
    for name, points in curves.items():
        shown = [p for p in points if quality_key in p]
        costs = [p[axis.key] / axis.scale for p in shown]
        ax.plot(costs, [p[quality_key] for p in shown], styles.get(name, "o-"), label=name, **line)
    ax.set_xlabel(axis.label)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def show_image(ax: Any, image: torch.Tensor, title: str) -> None:
    """A ``(C, H, W)`` image in [0, 1] (gray or RGB), clipped, without axes.

    :param matplotlib.axes.Axes ax: where to draw.
    :param torch.Tensor image: the image, on the CPU.
    :param str title: the panel's title.
    """
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")


def save_figure(fig: Any, path: str | Path, title: str) -> None:
    """Give ``fig`` its title, lay it out, write it to ``path`` as a 100 dpi PNG and close it.

    :param matplotlib.figure.Figure fig: the figure.
    :param str, pathlib.Path path: the file to write.
    :param str title: the figure's title.
    """
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.92))  # leave the top band to the title, clear of the panels' titles
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
