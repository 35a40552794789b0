"""What caps Full-Multiscale below a converged single-scale run: a plain-loop study of schedules.

Every run trains the same residual CNN from the same weights on fresh random crops of the bundled
photographs, with its own cosine learning-rate schedule over its own length, and is evaluated at
full resolution on held-out crops. A run is ``name:steps`` where ``name`` is one of:

- ``single``: fine-level training, batch ``--batch-size``;
- ``fms``: Full-Multiscale as shipped (halving split, terms cut from the loaded batch);
- ``ffms``: ``fms`` with fused passes (one weighted pass per level; the noise is drawn once per
  loaded batch at the fine grid, so every level loss depends on the samples only);
- ``pffms``: ``ffms`` with each stage's crops cut at the stage's level from a
  :class:`~mge_plugins.pyramid.LevelPyramid` of the training images (no fine crops cut and
  restricted in the coarse stages);
- ``afms``: ``fms`` with ``allocation="adaptive"``: inside each stage with MGE levels the per-term
  sizes (and levels) are re-chosen every ``--reestimate-every`` steps from measured per-level
  gradient variances (:class:`~mge_plugins.allocation.AdaptiveFullMultiscaleStrategy`); the
  measurements' own passes are not counted in the FLOPs;
- ``pr``: progressive resizing (the same stages, no MGE terms);
- ``fmsF``/``prF`` with ``F`` a percentage (e.g. ``fms25``): the coarse stages as above, then a
  final full-resolution phase of ``F`` % of the steps with single-scale batches (SlowFast's last
  full-resolution phase);
- ``cwF``: "constant work": coarse stages with batches growing ``2**d`` per level (every step costs
  what a fine step costs), halving split, then a final single-scale phase of ``F`` %;
- a trailing ``r`` (``fms25r``): the final phase restarts the learning rate at ``--restart-lr`` times
  the peak, with its own cosine decay (the coarse stages decay as if the run ended with them).

    python scripts/fms_convergence.py --size 64 --levels 2 --runs single:300,single:600,fms:600,fms25:600
    python scripts/fms_convergence.py --size 128 --levels 3 --runs single:2400,fms25:2400 --out results/study

Writes ``results.jsonl`` (one line per run: PSNR, FLOPs, work units, seconds, plan) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from plain_common import TEST_IMAGES, TRAIN_IMAGES, RandomCrops, bundled_images, make_pose, residual_denoiser

from mge_plugins import (
    CostMeter,
    FullMultiscaleSchedule,
    StepPlan,
    Strategy,
    build_strategy,
    mge_step,
    required_batch_size,
    restrict,
)
from mge_plugins.allocation import measure_level_variances, optimal_allocation
from mge_plugins.cost import measure_level_flops
from mge_plugins.diagnostics import LoadMonitor
from mge_plugins.host_step import MultiscaleStep
from mge_plugins.meshfree import MeshFreeDenoiser
from mge_plugins.pyramid import LevelPyramid


class Phased(Strategy):
    """A strategy for the first ``split`` steps, then single-scale fine steps of ``batch``."""

    name = "phased"

    def __init__(self, first: Strategy, split: int, batch: int) -> None:
        self.first, self.split, self.batch = first, split, batch

    def plan(self, step: int) -> StepPlan:
        """The first strategy's plan, then the fine phase's."""
        if step < self.split:
            return self.first.plan(step)
        return StepPlan(0, (self.batch,), "area", stage=None)

    @property
    def coarsest_level(self) -> int:
        """The first strategy's coarsest level."""
        return self.first.coarsest_level


