"""One task of the benchmark: plan the runs on a common FLOP budget, train them, compare, measure."""

from __future__ import annotations

import statistics
from typing import Any

import torch
from mge_deepinv.evaluation import evaluate, input_quality
from mge_deepinv.progress import Progress

from mge_plugins import Strategy, build_strategy
from mge_plugins.cost import measure_level_flops, step_flops, step_work_units
from mge_plugins.diagnostics import cost_to_target, quality_at_budget, ratio, steps_within_budget

from .checks import gradient_diagnostics, level_loss_for, memory_check, overhead_check, sample_batch
from .problems import Problem, make_problem
from .runs import RunResult, train_run
from .settings import FRONTIER_STRATEGIES, BenchSettings

__all__ = [
    "BUDGET_TOLERANCE",
    "MIN_BASELINE_GAIN_DB",
    "TARGET_MARGIN_DB",
    "baseline_check",
    "plan_runs",
    "planned_work",
    "run_task",
    "strategy_points",
    "to_target",
]

TARGET_MARGIN_DB = 0.1
"""A strategy reaches single-scale's final quality when it comes within this many dB of it."""

BUDGET_TOLERANCE = 0.05
"""A run planned for a budget stops short of it by less than one evaluation interval; curves ending within this
fraction of a budget count as reaching it."""

MIN_BASELINE_GAIN_DB = 1.0
"""Single-scale's final PSNR must beat the measurement's own PSNR by this much, or the report is marked: a
baseline that has not learned the task makes every saving measured against it meaningless."""


def _strategy(name: str, settings: BenchSettings, dims: int, steps: int) -> Strategy:
    base = "single" if name == "single+rrc" else name
    return build_strategy(
        base, loaded_batch_size=settings.batch_size, levels=settings.levels, spatial_dims=dims, iterations=steps
    )


def plan_runs(
    settings: BenchSettings, dims: int, flops_per_sample: tuple[float, ...]
) -> tuple[float, list[float], list[dict[str, Any]]]:
    """The full budget ``F`` (single-scale's run), the budgets ``F / 2**j``, and the runs that fit them.

    Curve strategies (single-scale, MGE, random-resized crops) run once, planned for ``F``, and are read at every
    budget along their curve (constant learning rate). Full-Multiscale and progressive resizing split their steps
    over stages by the run's length, so they run once per budget. Random-resized crops are skipped in 3D.

    Args:
        settings: strategies, steps, budgets, evaluations, batch size and levels.
        dims: spatial dimensions of the task (2 or 3).
        flops_per_sample: FLOPs of one sample's forward and backward per level.

    Returns:
        ``(F, budgets, runs)``; each run is a dict with ``strategy``, ``steps``, ``evals`` and ``budget``
        (``None`` for curve runs).
    """

    def step_cost(plan) -> float:
        return step_flops(plan.batch_sizes, flops_per_sample, base_level=plan.level)

    single = _strategy("single", settings, dims, settings.steps)
    budget = settings.steps * step_cost(single.plan(0))
    budgets = [budget / 2**j for j in reversed(range(settings.budgets))]
    runs = []
    for name in settings.strategies:
        if name == "single+rrc" and dims == 3:
            continue  # random-resized crops are a 2D photograph augmentation
        if name in FRONTIER_STRATEGIES:
            for b in budgets:
                steps = steps_within_budget(lambda t, n=name: _strategy(n, settings, dims, t), b, step_cost)
                runs.append({"strategy": name, "steps": steps, "evals": 1, "budget": b})
        else:
            steps = steps_within_budget(lambda t, n=name: _strategy(n, settings, dims, t), budget, step_cost)
            steps -= steps % settings.evals
            runs.append({"strategy": name, "steps": steps, "evals": settings.evals, "budget": None})
    return budget, budgets, runs


def strategy_points(results: list[RunResult], initial: dict[str, float]) -> list[dict[str, float]]:
    """Quality-against-cost points of a strategy: its curve, or the final points of its per-budget runs.

    Args:
        results: the strategy's runs (one curve run, or one run per budget).
        initial: the untrained network's quality, the first point of per-budget runs.
    """
    if len(results) == 1 and results[0].budget is None:
        return results[0].points
    return [results[0].points[0] if results else {"step": 0, **initial}] + [r.final for r in results]


