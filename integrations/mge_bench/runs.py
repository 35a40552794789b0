"""One training run of the benchmark: ``MultiscaleTrainer`` with fixed evaluation noise and timing per level."""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from mge_deepinv.data import DictSamples
from mge_deepinv.evaluation import evaluate, quality_metrics
from mge_deepinv.progress import step_fields
from mge_deepinv.training import MultiscaleTrainer

from .problems import Problem
from .settings import BenchSettings

__all__ = ["RRC_ZOOM", "BenchTrainer", "ContinuingSampler", "RunResult", "StepCallback", "train_run"]

StepCallback = Callable[[float, dict[str, Any]], None]
"""``on_step(work_units, fields)``: called after every training step with its work units and what ran
(``stage``, ``level``, ``saving`` so far: :func:`mge_deepinv.progress.step_fields`)."""

RRC_ZOOM = (1.0, 4.0)
"""Zoom range of the random-resized-crop baseline: crops 1 to 4 times the training size, resized down."""


class ContinuingSampler(torch.utils.data.Sampler[int]):
    """Sequential indices that continue across epochs: epoch ``e`` reads ``[e * n, (e + 1) * n)``.

    A run with evaluations between epochs then still sees every crop of its dataset once, in the same order
    for every strategy.

    Args:
        per_epoch: indices per epoch.
    """

    def __init__(self, per_epoch: int) -> None:
        self.per_epoch = per_epoch
        self.offset = 0

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self):
        start, self.offset = self.offset, self.offset + self.per_epoch
        return iter(range(start, start + self.per_epoch))


class BenchTrainer(MultiscaleTrainer):
    """``MultiscaleTrainer`` that evaluates on fixed noise and times data loading and steps per level.

    Evaluation draws its measurement noise from ``eval_seed`` inside a forked RNG, so every evaluation of every
    strategy sees the same measurements and training's random stream is untouched.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.eval_seed = 0
        self.on_step: StepCallback | None = None
        self.data_seconds: dict[int, float] = defaultdict(float)
        self.step_seconds: dict[int, float] = defaultdict(float)

    def get_samples(self, iterators, g):
        """Deepinv's sampling, timed in training steps (loading plus the fine measurement, if generated)."""
        start = time.perf_counter()
        samples = super().get_samples(iterators, g)
        if self._in_train_step:
            self._data_in_step += time.perf_counter() - start
        return samples

    def step(self, epoch, progress_bar, train_ite: int | None = None, train: bool = True, **kwargs: Any) -> None:
        """Timed training steps; evaluation steps on fixed noise (``eval_seed``)."""
        if not train:
            super().step(epoch, progress_bar, train_ite=train_ite, train=train, **kwargs)
            return
        assert self.built_strategy is not None and train_ite is not None
        level = self.built_strategy.plan(train_ite).level
        self._data_in_step = 0.0
        before, work = self.train_seconds, self.cost.work_units
        super().step(epoch, progress_bar, train_ite=train_ite, train=train, **kwargs)
        self.step_seconds[level] += self.train_seconds - before
        self.data_seconds[level] += self._data_in_step
        if self.on_step is not None:
            self.on_step(self.cost.work_units - work, step_fields(self.last_step_scalars, self.built_strategy))


@dataclass
class RunResult:
    """What one run measured.

    Attributes:
        strategy: benchmark strategy name.
        steps: optimizer steps.
        budget: the FLOP budget the run was planned for (``None`` for curve runs, planned for the full one).
        points: quality against cost: ``step``, ``flops``, ``work_units``, ``seconds``, ``psnr``, ``ssim``,
            starting with the untrained network at cost 0.
        final: the last point.
        data_share: per level, the share of training time spent loading data.
        level_seconds: per level, training seconds.
        plan: the strategy as plain data.
        seconds_repeats: training seconds of each repeat.
        model_state: the trained weights (for the diagnostics at the trained weights).
    """

    strategy: str
    steps: int
    budget: float | None
    points: list[dict[str, float]]
    plan: dict[str, Any]
    data_share: dict[str, float]
    level_seconds: dict[str, float]
    seconds_repeats: list[float] = field(default_factory=list)
    model_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def final(self) -> dict[str, float]:
        """The run's last point."""
        return self.points[-1]


def train_run(
    problem: Problem,
    settings: BenchSettings,
    strategy: str,
    steps: int,
    *,
    evals: int = 1,
    budget: float | None = None,
    initial: dict[str, float] | None = None,
    on_step: StepCallback | None = None,
) -> RunResult:
    """Train ``problem``'s network with ``strategy`` for ``steps`` steps, evaluating ``evals`` times.

    Args:
        problem: the task.
        settings: batch size, levels, learning rate, device, seed.
        strategy: ``"single"``, ``"mge"``, ``"full-multiscale"``, ``"progressive-resizing"`` or ``"single+rrc"``.
        steps: optimizer steps, a multiple of ``evals``.
        evals: evaluations, evenly spaced, the last at the end.
        budget: the budget the run was planned for, recorded as given.
        initial: the untrained network's quality (computed when not given).
        on_step: called after every training step with its work units and what ran (progress).
    """
    if steps % evals:
        raise ValueError(f"steps={steps} must be a multiple of evals={evals}")
    physics, model = problem.make_physics(), problem.make_model()
    if initial is None:
        initial = evaluate(model, physics, problem.eval_clean, settings.seed + 1)
    torch.manual_seed(settings.seed)
    zoom = RRC_ZOOM if strategy == "single+rrc" else None
    per_epoch = steps // evals
    loader = torch.utils.data.DataLoader(
        DictSamples(problem.train_set(steps * settings.batch_size, zoom)), batch_size=settings.batch_size,
        sampler=ContinuingSampler(per_epoch * settings.batch_size),
    )  # fmt: skip
    eval_loader = torch.utils.data.DataLoader(
        DictSamples(list(problem.eval_clean.cpu())), batch_size=len(problem.eval_clean)
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*progress bar frequency.*")
        trainer = BenchTrainer(
            model=model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=settings.lr),
            train_dataloader=loader, eval_dataloader=eval_loader, epochs=evals, online_measurements=True,
            metrics=quality_metrics(), save_path=None, device=settings.device,
            verbose=False, show_progress_bar=False, compute_train_metrics=False,
            non_blocking_transfers=torch.device(settings.device).type == "cuda",
            strategy="single" if strategy == "single+rrc" else strategy, levels=settings.levels,
            budget="steps",  # the benchmark plans each run's steps for its FLOP budget itself
        )  # fmt: skip
        trainer.eval_seed = settings.seed + 1
        trainer.on_step = on_step
        trainer.train()
    points = [{"step": 0, "flops": 0.0, "work_units": 0.0, "seconds": 0.0, **initial}]
    for record in trainer.history:
        points.append(
            {
                "step": record["step"], "flops": record["flops"], "work_units": record["work_units"],
                "seconds": record["seconds"], "psnr": record["PSNR"], "ssim": record["SSIM"],
            }
        )  # fmt: skip
    total = sum(trainer.step_seconds.values())
    assert trainer.built_strategy is not None
    return RunResult(
        strategy=strategy,
        steps=steps,
        budget=budget,
        points=points,
        plan=trainer.built_strategy.describe(),
        data_share={str(k): trainer.data_seconds[k] / v for k, v in sorted(trainer.step_seconds.items()) if v},
        level_seconds={str(k): v for k, v in sorted(trainer.step_seconds.items())},
        seconds_repeats=[total],
        model_state={k: v.detach().clone() for k, v in model.state_dict().items()},
    )