def make_strategy(name: str, steps: int, args: argparse.Namespace) -> Strategy:
    """The strategy of run ``name`` over ``steps`` steps."""
    if name == "afms":
        return build_strategy(
            "full-multiscale", loaded_batch_size=args.batch_size, levels=args.levels, iterations=steps,
            allocation="adaptive", reestimate_every=args.reestimate_every,
        )  # fmt: skip
    match = re.fullmatch(r"(single|pffms|ffms|fms|pr|cw)(\d*)r?", name)
    if match is None:
        raise SystemExit(
            f"unknown run {name!r}; use single, fms, ffms, pffms, afms, pr, fmsF, prF or cwF (F = fine-phase percent)"
        )
    kind, percent = ("fms" if match.group(1).endswith("fms") else match.group(1)), int(match.group(2) or 0)
    batch = args.batch_size
    if kind == "single":
        return build_strategy("single", loaded_batch_size=batch)
    fine = round(steps * percent / 100)
    coarse = steps - fine
    if kind == "cw":
        growth = 2**2
        sizes = [batch * growth**level for level in range(args.levels, -1, -1)]
        schedule = FullMultiscaleSchedule(args.levels, coarse, batch_size=sizes, mge_levels=0)
        from mge_plugins.strategies import FullMultiscaleStrategy

        first: Strategy = FullMultiscaleStrategy(schedule, name="cw")
    else:
        full = {"fms": "full-multiscale", "pr": "progressive-resizing"}[kind]
        first = build_strategy(full, loaded_batch_size=batch, levels=args.levels, iterations=coarse)
    return Phased(first, coarse, batch) if fine else first


