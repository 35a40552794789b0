"""PNG plots of a report: quality against FLOPs and against wall-clock, per strategy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["plot_task"]


def plot_task(name: str, task: Mapping[str, Any], path: Path) -> None:
    """Two panels for task ``name``: eval PSNR against GFLOPs and against training seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (key, label, scale), ax in zip(
        (("flops", "GFLOPs", 1e9), ("seconds", "training seconds", 1.0)), axes, strict=True
    ):
        for strategy, entry in task["strategies"].items():
            points = entry["points"]
            style = "o-" if entry["kind"] == "curve" else "s--"
            ax.plot([p[key] / scale for p in points], [p["psnr"] for p in points], style, label=strategy, ms=4)
        ax.axhline(task["target_psnr"], color="gray", lw=0.8, ls=":", label="single-scale final - 0.1 dB")
        if key == "flops":
            for budget in task["budgets"]:
                ax.axvline(budget / scale, color="gray", lw=0.4, alpha=0.5)
        ax.set_xscale("symlog", linthresh=task["budgets"][0] / scale if key == "flops" else 1.0)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"mge-bench {name}: {task['description']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
