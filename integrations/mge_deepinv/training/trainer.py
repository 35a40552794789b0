"""``MultiscaleTrainer``: ``deepinv.Trainer`` with MGE and Full-Multiscale training strategies."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from deepinv import Trainer
from deepinv.datasets.base import batch_as_dict
from deepinv.utils import AverageMeter

from mge_plugins import CostMeter, Strategy, build_strategy
from mge_plugins.checkpoint import (
    add_checksum,
    atomic_write,
    load_checkpoint,
    loader_generators,
    rng_state,
    set_rng_state,
)
from mge_plugins.checks import check_batch_rank, check_dataset_length, warn_batchnorm
from mge_plugins.distributed import is_main_process, set_loader_epoch
from mge_plugins.estimator import per_sample_mean
from mge_plugins.host_step import (
    DEFAULT_BUDGET,
    MultiscaleStep,
    check_resumed_strategy,
    host_options,
    validate_host_options,
)
from mge_plugins.scalars import step_scalars
from mge_plugins.strategies import STAGED_STRATEGIES, fit_levels, refit_options, warn_fitted_levels

from ..physics import level_grid_shape
from .levels import LevelPoser, auto_restriction, check_losses, level_losses, per_sample_losses, slice_physics

__all__ = ["MultiscaleTrainer"]


def _per_sample(value: torch.Tensor, loss_fn: Any) -> torch.Tensor:
    """One loss per sample, as fused passes weigh them (deepinv losses return ``(B,)``)."""
    fix = (
        "return a (B,) tensor as deepinv's losses and metrics do (e.g. SupLoss(metric=dinv.metric.MSE())), "
        "or set fused=False"
    )
    return per_sample_mean(value, type(loss_fn).__name__, fix)


def _no_optimizer_step(*args: Any, **kwargs: Any) -> None:
    """Stands in for ``optimizer.step`` during a skipped training step."""


@dataclass
class MultiscaleTrainer(Trainer):
    r"""``deepinv.Trainer`` that trains with Multiscale Gradient Estimation or Full-Multiscale.

    Replace ``dinv.Trainer(`` by ``MultiscaleTrainer(``; every other argument keeps its meaning.
    Evaluation and testing stay at the fine level with the trainer's metrics. With
    ``strategy="single"`` the trainer behaves exactly like ``deepinv.Trainer``.

    Each training iteration loads one batch from the train dataloader and cuts it into the
    per-term batches of the step (nested prefixes by default), so the loader's batch size ``B``
    bounds the largest term. Unless ``mge_batch_size``, ``growth`` or ``batch_sizes`` say
    otherwise, the finest term keeps ``B // 4`` samples and the sizes grow geometrically to ``B`` at
    the coarsest level (``B = 16``, 2 levels: 4, 8, 16); the coarsest Full-Multiscale stage trains
    on the whole batch. A short last batch (``drop_last=False``) caps every term at its size. A stage
    whose derived nested terms would end in equal sizes (a batch of 1 gives ``(1, 1, 1)``: one sample
    at every level, which telescopes to its fine loss) drops those coarse terms.

    Every training step adds its scalars to the ``logs`` deepinv already shows and writes (the
    progress bar, the epoch's line with ``verbose``, ``wandb_vis``, ``mlflow_vis``; every step with
    ``log_train_batch=True``): ``mge_stage``, ``mge_level``, ``mge_term_{k}``, ``mge_saving``,
    ``mge_work_units`` and ``mge_flops`` (see :mod:`mge_plugins.scalars`), also kept in
    :attr:`last_step_scalars`. ``TotalLoss`` is the fine loss of the step (term 0's batch at the
    step's level), and each loss's share of it feeds deepinv's per-loss meters, so ``logs`` (with
    several losses) and ``loss_history`` hold per-loss values as with ``deepinv.Trainer``.

    :param str, mge_plugins.Strategy strategy: ``"full-multiscale"`` (default), ``"mge"``, ``"single"``,
        ``"progressive-resizing"``, a registered strategy name, or a built :class:`mge_plugins.Strategy`.
    :param int levels: number of coarser levels (``"mge"``) or stages minus one
        (``"full-multiscale"``).
    :param int, None mge_batch_size: finest-term batch size; ``None`` derives it from the loader.
    :param float, None growth: batch growth per coarser level; ``None`` derives it from the loader
        (see above), or is 4 in 2D and 8 in 3D when ``mge_batch_size`` is given.
    :param list[int], None batch_sizes: explicit per-term sizes for ``"mge"``.
    :param str restriction: ``"auto"`` (default), ``"area"``, ``"nearest"`` or ``"antialias"``.
        ``"auto"`` is resolved when the trainer is built (the attribute then holds the choice):
        ``"nearest"`` for an ``Inpainting`` whose mask is not constant on blocks of the coarsest
        level (pixel masks: area restriction would average observed and missing pixels, a different
        task), ``"area"`` otherwise (see :func:`mge_deepinv.training.levels.auto_restriction`).
    :param str coarse_mode: ``"auto"`` (default: the operator's coarse recipe when there is one
        and measurements are generated online, restriction of the fine measurement otherwise),
        ``"physics"`` (raise if no recipe) or ``"restrict"``.
    :param str coarse_noise: ``"keep"`` (default) the per-pixel noise level on coarse levels, so
        coarse stages train the fine task, or ``"restrict"`` it (``sigma / 2`` per level in 2D).
    :param str coarse_operator: ``"keep"`` (default) the operator's scale per pixel on coarse
        levels: ``Blur``, ``BlurFFT`` and ``Downsampling`` keep their kernel on every level and
        ``Inpainting`` its holes' size (a window of the fine mask), so coarse stages train the fine
        task's local inversion, as ``coarse_noise="keep"`` does for the noise; or ``"restrict"`` it
        to the restricted image (a blur of ``s`` fine pixels becomes one of about ``s / 2`` coarse
        pixels, an 8 px hole a 4 px one). Other operators are coarsened the same way by both, and
        measurements given offline are always restricted (see :func:`mge_deepinv.coarsen_physics`).
    :param int, list[int], None iterations: Full-Multiscale steps: total (split by halving per
        finer stage) or per stage; ``None`` = every iteration of the run.
    :param int, None mge_levels: cap on MGE levels inside Full-Multiscale stages.
    :param int, None size_multiple: divisor the network needs on every level (e.g. 8 for a U-Net
        with 3 downsamplings); ``None`` checks with a dry forward pass at the coarsest level.
    :param str split: ``"nested"`` or ``"disjoint"`` per-term batches.
    :param str nonfinite: ``"raise"`` (default) a :class:`mge_plugins.NonFiniteError` naming the
        term and level when a level's loss or the accumulated gradient is NaN/inf, with the weights
        and optimizer state untouched; ``"skip"`` such steps (no optimizer step, one warning, counted
        in :attr:`skipped_steps`). With ``mixed_precision``, gradients are left to the ``GradScaler``.
    :param str allocation: ``"fixed"`` (default) per-term sizes, or ``"adaptive"`` for ``"mge"`` and
        inside each ``"full-multiscale"`` stage: the sizes and the number of levels are re-chosen every
        ``reestimate_every`` steps from measured per-level gradient variances
        (:class:`mge_plugins.allocation.AdaptiveMGEStrategy`,
        :class:`mge_plugins.allocation.AdaptiveFullMultiscaleStrategy`).
    :param int reestimate_every: steps between measurements of the adaptive allocation.
    :param str, float budget: what Full-Multiscale and progressive resizing spend, against the
        single-scale compute of your epochs. A fraction ``f > 0``: the iterations that ``f`` times
        that compute pays for (the epochs are extended, your learning-rate schedule stretched with
        them, and a line says so); the default, ``0.33``, is the share at which the bundled tasks
        kept single-scale's quality over five seeds, at 3x fewer FLOPs (BENCHMARKS.md, "The default
        budget"). ``"compute"``: the whole single-scale compute, for the best quality at the same
        cost. ``"steps"``: the iterations of your epochs, each cheaper than a single-scale one
        (5 to 6x fewer FLOPs with 2 levels, and a worse model on short runs).
    :param int, None eval_seed: draw the measurement noise of every evaluation from this seed, in a
        forked random stream, and the parameters of a ``physics_generator`` (random masks, filters) from
        a stream of each generator's own seeded by it at the start of every evaluation, so evaluations
        see the same held-out measurements across steps and strategies and leave the training's
        randomness untouched; ``None`` (default) draws them as deepinv does.
    :param bool fused: one weighted forward/backward per level instead of two per difference term
        (:func:`mge_plugins.mge_backward`): the same gradient for fewer FLOPs (about 20 % fewer
        in the finest Full-Multiscale stage with 3 levels). Each level's loss must depend on the samples
        only, as with ``coarse_mode="restrict"`` or offline measurements; coarse operators that
        draw their own noise are refused on the first step, with the fix named.
    :param bool allow_strategy_change: resume a checkpoint trained with another strategy (other name,
        levels, sizes or stages), to fine-tune from it; the cost record then starts again. By default
        (``False``) such a resume is refused, naming both strategies.
    :param bool trust_checkpoint: let ``ckpt_pretrained`` unpickle any object (``weights_only=False``),
        which runs whatever code the file holds; only for a trusted file that holds more than tensors and
        plain containers. By default (``False``) such a file is refused with an error saying so.
    """

    strategy: str | Strategy = "full-multiscale"
    levels: int = 2
    mge_batch_size: int | None = None
    growth: float | None = None
    batch_sizes: Sequence[int] | None = None
    restriction: str = "auto"
    coarse_mode: str = "auto"
    coarse_noise: str = "keep"
    coarse_operator: str = "keep"
    iterations: int | Sequence[int] | None = None
    mge_levels: int | None = None
    size_multiple: int | None = None
    split: str = "nested"
    nonfinite: str = "raise"
    trust_checkpoint: bool = False
    allow_strategy_change: bool = False
    allocation: str = "fixed"
    reestimate_every: int = 100
    budget: str | float = DEFAULT_BUDGET
    eval_seed: int | None = None
    fused: bool = False

    def __post_init__(self) -> None:
        if self.restriction == "auto":
            self.restriction = auto_restriction(self.physics, self.levels)
        validate_host_options(self)
        super().__post_init__()
        self.poser = LevelPoser(self.coarse_mode, self.coarse_noise, self.restriction, self.coarse_operator)
        self.multiscale: MultiscaleStep | None = None
        self.cost = CostMeter()
        self._train_ite = 0
        self._posed_term0: tuple | None = None
        self._term0_losses: list[torch.Tensor] = []
        self._clip_skipped = False
        self.train_seconds = 0.0
        self._in_train_step = False
        self._stepping = False
        self._next_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.last_step_scalars: dict[str, int | float] = {}
        self._eval_streams: dict[int, torch.Tensor] = {}
        self._cut_step: int | None = None  # the budget's last step, when it falls inside an epoch

    # --- setup -----------------------------------------------------------------------------

    def setup_train(self, train: bool = True, **kwargs: Any) -> None:
        """Deepinv's setup, then build the strategy and check losses and the network.

        Under ``torch.distributed``, ranks other than 0 neither print, plot, log to wandb/mlflow
        nor write checkpoints (``save_path`` is cleared on them).
        """
        if train and not is_main_process():
            self.verbose = self.show_progress_bar = self.plot_images = False
            self.wandb_vis = self.mlflow_vis = False
            self.save_path = None
        super().setup_train(train=train, **kwargs)
        self._eval_streams = {}
        self._next_epoch = self.epoch_start if train else None
        if not train:
            return
        if not hasattr(self, "check_grad_val"):  # deepinv creates it only with check_grad=True
            self.check_grad_val = AverageMeter("Gradient norm", ":.2e")
        strategy = self._build_strategy()
        self._extend_for_budget(strategy)
        if strategy.name != "single":
            check_losses(self.losses)
            warn_batchnorm(self.model, "deepinv.models.UNet(batch_norm=False)")
            self._check_dataset()
        self.cost = CostMeter(
            spatial_dims=self._spatial_dims(), baseline_batch_size=self._loader_batch_size(), flops_per_sample=None
        )
        self.multiscale = MultiscaleStep(
            strategy,
            self.cost,
            split=self.split,
            nonfinite=self.nonfinite,
            size_multiple=self.size_multiple,
            spatial_dims=self._spatial_dims(),
            fused=self.fused,
        )
        checkpoint_state = getattr(self, "_resumed_multiscale_state", None)
        plain = getattr(self, "_resumed_plain_checkpoint", None)
        if plain is not None:
            self._resumed_plain_checkpoint = None
            warnings.warn(
                f"{plain} has no multiscale state (a plain deepinv checkpoint): the weights, the optimizer and the "
                "epoch are restored, but not the random streams (the run will not repeat an uninterrupted one "
                "exactly) nor the cost record, which starts at zero",
                stacklevel=2,
            )
        if checkpoint_state is not None:
            self._resumed_multiscale_state = None
            keep = check_resumed_strategy(
                checkpoint_state.get("strategy"), strategy, allow_change=self.allow_strategy_change
            )
            if keep and "allocation" in checkpoint_state and hasattr(strategy, "load_state_dict"):
                strategy.load_state_dict(checkpoint_state["allocation"])
            if keep:
                self.cost.load_state_dict(checkpoint_state["cost"])
                self.train_seconds = checkpoint_state.get("train_seconds", 0.0)
                self.history = list(checkpoint_state.get("history", []))
            if checkpoint_state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(checkpoint_state["scaler"])
            if "rng" in checkpoint_state:  # last: nothing may draw between here and the next epoch's loader
                set_rng_state(checkpoint_state["rng"], self._owned_generators())

    @property
    def skipped_steps(self) -> int:
        """Training steps skipped because of a non-finite loss or gradient (``nonfinite="skip"``)."""
        return 0 if self.multiscale is None else self.multiscale.policy.skipped

    @property
    def built_strategy(self) -> Strategy | None:
        """The strategy built for this run by :meth:`setup_train` (``None`` before)."""
        return None if self.multiscale is None else self.multiscale.strategy

    def _check_dataset(self) -> None:
        """Sample rank and dataset length, from the dataset itself before any batch is loaded."""
        loader = self.train_dataloader[0]
        dataset = loader.dataset
        try:
            length = len(dataset)
        except TypeError:  # an iterable dataset: checked on the first batch instead
            return
        need = self._loader_batch_size()
        check_dataset_length(length, need)
        sample = dataset[0] if length else None
        if isinstance(sample, dict):
            sample = sample.get("x", sample.get("y"))
        elif isinstance(sample, (tuple, list)):
            sample = sample[0]
        if isinstance(sample, torch.Tensor):
            check_batch_rank(sample, what="the training dataset's samples", batched=False)

    def _loader_batch_size(self) -> int:
        loader = self.train_dataloader[0]
        size = getattr(loader, "batch_size", None)
        if not size:
            raise ValueError("MultiscaleTrainer needs train dataloaders with a fixed batch_size")
        return int(size)

    def _spatial_dims(self) -> int:
        sample = self.train_dataloader[0].dataset[0]
        if isinstance(sample, dict):
            sample = sample.get("x", sample.get("y"))
        elif isinstance(sample, (tuple, list)):
            sample = sample[0]
        return 3 if isinstance(sample, torch.Tensor) and sample.dim() == 4 else 2

    def _total_iterations(self) -> int:
        batches = min(len(loader) - loader.drop_last for loader in self.train_dataloader)
        return min(self.epochs * batches, self.max_batch_steps + 1)

    def _extend_for_budget(self, strategy: Strategy) -> None:
        """With a compute ``budget``, run the epochs (and steps) the strategy's schedule needs."""
        total = strategy.total_steps
        planned = self._total_iterations()
        per_stage = isinstance(self.iterations, (list, tuple))  # a budget does not change given stage lengths
        if self.budget == "steps" or per_stage or total is None or total == planned:
            return
        batches = min(len(loader) - loader.drop_last for loader in self.train_dataloader)
        epochs = -(-total // batches)  # epochs count from the run's start, as the strategy's steps do
        self.max_batch_steps = total - 1  # deepinv runs max_batch_steps + 1 steps: exactly the schedule
        self._cut_step = total - 1 if total % batches else None  # deepinv would stop there without evaluating
        print(
            f"budget={self.budget!r}: {strategy.name} runs {total} steps ({epochs} epochs instead of {self.epochs}) "
            f"for the compute budget of {planned} single-scale steps"
        )
        resumed = getattr(self, "_resumed_multiscale_state", None) or {}
        if resumed.get("strategy") != strategy.describe():  # a resumed run's scheduler was stretched before saving
            self._stretch_schedule(self.epochs, epochs)
        self.epochs = epochs

    def _stretch_schedule(self, before: int, after: int) -> None:
        """Fit the learning-rate schedule to the extended epochs, or warn that it was built for the planned run.

        deepinv steps the scheduler once per epoch. A ``CosineAnnealingLR`` whose ``T_max`` is the
        planned epochs would climb back up after them, a ``StepLR`` or ``MultiStepLR`` would decay
        more often (10x each time, by default): their periods, milestones or ``T_max`` are scaled by
        ``after / before``, and an ``ExponentialLR``'s ``gamma`` is taken to the power
        ``before / after``, so each reaches the same learning rate at the end of the extended run as
        it would have at the end of the planned one. Other schedulers get a warning.
        """
        scheduler, ratio = self.scheduler, after / before
        lr = torch.optim.lr_scheduler
        if scheduler is None:
            return
        if isinstance(scheduler, lr.CosineAnnealingLR) and scheduler.T_max == before:
            scheduler.T_max, change = after, f"CosineAnnealingLR's T_max follows, {before} -> {after} epochs"
        elif isinstance(scheduler, lr.StepLR):
            old, scheduler.step_size = scheduler.step_size, max(1, round(scheduler.step_size * ratio))
            change = f"StepLR's step_size follows, {old} -> {scheduler.step_size} epochs"
        elif isinstance(scheduler, lr.MultiStepLR):
            old = sorted(scheduler.milestones.elements())
            scheduler.milestones = Counter(round(m * ratio) for m in old)
            change = f"MultiStepLR's milestones follow, {old} -> {sorted(scheduler.milestones.elements())}"
        elif isinstance(scheduler, lr.ExponentialLR):
            old, scheduler.gamma = scheduler.gamma, scheduler.gamma ** (1 / ratio)
            change = f"ExponentialLR's gamma follows, {old:g} -> {scheduler.gamma:.6g} per epoch"
        else:
            warnings.warn(
                f"budget={self.budget!r} extends the run from {before} to {after} epochs, but the scheduler "
                f"({type(scheduler).__name__}) was built for the planned run; build it for {after} epochs, or use "
                "budget='steps'",
                stacklevel=4,
            )
            return
        print(f"budget={self.budget!r}: {change}")

    def _build_strategy(self) -> Strategy:
        iterations = self.iterations if self.iterations is not None else self._total_iterations()
        options = host_options(
            self, loaded_batch_size=self._loader_batch_size(), spatial_dims=self._spatial_dims(), iterations=iterations
        )
        if isinstance(self.strategy, str) and self.strategy in STAGED_STRATEGIES:
            # A run too short for levels + 1 stages trains fewer stages, with one warning.
            levels, reason = fit_levels(self.levels, iterations=iterations)
            warn_fitted_levels(self.levels, levels, reason, stacklevel=4)
            options = refit_options(options, levels)
        return build_strategy(self.strategy, **options)

    # --- training step -------------------------------------------------------------------

    def step(self, epoch, progress_bar, train_ite: int | None = None, train: bool = True, **kwargs: Any) -> None:
        """Deepinv's step; records the global iteration that drives the strategy and its wall-clock."""
        if train and train_ite is not None:
            self._train_ite = train_ite
        if train:
            self._eval_streams = {}  # the next evaluation starts its generators' streams again
        self._in_train_step = train
        start = time.perf_counter()
        self._stepping = True
        try:
            if not train and self.eval_seed is not None:
                devices = [self.device] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(self.eval_seed)
                    super().step(epoch, progress_bar, train_ite=train_ite, train=train, **kwargs)
            else:
                super().step(epoch, progress_bar, train_ite=train_ite, train=train, **kwargs)
        finally:
            self._stepping = False
            if vars(self.optimizer).get("step") is _no_optimizer_step:  # installed for a skipped step
                del self.optimizer.step
        if train:
            if self.multiscale is not None:
                self.multiscale.after_update(self.model)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.train_seconds += time.perf_counter() - start
            if train_ite is not None and train_ite == self._cut_step and self.eval_dataloader:
                self._evaluate_cut_epoch(epoch, progress_bar, train_ite)

    def _evaluate_cut_epoch(self, epoch: int, progress_bar, train_ite: int) -> None:
        """The end-of-epoch bookkeeping and evaluation deepinv skips when a budget ends the run inside an epoch.

        ``deepinv.Trainer.train`` evaluates (and saves the best model) after the last batch of an
        epoch only; a budget whose steps are not a whole number of epochs stops at
        ``max_batch_steps`` before it, so the trained network would never be evaluated, and
        :attr:`history`, the curves and ``ckp_best`` would end one evaluation early. This runs that
        evaluation as deepinv runs it at an epoch's end.

        :param int epoch: the (last) epoch.
        :param progress_bar: the training step's progress bar.
        :param int train_ite: the global iteration of the last training step.
        """
        if self.log_train_batch:  # deepinv evaluates every `eval_interval` batches then, and after this step
            batches = min(len(loader) - loader.drop_last for loader in self.train_dataloader)
            if (train_ite - epoch * batches) % self.eval_interval == 0:
                return
        else:  # deepinv stores the epoch's training losses at its last batch
            for idx, loss in enumerate(self.losses):
                self.loss_history[loss.__class__.__name__].append(self.logs_losses_train[idx].avg)
        self.current_eval_iterators = [iter(loader) for loader in self.eval_dataloader]
        batches = min(len(loader) - loader.drop_last for loader in self.eval_dataloader)
        for j in range(batches):
            self.step(epoch, progress_bar, train_ite=train_ite, train=False, last_batch=j == batches - 1,
                      update_progress_bar=False)  # fmt: skip
        if self.compute_eval_losses:
            for idx, loss in enumerate(self.losses):
                self.eval_loss_history[loss.__class__.__name__].append(self.logs_losses_eval[idx].avg)
        if self.compute_train_metrics:
            for idx, metric in enumerate(self.metrics):
                self.train_metrics_history[metric.__class__.__name__].append(self.logs_metrics_train[idx].avg)
        for idx, metric in enumerate(self.metrics):
            self.eval_metrics_history[metric.__class__.__name__].append(self.logs_metrics_eval[idx].avg)
        self.save_best_model(epoch, train_ite)

    def reset_metrics(self) -> None:
        """Deepinv's reset; at the start of a training epoch, also ``set_epoch`` on the train samplers.

        ``deepinv.Trainer.train`` calls this once per epoch, before it creates the loaders'
        iterators, and never calls ``set_epoch`` itself: without it a ``DistributedSampler``
        would deal every epoch the same shards in the same order.
        """
        super().reset_metrics()
        if self._next_epoch is not None and not self._stepping:
            set_loader_epoch(self.train_dataloader, self._next_epoch)
            self._next_epoch += 1

    def save_best_model(self, epoch, train_ite, **kwargs: Any) -> None:
        """After every evaluation: record quality against cost in :attr:`history`, then deepinv's save."""
        record: dict[str, Any] = {"epoch": epoch, "step": train_ite + 1, "seconds": self.train_seconds}
        record.update(self.cost.summary())
        for name, values in self.eval_metrics_history.items():
            if values:
                record[name] = values[-1]
        self.history.append(record)
        super().save_best_model(epoch, train_ite, **kwargs)

    def stop_criterion(self, epoch, train_ite, **kwargs: Any) -> bool:
        """Deepinv's early stopping, with its patience counted from the start of the finest stage.

        The evaluations measure the fine task, on which a coarse stage is not trained: without this,
        ``early_stop`` would end a Full-Multiscale or progressive-resizing run in a coarse stage
        whenever the fine-level score stalls there, before any fine step.

        :param int epoch: the epoch just evaluated.
        :param int train_ite: the global iteration of the last training step.
        :return: whether to stop training.
        """
        if self._multiscale_training():
            first_fine = self._first_fine_step()
            if first_fine is None or train_ite < first_fine:
                return False
            batches = min(len(loader) - loader.drop_last for loader in self.train_dataloader)
            if epoch <= first_fine // batches + self.early_stop * self.eval_interval:  # as deepinv counts from 0
                return False
        return super().stop_criterion(epoch, train_ite, **kwargs)

    def _first_fine_step(self) -> int | None:
        """The first step the strategy takes on the fine grid (``None`` when it takes none)."""
        total = self.multiscale.strategy.total_steps or self._total_iterations()
        loaded = self._loader_batch_size()
        return next((step for step in range(total) if self.multiscale.plan(step, loaded).level == 0), None)

    def compute_loss(self, physics, x, y, train: bool = True, epoch: int | None = None, step: bool = False):
        """MGE backward over the per-term batches of the current plan (deepinv's loss otherwise)."""
        if not train:
            return super().compute_loss(physics, x, y, train=train, epoch=epoch, step=step)
        assert self.multiscale is not None
        fine = x if x is not None else y
        loaded = fine.shape[0]
        params = getattr(self, "_current_params", {}) or {}
        mode = self.poser.mode_for(physics, has_x=x is not None, online=self.online_measurements)
        generators = [g for g in (getattr(getattr(physics, "noise_model", None), "rng", None),) if g is not None]
        if not self.multiscale.checked:
            check_batch_rank(fine, what="the training batches")
        plan = self.multiscale.plan(self._train_ite, loaded)
        logs: dict[str, float] = {}
        if step:
            self.optimizer.zero_grad(set_to_none=True)
        outcome = self.multiscale.run(
            self._train_ite,
            loaded,
            self._level_loss(physics, x, y, params, mode, epoch, plan.level),
            model=self.model,
            input_shape=level_grid_shape(physics, y) if y is not None else x.shape,
            backward=lambda term: self.scaler.scale(term).backward(),
            check_gradients=not self.scaler.is_enabled(),
            generators=generators,
            native=lambda: super(MultiscaleTrainer, self).compute_loss(
                physics, x, y, train=train, epoch=epoch, step=step
            ),
            zero_grad=lambda: self.optimizer.zero_grad(set_to_none=True),
            optimizer=self.optimizer,
        )
        if outcome.native is not None:
            loss, x_net, native_logs = outcome.native
            self.last_step_scalars = step_scalars(plan, self.cost)
            return loss, x_net, {**native_logs, **self.last_step_scalars}
        if outcome.skipped:
            return self._skip_step(plan, logs)
        stats = outcome.stats
        assert stats is not None
        self._log_losses(logs)
        self.logs_total_loss_train.update(stats.fine_loss)
        logs["TotalLoss"] = self.logs_total_loss_train.avg
        self.last_step_scalars = step_scalars(plan, self.cost, stats)
        logs.update(self.last_step_scalars)

        defer_clip = self.scaler.is_enabled() and self.optimizer_step_multi_dataset and not step
        if not defer_clip:
            norm = self.check_clip_grad()
            if norm is None and self._clip_skipped:  # a non-finite norm went to the skip policy
                return self._skip_step(plan, logs)
            if norm is not None:
                logs["gradient_norm"] = self.check_grad_val.avg
        if step:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        loss = torch.tensor(stats.fine_loss, device=self.device)
        assert self._posed_term0 is not None
        return loss, self._posed_term0[3], logs

    def _log_losses(self, logs: dict[str, float]) -> None:
        """Each loss of term 0's batch at the step's level into deepinv's meters (``loss_history``, ``logs``).

        The values are those of the estimator's target (the fine loss of the step), split by loss,
        as ``deepinv.Trainer`` records them: per sample, named by the loss's class when there are several.
        """
        for meter, loss_fn, value in zip(self.logs_losses_train, self.losses, self._term0_losses):
            meter.update(value.float().cpu().numpy())
            if len(self.losses) > 1:
                logs[loss_fn.__class__.__name__] = meter.avg

    def check_clip_grad(self):
        """Deepinv's clipping and gradient-norm check, made safe.

        ``grad_clip`` works without ``check_grad=True`` (deepinv 0.5.0 then reads a meter that
        does not exist), and a non-finite total norm, which ``clip_grad_norm_`` turns into zero or
        NaN gradients without a word, goes to the ``nonfinite`` policy as a non-finite gradient.
        """
        self._clip_skipped = False
        if self.grad_clip is None or self.multiscale is None:
            return super().check_clip_grad()
        self.scaler.unscale_(self.optimizer)
        norm = self.multiscale.clip(
            self.model.parameters(),
            self.grad_clip,
            scaling=self.scaler.is_enabled(),
            zero_grad=lambda: self.optimizer.zero_grad(set_to_none=True),
        )
        if norm is not None:
            self.check_grad_val.update(norm)
        self._clip_skipped = norm is None
        return norm

    def _skip_step(self, plan, logs: dict[str, float]):
        """Leave the weights and the optimizer as they are; deepinv's ``step()`` still runs its tail.

        The gradients become zeros (so grad-norm checks and the ``GradScaler`` see finite values)
        and the optimizer's ``step`` is a no-op until :meth:`step` returns.
        """
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)
        self.optimizer.step = _no_optimizer_step
        self.scaler.scale(torch.zeros((), device=self.device))  # an enabled scaler may not have scaled a term yet
        self.last_step_scalars = step_scalars(plan, self.cost, skipped_steps=self.skipped_steps)
        logs.update(self.last_step_scalars)
        assert self._posed_term0 is not None
        return torch.tensor(float("nan"), device=self.device), self._posed_term0[3], logs

    def probe_level_loss(self) -> tuple[Callable[[slice, int], torch.Tensor], torch.Tensor | None, Any, Any, str]:
        """One training batch, drawn and posed as a training step draws and poses it, and its level loss.

        For measurements outside training (``mge-bench diagnose``), after ``setup_train``: the
        batch's per-sample physics parameters are kept, nothing is stepped or written.

        :return: ``(level_loss, x, y, physics, mode)``: ``level_loss(indices, level)`` is the mean
            loss of samples ``indices`` posed at ``level``; ``mode`` is how coarse levels are posed
            (``"physics"`` or ``"restrict"``).
        """
        self._in_train_step = True  # the training draw: per-sample physics parameters are kept
        try:
            x, y, physics = self.get_samples([iter(loader) for loader in self.train_dataloader], 0)
        finally:
            self._in_train_step = False
        params = getattr(self, "_current_params", {}) or {}
        mode = self.poser.mode_for(physics, has_x=x is not None, online=self.online_measurements)
        return self._level_loss(physics, x, y, params, mode, 0, 0), x, y, physics, mode

    def _level_loss(self, physics, x, y, params, mode: str, epoch, base_level: int):
        """``level_loss(indices, level)`` for this loaded batch; stashes term 0 for metrics and plots."""
        loaded = (x if x is not None else y).shape[0]
        fused = self.fused

        def level_loss(indices: slice, level: int) -> torch.Tensor:
            start, stop = indices.start, indices.stop
            physics_t = slice_physics(physics, params, slice(start, stop), loaded)
            x_t = x[start:stop] if x is not None else None
            posed = self.poser.pose(x_t, y[start:stop] if y is not None else None, physics_t, level, mode)
            x_net = self.model_inference(y=posed.y, physics=posed.physics, x=posed.x, train=True)
            # Under autocast the network returns half precision; the loss is taken in >= float32.
            x_net = x_net.to(torch.promote_types(x_net.dtype, torch.float32))
            total, values = 0.0, []
            with self.get_autocast_context():
                for loss_fn in level_losses(per_sample_losses(self.losses) if fused else self.losses, posed.physics):
                    value = loss_fn(
                        x=posed.x, x_net=x_net, y=posed.y, physics=posed.physics, model=self.model, epoch=epoch
                    )
                    values.append(value.detach())
                    total = total + (_per_sample(value, loss_fn) if fused else value.mean())
            if start == 0 and level == base_level:  # the last such call of a step is term 0's pass
                self._posed_term0 = (posed.x, posed.y, posed.physics, x_net.detach())
                self._term0_losses = values
            return total

        return level_loss

    def get_samples_online(self, iterators, g):
        """Deepinv's online sampling, keeping the per-sample parameters for slicing per term.

        In training steps with a coarse-physics mode, no fine measurement is generated: every
        level applies its own operator to the restricted ``x`` (``y`` is ``None``), so coarse
        Full-Multiscale stages never touch the fine grid's forward model.
        """
        if not self._in_train_step:
            with self._evaluation_stream(g):
                return super().get_samples_online(iterators, g)
        data = batch_as_dict(next(iterators[g]))
        if "x" not in data:
            raise ValueError("Dataloader must return ground truth `x` for online measurements.")
        x = data["x"].to(self.device, non_blocking=self.non_blocking_transfers)
        physics = self.physics[g]
        if self.physics_generator is not None:
            params = self.physics_generator[g].step(batch_size=x.size(0))
        else:
            params = data.get("params", {})
        physics.update(**params)
        self._current_params = params
        single = self.multiscale is not None and self.multiscale.native_single
        if not single and self.poser.mode_for(physics, has_x=True, online=True) == "physics":
            return x, None, physics
        return x, physics(x, **params), physics

    @contextmanager
    def _evaluation_stream(self, g: int) -> Iterator[None]:
        """With ``eval_seed``, physics generator ``g`` draws in evaluation from its own stream, seeded by ``eval_seed``.

        The stream starts again at every evaluation (every call of ``test``, every evaluation during
        training), so each one sees the same parameters, and the training stream is left where it was.
        """
        generator = None if self.physics_generator is None or self.eval_seed is None else self.physics_generator[g]
        rng = getattr(generator, "rng", None)
        if not isinstance(rng, torch.Generator):
            yield
            return
        training = rng.get_state()
        if g in self._eval_streams:
            rng.set_state(self._eval_streams[g])
        else:
            rng.manual_seed(self.eval_seed)
        try:
            yield
        finally:
            self._eval_streams[g] = rng.get_state()
            rng.set_state(training)

    def compute_metrics(self, x, x_net, y, physics, logs, train: bool = True, epoch: int | None = None):
        """Training metrics of an MGE step are measured on term 0's batch at the step's level."""
        if train and self._multiscale_training() and self._posed_term0 is not None:
            x, y, physics, x_net = self._posed_term0
        return super().compute_metrics(x, x_net, y, physics, logs, train=train, epoch=epoch)

    def plot(self, epoch, physics, x, y, x_net, train: bool = True) -> None:
        """Training plots of an MGE step show term 0's batch at the step's level."""
        if train and self._multiscale_training() and self._posed_term0 is not None:
            x, y, physics, _ = self._posed_term0
        super().plot(epoch, physics, x, y, x_net, train=train)

    def _multiscale_training(self) -> bool:
        return self.multiscale is not None and not self.multiscale.native_single

    # --- checkpoints ------------------------------------------------------------------------

    def _owned_generators(self) -> dict[str, Any]:
        """Generators of the pipeline besides the global ones: loaders, physics generators, noise models."""
        generators: dict[str, Any] = {}
        for i, loader in enumerate(self.train_dataloader):
            generators.update(loader_generators(loader, f"train_dataloader{i}"))
        for i, generator in enumerate(self.physics_generator or []):
            if isinstance(getattr(generator, "rng", None), torch.Generator):
                generators[f"physics_generator{i}.rng"] = generator.rng
        for i, physics in enumerate(self.physics):
            rng = getattr(getattr(physics, "noise_model", None), "rng", None)
            if isinstance(rng, torch.Generator):
                generators[f"physics{i}.noise_model.rng"] = rng
        return generators

    def save_model(self, filename, epoch, state=None) -> None:
        """Deepinv's checkpoint plus what an exact resume needs, with a checksum, written atomically.

        Adds the strategy, the cost counters, the global step, the AMP scaler and every random
        stream (PyTorch, CUDA, NumPy, Python, the loaders', physics generators' and noise models'
        generators) to the entries deepinv 0.5.0's ``Trainer.save_model`` writes, and a SHA-256
        checksum of it all (:func:`mge_plugins.checkpoint.add_checksum`), which :meth:`load_model`
        verifies. The file is written to a temporary file in the same folder, synced and renamed,
        so a kill during the save leaves the previous checkpoints intact.
        """
        if not is_main_process():  # only rank 0 writes
            return
        state = dict(state or {})
        if self.multiscale is not None:
            state["multiscale"] = {
                "strategy": self.multiscale.strategy.describe(),
                "cost": self.cost.state_dict(),
                "train_ite": self._train_ite,
                "train_seconds": self.train_seconds,
                "history": self.history,
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(self._owned_generators()),
            }
            if hasattr(self.multiscale.strategy, "state_dict"):
                state["multiscale"]["allocation"] = self.multiscale.strategy.state_dict()
        if not self.save_path:
            return
        # What deepinv 0.5.0's Trainer.save_model writes (tests/deepinv/test_checkpoint_safety.py compares them).
        state = state | {
            "epoch": epoch,
            "state_dict": self.model.state_dict(),
            "loss": self.loss_history,
            "train_metrics": self.train_metrics_history,
            "eval_loss": self.eval_loss_history,
            "eval_metrics": self.eval_metrics_history,
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
        }
        if self.wandb_vis:
            import wandb

            state["wandb_id"] = wandb.run.id
        if self.mlflow_vis:
            import mlflow

            state["mlflow_id"] = mlflow.active_run().info.run_id
        with atomic_write(Path(self.save_path) / filename) as tmp:
            torch.save(add_checksum(state), tmp)

    def load_model(self, ckpt_pretrained=None, strict: bool = True):
        """Deepinv's resume (model, optimizer, scheduler, epoch), read safely, then the rest of the saved state.

        The file is read with ``torch.load(weights_only=True)`` (through
        :func:`mge_plugins.checkpoint.load_checkpoint`), so a crafted checkpoint cannot run code,
        and its checksum is verified; an empty, truncated, corrupted or untrusted file raises a
        one-line :class:`mge_plugins.checkpoint.CheckpointError` naming it. A trusted file that
        holds other pickled objects loads with ``trust_checkpoint=True``. The state is then applied
        as deepinv 0.5.0's ``Trainer.load_model`` applies it. The stage follows from the restored
        epoch; the cost counters, the AMP scaler and the random streams are restored by
        :meth:`setup_train`, right before the next epoch starts.

        :param str ckpt_pretrained: checkpoint file; ``None`` loads the ``ckpt_pretrained`` given
            to the trainer, once.
        :param bool strict: strict loading of the model's weights.
        :return: the checkpoint dictionary, or ``None`` when there is nothing to load.
        """
        if ckpt_pretrained is None and self.ckpt_pretrained is not None:
            ckpt_pretrained = self.ckpt_pretrained
            self.ckpt_pretrained = None  # loaded once
        if ckpt_pretrained is None:
            return None
        checkpoint = load_checkpoint(
            ckpt_pretrained,
            map_location=self.device,
            trusted=self.trust_checkpoint,
            trust_hint="pass MultiscaleTrainer(..., trust_checkpoint=True)",
        )
        self.model.load_state_dict(checkpoint["state_dict"], strict=strict)
        msg = "Model"
        if "optimizer" in checkpoint and self.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            msg += ", optimizer"
        if "scheduler" in checkpoint and self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            msg += ", scheduler"
        if "wandb_id" in checkpoint and self.wandb_vis:
            self.wandb_setup["id"] = checkpoint["wandb_id"]
            self.wandb_setup["resume"] = "allow"
            msg += ", wandb_id"
        if "mlflow_id" in checkpoint and self.mlflow_vis:
            self.mlflow_setup["run_id"] = checkpoint["mlflow_id"]
            msg += ", mlflow_id"
        if "epoch" in checkpoint:
            self.epoch_start = checkpoint["epoch"] + 1
            msg += ", epoch_start"
        if self.verbose:
            print(f"{msg} successfully loaded from checkpoint: {ckpt_pretrained}")
        if "multiscale" in checkpoint:
            self._resumed_multiscale_state = checkpoint["multiscale"]  # applied by setup_train
        else:
            self._resumed_plain_checkpoint = str(ckpt_pretrained)
        return checkpoint
