"""``mge-bench``: single-scale, MGE, Full-Multiscale and two baselines on a common FLOP budget."""

from __future__ import annotations

from .cli import main, run_benchmark
from .problems import Problem, make_problem
from .runs import RunResult, evaluate, train_run
from .settings import PRESETS, STRATEGIES, BenchSettings
from .suite import plan_runs, run_task

__all__ = [
    "PRESETS",
    "STRATEGIES",
    "BenchSettings",
    "Problem",
    "RunResult",
    "evaluate",
    "main",
    "make_problem",
    "plan_runs",
    "run_benchmark",
    "run_task",
    "train_run",
]
