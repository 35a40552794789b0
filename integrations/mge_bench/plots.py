"""PNG plots of a report: quality against FLOPs and against wall-clock, per strategy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mge_deepinv.plots import COST_AXES, plot_quality_against_cost, pyplot, save_figure

__all__ = ["plot_task", "task_figure"]


def _log_axis(ax: Any, costs: list[float]) -> None:
    """A log x axis over the positive ``costs``, ticked at 1, 2 and 5 times powers of ten, in plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    low, high = min(costs), max(costs)
    ax.set_xlim(low / 1.25, high * 1.25)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def task_figure(name: str, task: Mapping[str, Any]) -> Any:
    """Two panels for task ``name``: held-out PSNR against GFLOPs and against training seconds, on log axes.

    Curve strategies are drawn as lines with dots, per-budget runs dashed with squares; the target quality
    is a dotted line, the untrained network's quality a dash-dotted one (its cost, 0, has no place on a log
    axis), and the budgets are faint vertical lines on the FLOP panel.

    Args:
        name: the task's name, in the title.
        task: the task's section of a report (:data:`~mge_bench.report.REPORT_SCHEMA`).

    Returns:
        The matplotlib figure (not yet saved).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    strategies = task["strategies"]
    styles = {strategy: "o-" if entry["kind"] == "curve" else "s--" for strategy, entry in strategies.items()}
    untrained = strategies["single"]["points"][0]
    for axis, ax in zip(COST_AXES, axes, strict=True):
        curves = {s: [p for p in entry["points"] if p[axis.key] > 0] for s, entry in strategies.items()}
        plot_quality_against_cost(ax, curves, axis, styles=styles, ms=4)
        ax.axhline(task["target_psnr"], color="gray", lw=0.8, ls=":", label="single-scale final - 0.1 dB")
        if untrained[axis.key] <= 0:
            ax.axhline(untrained["psnr"], color="gray", lw=0.8, ls="-.", label="untrained network")
        costs = [p[axis.key] / axis.scale for points in curves.values() for p in points]
        if axis.key == "flops":
            for budget in task["budgets"]:
                ax.axvline(budget / axis.scale, color="gray", lw=0.4, alpha=0.5)
            costs += [b / axis.scale for b in task["budgets"]]
        if costs:
            _log_axis(ax, costs)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"mge-bench {name}: {task['description']}")
    return fig


def plot_task(name: str, task: Mapping[str, Any], path: Path) -> None:
    """Write :func:`task_figure` to ``path`` as a PNG.

    Args:
        name: the task's name, in the title.
        task: the task's section of a report (:data:`~mge_bench.report.REPORT_SCHEMA`).
        path: the PNG file to write.
    """
    save_figure(task_figure(name, task), path, f"mge-bench {name}: {task['description']}")
