"""Measurements beside the training runs: MGE diagnostics, peak memory and the plugin's per-step overhead."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import deepinv as dinv
import torch
from mge_deepinv.training import LevelPoser

from mge_plugins import MGEConfig, Strategy, mge_backward, mge_step, restrict, split_batch
from mge_plugins.cost import step_flops, step_work_units
from mge_plugins.diagnostics import estimator_variance, flat_gradient, level_difference_norms, peak_memory

from .problems import Problem
from .settings import BenchSettings

__all__ = ["gradient_diagnostics", "level_loss_for", "memory_check", "overhead_check", "sample_batch"]

LevelLossFn = Callable[[torch.Tensor, int], torch.Tensor]


def level_loss_for(model: torch.nn.Module, physics: dinv.physics.Physics, restriction: str = "area") -> LevelLossFn:
    """``level_loss(x, level)``: the supervised MSE of ``x`` posed at ``level`` with the level's own operator.

    The same posing as ``MultiscaleTrainer`` in physics mode at its defaults (restrict ``x``, apply the
    coarse operator, keep the per-pixel noise level and the operator's kernel).

    Args:
        model: called as ``model(y, physics)``.
        physics: the fine operator; coarse levels use its coarsened versions.
        restriction: restriction method of ``x`` (``"area"`` or ``"nearest"``).

    Returns:
        ``level_loss(x, level) -> loss``, as :func:`mge_plugins.mge_backward` takes it.
    """
    poser = LevelPoser("physics", "keep", restriction)
    mse = torch.nn.MSELoss()

    def level_loss(x: torch.Tensor, level: int) -> torch.Tensor:
        posed = poser.pose(x, None, physics, level, "physics")
        return mse(model(posed.y, posed.physics), posed.x)

    return level_loss


def sample_batch(problem: Problem, settings: BenchSettings, size: int, draw: int) -> torch.Tensor:
    """``size`` fresh training crops for draw number ``draw`` (disjoint from the runs' crops).

    Args:
        problem: the task.
        settings: the device.
        size: number of crops.
        draw: the draw's number; draws of the same size do not overlap.

    Returns:
        The crops, one batch on ``settings.device``.
    """
    dataset = problem.train_set(10**9, None)
    start = 10**8 + draw * size
    return torch.stack([dataset[i] for i in range(start, start + size)]).to(settings.device)


def gradient_diagnostics(
    problem: Problem,
    settings: BenchSettings,
    model: torch.nn.Module,
    sizes: tuple[int, ...],
    flops_per_sample: tuple[float, ...],
    restriction: str,
) -> dict[str, Any]:
    """Variance of the MGE gradient against single-scale SGD at equal cost, and per-level difference norms.

    Single-scale draws use ``round(work units)`` fine samples, the MGE step's cost in fine images; both
    variances are also reported times their FLOPs, the figure that compares estimators at equal cost.

    Args:
        problem: the task.
        settings: variance draws, norm samples, seed and device.
        model: the network, at the weights to diagnose.
        sizes: MGE batch sizes per level, finest first.
        flops_per_sample: FLOPs of one sample's forward and backward per level.
        restriction: restriction method of the coarse levels.

    Returns:
        The report's ``diagnostics`` entry for one restriction and one set of weights.
    """
    physics = problem.make_physics()
    params = [p for p in model.parameters() if p.requires_grad]
    level_loss = level_loss_for(model, physics, restriction)
    levels = len(sizes) - 1
    loaded = max(sizes)
    torch.manual_seed(settings.seed + 7)
    mge_draws = iter(range(settings.variance_draws))
    single_size = max(1, round(step_work_units(sizes, spatial_dims=problem.spatial_dims)))

    def mge_draw() -> torch.Tensor:
        x = sample_batch(problem, settings, loaded, next(mge_draws))
        return flat_gradient(lambda: mge_backward(level_loss, split_batch(x, sizes)), params)

    single_draws = iter(range(settings.variance_draws, 2 * settings.variance_draws))

    def single_draw() -> torch.Tensor:
        x = sample_batch(problem, settings, single_size, next(single_draws))
        return flat_gradient(lambda: level_loss(x, 0).backward(), params)

    mge = estimator_variance(mge_draw, settings.variance_draws, cost=step_flops(sizes, flops_per_sample))
    single = estimator_variance(single_draw, settings.variance_draws, cost=single_size * flops_per_sample[0])
    x = sample_batch(problem, settings, settings.norm_samples, 2 * settings.variance_draws)
    norms = level_difference_norms(level_loss, [x[i : i + 1] for i in range(len(x))], levels, params)
    return {
        "mge_batch_sizes": list(sizes),
        "single_batch_size": single_size,
        "mge": mge.to_dict(),
        "single": single.to_dict(),
        "variance_ratio_at_equal_cost": mge.variance_times_cost / single.variance_times_cost,
        "levels": [n.to_dict() for n in norms],
    }


def memory_check(
    problem: Problem, settings: BenchSettings, strategies: dict[str, Strategy], steps: dict[str, int]
) -> dict[str, Any]:
    """Peak memory of each strategy's largest step, and of an MGE step against one fine pass of its finest batch.

    Memory is the peak of bytes saved for backward (every device) and the CUDA allocator's peak increase.

    Args:
        problem: the task.
        settings: batch size, seed and device.
        strategies: the strategies by name, each planned for its run.
        steps: each strategy's run length.

    Returns:
        The report's ``memory`` entry: ``per_strategy`` peaks and ``mge_step_vs_fine_pass``.
    """
    torch.manual_seed(settings.seed)
    model, physics = problem.make_model(), problem.make_physics()
    level_loss = level_loss_for(model, physics)
    x = sample_batch(problem, settings, settings.batch_size, 0)
    per_strategy = {}
    for name, strategy in strategies.items():
        schedule = getattr(strategy, "schedule", None)
        starts = [s.start for s in schedule.stages] if schedule is not None else [0]
        peaks = []
        for start in starts:
            plan = strategy.plan(min(start, steps[name] - 1))
            peaks.append(
                peak_memory(
                    lambda plan=plan: mge_backward(level_loss, split_batch(x, plan.batch_sizes), base_level=plan.level),
                    settings.device,
                )
            )
            model.zero_grad(set_to_none=True)
        per_strategy[name] = max(peaks, key=lambda p: p["saved_bytes"])
    mge_sizes = strategies["mge"].plan(0).batch_sizes if "mge" in strategies else None
    target = None
    if mge_sizes is not None:
        fine = peak_memory(lambda: level_loss(x[: mge_sizes[0]], 0).backward(), settings.device)
        model.zero_grad(set_to_none=True)
        step = per_strategy["mge"]
        target = {
            "mge_batch_sizes": list(mge_sizes),
            "mge_step": step,
            "fine_pass": fine,
            "saved_ratio": step["saved_bytes"] / fine["saved_bytes"],
            "cuda_ratio": step["cuda_bytes"] / fine["cuda_bytes"] if fine["cuda_bytes"] else None,
        }
    return {"per_strategy": per_strategy, "mge_step_vs_fine_pass": target}


def overhead_check(
    problem: Problem, settings: BenchSettings, sizes: tuple[int, ...], blocks: int = 7
) -> dict[str, Any]:
    """Seconds per step of ``mge_step`` against a hand-written loop doing the same passes, interleaved.

    Both restrict the same ``(noisy, clean)`` batch, run ``+loss_k`` and ``-loss_{k+1}`` per term with one
    backward each, and take one Adam step. The overhead is the ratio of the medians over ``blocks`` timing
    blocks of ``settings.overhead_steps`` steps each, minus one.

    Args:
        problem: the task (its backbone network is timed).
        settings: steps per block, seed and device.
        sizes: MGE batch sizes per level, finest first.
        blocks: timing blocks per side.

    Returns:
        The report's ``overhead`` entry.
    """
    torch.manual_seed(settings.seed)
    model = problem.make_model().backbone_net
    x = sample_batch(problem, settings, max(sizes), 0)
    y = x + 0.1 * torch.randn_like(x)
    config = MGEConfig(levels=len(sizes) - 1, batch_sizes=sizes, spatial_dims=problem.spatial_dims)
    mse = torch.nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def plugin() -> None:
        mge_step(model, optimizer, mse, (y, x), config)

    def hand_written() -> None:
        optimizer.zero_grad(set_to_none=True)
        last = len(sizes) - 1
        for k, size in enumerate(sizes):
            yk, xk = restrict(y[:size], k), restrict(x[:size], k)
            mse(model(yk), xk).backward()
            if k < last:
                yc, xc = restrict(y[:size], k + 1), restrict(x[:size], k + 1)
                (-mse(model(yc), xc)).backward()
        optimizer.step()

    def timed(fn: Callable[[], None]) -> float:
        if settings.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(settings.overhead_steps):
            fn()
        if settings.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / settings.overhead_steps

    plugin(), hand_written()  # warm-up
    plugin_times, hand_times = [], []
    for _ in range(blocks):
        plugin_times.append(timed(plugin))
        hand_times.append(timed(hand_written))
    plugin_s, hand_s = statistics.median(plugin_times), statistics.median(hand_times)
    return {
        "batch_sizes": list(sizes),
        "plugin_seconds_per_step": plugin_s,
        "hand_written_seconds_per_step": hand_s,
        "overhead": plugin_s / hand_s - 1.0,
        "blocks": blocks,
        "steps_per_block": settings.overhead_steps,
    }
