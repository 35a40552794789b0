"""Settings of a benchmark run, and the presets ``--quick``, ``cpu`` and ``gpu``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["FRONTIER_STRATEGIES", "PRESETS", "STRATEGIES", "BenchSettings"]

STRATEGIES: tuple[str, ...] = ("single", "mge", "full-multiscale", "progressive-resizing", "single+rrc")
"""Strategies compared: the single-scale baseline, MGE, Full-Multiscale, progressive resizing (coarse-to-fine
without MGE corrections) and single-scale with random-resized-crop augmentation."""

FRONTIER_STRATEGIES: tuple[str, ...] = ("full-multiscale", "progressive-resizing")
"""Strategies whose schedule depends on the run's length: one run per budget instead of one curve."""


@dataclass(frozen=True)
class BenchSettings:
    """What ``mge-bench`` trains and measures.

    Attributes:
        tasks: bundled 2D tasks (``denoise``, ``deblur``, ``inpaint``, ``sr``) and ``denoise3d``.
        strategies: a subset of :data:`STRATEGIES`, ``"single"`` included.
        size: crop side, divisible by ``2**levels`` times the U-Net's 4.
        size3d: cube side of the 3D task, divisible likewise.
        batch_size: loaded batch; MGE terms are cut from it (finest ``batch_size // 4``).
        steps: single-scale steps; their FLOPs are the full budget ``F``.
        budgets: budgets ``F / 2**j`` for ``j = budgets - 1, ..., 0``.
        evals: evaluations along the runs of curve strategies (a multiple of ``2**(budgets-1)`` puts
            points on every budget).
        levels: levels below the finest.
        unet_channels: channels per scale of the U-Net (3 scales).
        lr: Adam learning rate (constant, so a run's curve is its quality at every budget).
        eval_crops: held-out crops (one batch).
        repeats: timing repeats; wall-clock figures are medians over them.
        variance_draws: independent batches per gradient-variance estimate.
        norm_samples: samples for the per-level gradient-difference norms.
        overhead_steps: steps per timing block of the overhead check.
        device: torch device.
        seed: seed of data, initial weights and noise.

    Raises:
        ValueError: for settings that cannot be run, naming the fix.
    """

    tasks: tuple[str, ...] = ("denoise", "deblur", "inpaint", "sr")
    strategies: tuple[str, ...] = STRATEGIES
    size: int = 64
    size3d: int = 32
    batch_size: int = 16
    steps: int = 400
    budgets: int = 4
    evals: int = 16
    levels: int = 2
    unet_channels: tuple[int, ...] = (16, 32, 64)
    lr: float = 1e-3
    eval_crops: int = 32
    repeats: int = 1
    variance_draws: int = 32
    norm_samples: int = 8
    overhead_steps: int = 10
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("size", "size3d", "batch_size", "steps", "budgets", "evals", "repeats", "variance_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.levels < 0:
            raise ValueError(f"levels must be 0 or more, got {self.levels}")
        if not self.lr > 0:
            raise ValueError(f"lr must be above 0, got {self.lr}")
        if "single" not in self.strategies:
            raise ValueError("strategies must include 'single': it sets the budget and the target quality")
        unknown = set(self.strategies) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"unknown strategies {sorted(unknown)}; choose from {', '.join(STRATEGIES)}")
        multiple = 2**self.levels * 4
        for name, side in (("size", self.size), ("size3d", self.size3d)):
            if side % multiple:
                raise ValueError(
                    f"{name}={side} must be divisible by 2**levels x 4 = {multiple} (levels={self.levels}, "
                    f"3-scale U-Net); try {name}={max(multiple, side // multiple * multiple)}"
                )
        if self.steps < self.evals or self.steps % self.evals:
            raise ValueError(f"steps={self.steps} must be a positive multiple of evals={self.evals}")
        if self.budgets < 1 or self.steps // 2 ** (self.budgets - 1) < 4:
            raise ValueError(f"budgets={self.budgets} leaves fewer than 4 single-scale steps in the smallest budget")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")

    def replace(self, **changes: Any) -> BenchSettings:
        """A copy with ``changes``.

        Args:
            **changes: fields and their new values.

        Returns:
            The new, validated settings.
        """
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        data = asdict(self)
        data["tasks"], data["strategies"] = list(self.tasks), list(self.strategies)
        data["unet_channels"] = list(self.unet_channels)
        return data


PRESETS: dict[str, BenchSettings] = {
    # About 10 minutes on a shared 2-core CPU: 32x32 crops, a small U-Net, 128 single-scale steps at lr 3e-3.
    # The U-Net starts far from the identity and sits near the noisy input's PSNR for its first ~60 steps; with
    # 64 steps at lr 1e-3 single-scale ended 0.04 dB above the input (20.16 dB), so the savings compared
    # untrained networks. 128 steps at 3e-3 end 5.2 to 8.4 dB above it for seeds 0 to 3 (measured 2026-12-01).
    "quick": BenchSettings(
        tasks=("denoise",), size=32, size3d=16, batch_size=16, steps=128, budgets=3, evals=8, lr=3e-3,
        unet_channels=(8, 16, 32), eval_crops=16, variance_draws=12, norm_samples=4, overhead_steps=5,
    ),
    # The published CPU tables.
    "cpu": BenchSettings(),
    # A GPU: 512x512 crops, 3 levels (Full-Multiscale stages split 8:4:2:1 as 2000/1000/500/250).
    "gpu": BenchSettings(
        size=512, size3d=128, batch_size=16, steps=2000, budgets=5, evals=16, levels=3,
        unet_channels=(32, 64, 128), eval_crops=32, repeats=3, variance_draws=64, norm_samples=16,
        overhead_steps=20, device="cuda",
    ),
}  # fmt: skip
