"""PNG plots of a report: quality against FLOPs and against wall-clock, per strategy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mge_deepinv.plots import COST_AXES, plot_quality_against_cost, pyplot, save_figure

__all__ = ["plot_task"]


def plot_task(name: str, task: Mapping[str, Any], path: Path) -> None:
    """Two panels for task ``name``: held-out PSNR against GFLOPs and against training seconds.

    Curve strategies are drawn as lines with dots, per-budget runs dashed with squares; the target quality
    is a dotted line and the budgets are faint vertical lines on the FLOP panel.

    Args:
        name: the task's name, in the title.
        task: the task's section of a report (:data:`~mge_bench.report.REPORT_SCHEMA`).
        path: the PNG file to write.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    strategies = task["strategies"]
    curves = {strategy: entry["points"] for strategy, entry in strategies.items()}
    styles = {strategy: "o-" if entry["kind"] == "curve" else "s--" for strategy, entry in strategies.items()}
    for axis, ax in zip(COST_AXES, axes, strict=True):
        plot_quality_against_cost(ax, curves, axis, styles=styles, ms=4)
        ax.axhline(task["target_psnr"], color="gray", lw=0.8, ls=":", label="single-scale final - 0.1 dB")
        if axis.key == "flops":
            for budget in task["budgets"]:
                ax.axvline(budget / axis.scale, color="gray", lw=0.4, alpha=0.5)
        ax.set_xscale("symlog", linthresh=task["budgets"][0] / axis.scale if axis.key == "flops" else 1.0)
    axes[0].legend(fontsize=8)
    save_figure(fig, path, f"mge-bench {name}: {task['description']}")