def _median_seconds(repeats: list[RunResult]) -> RunResult:
    """The first repeat's run with every point's seconds replaced by the median over repeats."""
    first = repeats[0]
    for other in repeats[1:]:
        if [p["psnr"] for p in other.points] != [p["psnr"] for p in first.points]:
            raise RuntimeError(
                f"{first.strategy}: repeated runs reached different PSNRs; timing repeats need deterministic training"
            )
    for i, point in enumerate(first.points):
        point["seconds"] = statistics.median(r.points[i]["seconds"] for r in repeats)
    first.seconds_repeats = [r.seconds_repeats[0] for r in repeats]
    return first


def planned_work(settings: BenchSettings, dims: int, runs: list[dict[str, Any]]) -> float:
    """Work units of the planned runs (fine-equivalent samples), what the time left is estimated from.

    Args:
        settings: batch size and levels.
        dims: spatial dimensions of the task.
        runs: the runs of :func:`plan_runs`.
    """
    total = 0.0
    for run in runs:
        strategy = _strategy(run["strategy"], settings, dims, run["steps"])
        for step in range(run["steps"]):
            plan = strategy.plan(step)
            total += step_work_units(plan.batch_sizes, base_level=plan.level, spatial_dims=dims)
    return total


def _run_label(index: int, count: int, run: dict[str, Any], budgets: list[float]) -> str:
    label = f"{index}/{count} {run['strategy']}"
    if run["budget"] is not None:
        label += f" at F/{round(budgets[-1] / run['budget'])}" if run["budget"] < budgets[-1] else " at F"
    return label


