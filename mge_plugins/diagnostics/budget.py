"""Budget accounting: what a strategy's run costs, and how many steps fit a compute budget."""

from __future__ import annotations

from collections.abc import Callable

from ..strategies import StepPlan, Strategy

__all__ = ["run_cost", "steps_within_budget"]

StepCostFn = Callable[[StepPlan], float]
"""``step_cost(plan) -> cost`` of one optimizer step (FLOPs or work units)."""


def run_cost(strategy: Strategy, steps: int, step_cost: StepCostFn) -> float:
    """Total cost of the first ``steps`` steps of ``strategy``.

    Strategies with a stage schedule are summed stage by stage (a step's plan is constant inside a
    stage); the others step by step, so any strategy whose plan is a pure function of the step works.

    Args:
        strategy: the strategy, planned for its run.
        steps: number of steps from the start.
        step_cost: cost of one step from its plan (FLOPs or work units).

    Returns:
        The total, in the unit of ``step_cost``.

    Raises:
        ValueError: for a negative ``steps``.

    Example:
        >>> from mge_plugins import build_strategy
        >>> fms = build_strategy("full-multiscale", levels=1, batch_size=[4, 2], iterations=[3, 1])
        >>> run_cost(fms, 4, lambda plan: float(sum(plan.batch_sizes)))  # 3 x (4,) + 1 x (2, 8)
        22.0
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    schedule = getattr(strategy, "schedule", None)
    if schedule is None or not hasattr(schedule, "stages"):
        plans = [strategy.plan(t) for t in range(steps)]
        if len({p for p in plans}) <= 1:
            return steps * step_cost(plans[0]) if plans else 0.0
        return float(sum(step_cost(p) for p in plans))
    total = 0.0
    for stage in schedule.stages:
        count = max(0, min(stage.stop, steps) - stage.start)
        if count:
            total += count * step_cost(strategy.plan(stage.start))
    if steps > schedule.total_steps:
        total += (steps - schedule.total_steps) * step_cost(strategy.plan(schedule.total_steps - 1))
    return total


def steps_within_budget(
    make_strategy: Callable[[int], Strategy], budget: float, step_cost: StepCostFn, *, max_steps: int = 10**7
) -> int:
    """The largest step count ``T`` whose run, planned for ``T`` steps, costs at most ``budget``.

    ``make_strategy(T)`` builds the strategy planned for ``T`` steps (a Full-Multiscale schedule
    splits ``T`` over its stages, so the cost of a run is not ``T`` times one step's). The search
    is a bisection on ``T``, then a walk down past rounding non-monotonicities of the split.

    Args:
        make_strategy: ``T -> Strategy`` planned for ``T`` steps.
        budget: the compute budget, in the unit of ``step_cost``.
        step_cost: cost of one step from its plan.
        max_steps: upper end of the search.

    Returns:
        ``T >= 1``.

    Raises:
        ValueError: if not even one step fits ``budget``, naming the cost of the cheapest run.

    Example:
        >>> from mge_plugins import build_strategy
        >>> steps_within_budget(lambda t: build_strategy("single", batch_size=4), 10.0, lambda p: 4.0)
        2
    """

    def cost(steps: int) -> float:
        return run_cost(make_strategy(steps), steps, step_cost)

    low = 1
    try:
        first = cost(low)
    except ValueError:  # e.g. a schedule with more stages than steps
        first = None
    if first is None or first > budget:
        low = _smallest_valid(cost, max_steps)
        first = cost(low)
        if first > budget:
            raise ValueError(
                f"the budget {budget:.4g} does not fit the cheapest run ({low} steps cost {first:.4g}); "
                "raise the budget or use fewer levels"
            )
    high = low
    while high < max_steps and cost(min(2 * high, max_steps)) <= budget:
        high = min(2 * high, max_steps)
    if high == max_steps:
        return high
    upper = min(2 * high, max_steps)  # cost(upper) > budget
    while upper - high > 1:
        middle = (high + upper) // 2
        if cost(middle) <= budget:
            high = middle
        else:
            upper = middle
    return high


def _smallest_valid(cost: Callable[[int], float], max_steps: int) -> int:
    for steps in range(1, min(max_steps, 64) + 1):
        try:
            cost(steps)
        except ValueError:
            continue
        return steps
    raise ValueError("no run of at most 64 steps can be planned; check the strategy's options")