@torch.no_grad()
def psnr(model: nn.Module, clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """Fine-level PSNR on the held-out crops."""
    model.eval()
    mse = nn.functional.mse_loss(model(noisy).clamp(0, 1), clean).item()
    model.train()
    return float(10 * torch.log10(torch.tensor(1.0 / mse)))


def run(name: str, steps: int, args: argparse.Namespace, test: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Train one run from the shared initial weights; its result row."""
    torch.manual_seed(args.seed)
    if args.network == "meshfree":
        model: nn.Module = MeshFreeDenoiser(1, args.width, args.depth)
    else:
        model = residual_denoiser(args.width, args.depth)
    crops = RandomCrops(bundled_images(TRAIN_IMAGES), args.size, args.seed)
    strategy = make_strategy(name, steps, args)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    split = getattr(strategy, "split", steps)
    if name.endswith("r") and split < steps:
        restart = args.restart_lr

        def factor(t: int) -> float:
            if t < split:
                return 0.5 * (1 + math.cos(math.pi * t / split))
            return restart * 0.5 * (1 + math.cos(math.pi * (t - split) / (steps - split)))

        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    pose = make_pose(args.sigma)

    per_sample_mse = nn.MSELoss(reduction="none")

    def fused_pose(batch: tuple[torch.Tensor, torch.Tensor], level: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean, noise = batch
        target = restrict(clean, level)
        return target + args.sigma * restrict(noise, level) * 2.0**level, target  # keep the noise std (2D)

    def level_loss(clean: torch.Tensor, level: int) -> torch.Tensor:
        noisy, target = pose(clean, level)
        return nn.functional.mse_loss(model(noisy), target)

    flops = measure_level_flops(level_loss, crops(1), args.levels, model.parameters())
    diagnosis = {}
    probe = crops(16) if args.diagnose else None

    def diagnose_now() -> dict[str, Any]:
        def probe_loss(indices: slice, level: int) -> torch.Tensor:
            return level_loss(probe[indices], level)

        measured = measure_level_variances(probe_loss, model, samples=16, levels=args.levels)
        best = optimal_allocation(measured, flops, budget=args.batch_size * flops[0], bound=args.batch_size)
        relative = [d / p for d, p in zip(measured.difference, measured.plain)]
        return {"relative_difference_variance": relative, "allocation": best.to_dict()}

    if args.diagnose:
        diagnosis["initial"] = diagnose_now()
    meter = CostMeter(baseline_batch_size=args.batch_size, flops_per_sample=flops)
    seconds, curve = 0.0, []
    monitor = LoadMonitor(interval=10.0)
    monitor.__enter__()
    fused, pyramid = name.startswith(("ffms", "pffms")), name.startswith("pffms")
    adaptive = name == "afms"
    runner = MultiscaleStep(strategy, meter)
    if pyramid:
        levels = LevelPyramid(bundled_images(TRAIN_IMAGES), args.levels)
        generator = torch.Generator().manual_seed(args.seed)
    for step in range(steps):
        plan = strategy.plan(step)
        start = time.perf_counter()  # the seconds include cutting the crops, as a user's loader would
        if pyramid:  # the stage's crops at the stage's level; white noise there is the restricted fine noise
            clean = levels.crops(required_batch_size(plan.batch_sizes), args.size, plan.level, generator)
            batch = (clean, torch.randn_like(clean))

            def stage_pose(
                b: tuple[torch.Tensor, torch.Tensor], level: int, base: int = plan.level
            ) -> tuple[torch.Tensor, torch.Tensor]:
                return fused_pose(b, level - base)

            mge_step(model, optimizer, per_sample_mse, batch, plan, pose=stage_pose, meter=meter, fused=True, step=step)
        elif fused:  # the fine-grid noise travels with the batch: every level loss depends on the samples only
            clean = crops(required_batch_size(plan.batch_sizes))
            batch = (clean, torch.randn_like(clean))
            mge_step(model, optimizer, per_sample_mse, batch, plan, pose=fused_pose, meter=meter, fused=True, step=step)
        elif adaptive:  # the host path: the strategy measures after the step and re-plans the next ones
            clean = crops(args.batch_size)

            def index_loss(indices: slice, level: int, clean: torch.Tensor = clean) -> torch.Tensor:
                return level_loss(clean[indices], level)

            optimizer.zero_grad(set_to_none=True)
            runner.run(step, args.batch_size, index_loss, model=model)
            optimizer.step()
        else:
            clean = crops(required_batch_size(plan.batch_sizes))
            mge_step(model, optimizer, nn.MSELoss(), clean, plan, pose=pose, meter=meter)
        scheduler.step()
        seconds += time.perf_counter() - start
        if (step + 1) % max(1, steps // 4) == 0:
            curve.append((step + 1, round(psnr(model, *test), 3)))
    monitor.__exit__(None, None, None)
    if args.diagnose:
        diagnosis["trained"] = diagnose_now()
    return {
        "network": args.network,
        "diagnosis": diagnosis,
        "load": monitor.report().to_dict(),
        "run": f"{name}:{steps}",
        "psnr": psnr(model, *test),
        "flops": meter.flops,
        "work_units": meter.work_units,
        "seconds": seconds,
        "curve": curve,
        "plans": sorted({str(strategy.plan(t).batch_sizes) + f"@L{strategy.plan(t).level}" for t in range(steps)}),
        "allocations": [
            {"from_step": e["from_step"], "stage": e["stage"], "batch_sizes": e["batch_sizes"]}
            for e in getattr(strategy, "history", [])
        ],
    }


def main() -> None:
    """Parse the runs, train each in turn, append its row to ``results.jsonl``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="comma-separated name:steps (see above)")
    parser.add_argument("--size", type=int, default=64, help="crop side (default: %(default)s)")
    parser.add_argument("--levels", type=int, default=2, help="coarser levels (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="loaded batch (default: %(default)s)")
    parser.add_argument("--width", type=int, default=32, help="network channels (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=5, help="convolutions (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=0.1, help="noise level (default: %(default)s)")
    parser.add_argument(
        "--restart-lr", type=float, default=0.5, help="final-phase restart, x peak (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--network", choices=("cnn", "meshfree"), default="cnn", help="(default: %(default)s)")
    parser.add_argument(
        "--diagnose", action="store_true", help="MGE's variance x cost against SGD at the initial and trained weights"
    )
    parser.add_argument(
        "--reestimate-every", type=int, default=100, help="afms: steps between measurements (default: %(default)s)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results/fms_convergence"), help="(default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    test_clean = RandomCrops(bundled_images(TEST_IMAGES), args.size, seed=12345)(32)
    test_noisy = test_clean + args.sigma * torch.randn(test_clean.shape, generator=torch.Generator().manual_seed(7))
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: str(v) for k, v in vars(args).items()}
    for item in args.runs.split(","):
        name, steps = item.split(":")
        row = {**run(name, int(steps), args, (test_clean, test_noisy)), "config": config}
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{row['run']:>14}  {row['psnr']:6.2f} dB  {row['flops'] / 1e9:9.1f} GFLOPs  {row['seconds']:7.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