def run_task(name: str, settings: BenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Run the benchmark for task ``name``; returns its section of the report.

    Args:
        name: task name.
        settings: the benchmark settings.
        progress: reports every training step (run, stage, level, saving so far, time left) and each measurement
            phase.
    """
    problem = make_problem(name, settings)
    flops_per_sample = _level_flops(problem, settings)
    budget, budgets, planned = plan_runs(settings, problem.spatial_dims, flops_per_sample)
    if progress is not None:
        work = planned_work(settings, problem.spatial_dims, planned)
        progress.start(settings.repeats * sum(r["steps"] for r in planned), settings.repeats * work)
    initial = evaluate(problem.make_model(), problem.make_physics(), problem.eval_clean, settings.seed + 1)
    repeats: list[list[RunResult]] = [[] for _ in planned]
    count = settings.repeats * len(planned)
    for repeat in range(settings.repeats):  # interleaved, so a slow spell of the machine hits every strategy
        for i, run in enumerate(planned):
            step = None
            if progress is not None:
                label = _run_label(repeat * len(planned) + i + 1, count, run, budgets)

                def step(work: float, fields: dict[str, Any], label: str = label) -> None:
                    progress.update(1, work, run=label, **fields)

            repeats[i].append(
                train_run(
                    problem, settings, run["strategy"], run["steps"], evals=run["evals"], budget=run["budget"],
                    initial=initial, on_step=step,
                )
            )  # fmt: skip
    by_strategy: dict[str, list[RunResult]] = {}
    for results in repeats:
        run = _median_seconds(results)
        by_strategy.setdefault(run.strategy, []).append(run)

    single = by_strategy["single"][0]
    target = single.final["psnr"] - TARGET_MARGIN_DB
    single_points = strategy_points(by_strategy["single"], initial)
    strategies = {}
    for strategy, results in by_strategy.items():
        points = strategy_points(results, initial)
        last = results[-1]
        if last.budget is not None:  # one run per budget: its final quality is the quality at that budget
            at_budget = [next((r.final["psnr"] for r in results if r.budget == b), None) for b in budgets]
        else:
            at_budget = [_curve_at(points, b) for b in budgets]
        strategies[strategy] = {
            "kind": "per-budget runs" if last.budget is not None else "curve",
            "points": points,
            "final": {
                **last.final,
                "seconds_median": statistics.median(last.seconds_repeats),
                "seconds_repeats": last.seconds_repeats,
            },
            "at_budget": at_budget,
            "to_target": to_target(points, single_points, target),
            "data_share": last.data_share,
            "runs": [{"steps": r.steps, "budget": r.budget, "plan": r.plan} for r in results],
        }
    if progress is not None:
        progress.note("measuring peak memory, MGE's gradient variance and the plugin's overhead")
    models = {s: _strategy(s, settings, problem.spatial_dims, by_strategy[s][-1].steps) for s in by_strategy}
    memory = memory_check(problem, settings, models, {s: by_strategy[s][-1].steps for s in by_strategy})
    for strategy, peak in memory["per_strategy"].items():
        strategies[strategy]["peak_memory"] = peak
    mge_sizes = _strategy("mge", settings, problem.spatial_dims, 1).plan(0).batch_sizes
    measured = input_quality(problem.make_physics(), problem.eval_clean, settings.seed + 1)
    return {
        "description": problem.description,
        "spatial_dims": problem.spatial_dims,
        "size": problem.size,
        "flops_per_sample": list(flops_per_sample),
        "budget_flops": budget,
        "budgets": budgets,
        "target_psnr": target,
        "baseline_check": baseline_check(measured["psnr"], single.final["psnr"]),
        "strategies": strategies,
        "diagnostics": _diagnostics(problem, settings, single, mge_sizes, flops_per_sample),
        "memory": memory,
        "overhead": overhead_check(problem, settings, mge_sizes),
    }


def to_target(points: list[dict[str, float]], single_points: list[dict[str, float]], target: float) -> dict[str, Any]:
    """The cost of reaching ``target`` and the saving over single-scale's cost of reaching it.

    Both costs are read the same way (:func:`~mge_plugins.diagnostics.cost_to_target`), so single-scale's saving
    over itself is exactly 1.

    Args:
        points: the strategy's quality-against-cost points.
        single_points: single-scale's points.
        target: the quality to reach (PSNR, dB).

    Returns:
        ``flops``, ``seconds``, ``flop_saving`` and ``time_saving`` (``None`` where the target is not reached).
    """
    cost = {key: cost_to_target(points, target, cost_key=key) for key in ("flops", "seconds")}
    single = {key: cost_to_target(single_points, target, cost_key=key) for key in ("flops", "seconds")}
    return {
        **cost,
        "flop_saving": ratio(single["flops"], cost["flops"]),
        "time_saving": ratio(single["seconds"], cost["seconds"]),
    }


def baseline_check(input_psnr: float, single_psnr: float, min_gain_db: float = MIN_BASELINE_GAIN_DB) -> dict[str, Any]:
    """Whether single-scale training learned the task: its final PSNR against the measurement's own.

    Args:
        input_psnr: PSNR of the measurement (:func:`mge_deepinv.evaluation.input_quality`).
        single_psnr: single-scale's final PSNR.
        min_gain_db: the gain below which the report is marked.

    Returns:
        ``input_psnr``, ``single_psnr``, ``gain_db``, ``min_gain_db`` and ``ok``.
    """
    gain = single_psnr - input_psnr
    return {
        "input_psnr": input_psnr, "single_psnr": single_psnr, "gain_db": gain, "min_gain_db": min_gain_db,
        "ok": gain >= min_gain_db,
    }  # fmt: skip


def _curve_at(points: list[dict[str, float]], budget: float) -> float | None:
    """Quality at ``budget`` along a curve that may stop short of it by less than one step."""
    end = points[-1]["flops"]
    if end < budget <= end * (1 + BUDGET_TOLERANCE):
        budget = end
    return quality_at_budget(points, budget)


def _level_flops(problem: Problem, settings: BenchSettings) -> tuple[float, ...]:
    model, physics = problem.make_model(), problem.make_physics()
    x = sample_batch(problem, settings, 1, 0)
    return measure_level_flops(
        lambda b, lv: level_loss_for(model, physics)(b, lv), x, settings.levels, model.parameters()
    )


def _diagnostics(
    problem: Problem, settings: BenchSettings, single: RunResult, sizes: tuple[int, ...], flops: tuple[float, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for restriction in ("area", "nearest"):
        out[restriction] = {}
        for state in ("initial", "trained"):
            model = problem.make_model()
            if state == "trained":
                assert single.model_state is not None
                model.load_state_dict(single.model_state)
            with torch.random.fork_rng(devices=[]):
                out[restriction][state] = gradient_diagnostics(problem, settings, model, sizes, flops, restriction)
    return out
