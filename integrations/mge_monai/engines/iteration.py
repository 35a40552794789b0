"""The multiscale iteration for MONAI/ignite engines, usable as ``iteration_update=``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys as Keys

from mge_plugins import CostMeter, Strategy, build_strategy, restrict, restricted_randn
from mge_plugins.batching import slice_batch
from mge_plugins.checks import check_batch_rank, check_dataset_length, check_network, warn_batchnorm
from mge_plugins.estimator import per_sample_mean
from mge_plugins.host_step import (
    DEFAULT_BUDGET,
    MultiscaleStep,
    check_resumed_strategy,
    host_options,
    validate_host_options,
)
from mge_plugins.level_rules import LevelRule, check_level_rule, resolve_level_rule
from mge_plugins.scalars import step_scalars
from mge_plugins.strategies import STAGED_STRATEGIES, fit_levels, refit_options, warn_fitted_levels

from ..transforms.level import pyramid_key
from .plain import as_plain, with_meta_of

IterationEvents, _ = optional_import("monai.engines.utils", name="IterationEvents")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["MultiscaleIteration"]

STATE_KEY = "mge_cost"
SKIPPED_KEY = "mge_skipped_steps"
STRATEGY_KEY = "mge_strategy"
ALLOCATION_KEY = "mge_allocation"
FITTED_STRATEGIES = ("mge", *STAGED_STRATEGIES)
"""Built-in strategies whose ``levels`` is fitted to the run (fewer stages or levels, with a warning)."""


def _categorical(loss: Any) -> bool:
    """Whether a MONAI loss reads its target as class indices (``to_onehot_y=True``, also inside DiceCE)."""
    return bool(getattr(loss, "to_onehot_y", False) or getattr(getattr(loss, "dice", None), "to_onehot_y", False))


class MultiscaleIteration:
    """One training iteration of MGE or Full-Multiscale for a ``SupervisedTrainer``.

    Pass it as ``iteration_update=`` to an unmodified :class:`monai.engines.SupervisedTrainer`
    and call :meth:`attach`, or use :class:`~mge_monai.MultiscaleSupervisedTrainer`, which does both.
    Each iteration cuts the loaded batch into the per-term batches of the step (the loader's
    batch size bounds the largest term; a short last batch caps every term at its size),
    restricts image and label to each term's levels on the
    device, and backpropagates term by term with the trainer's AMP scaler.

    The label follows its own rule (``label_restriction``, see :mod:`mge_plugins.level_rules`):
    by default a segmentation label (integer, or floating with values 0/1 only, or read as class
    indices by a loss with ``to_onehot_y=True``) takes the majority of each block, so it stays a
    valid label for the loss and for metrics such as ignite's ``Accuracy``; a target without the
    images' spatial axes (a class label) is the same at every level; anything else is restricted
    like the image. The rule is resolved once, on the first batch.

    The levels are fitted to the run at the first iteration: when the run is too short for the
    ``levels + 1`` stages of ``"full-multiscale"``/``"progressive-resizing"``, or the images or
    the network cannot go that deep, the largest number of levels that works is used, with one
    warning naming both numbers and why (``"mge"`` too; a built strategy is used as given).

    With ``amp=True`` the forward passes run under the same autocast as ``SupervisedTrainer``'s
    own iteration: on CUDA with ``amp_kwargs``; on the CPU in float32, as MONAI's CUDA-only
    autocast leaves CPU work there, unless ``amp_kwargs`` names a ``dtype`` (then CPU autocast
    with it, which MONAI's own iteration would ignore).

    The engine's output holds only term 0's tensors (image, label, prediction, at the step's
    level) and scalars, so decollation and metric handlers see consistent batch sizes;
    ``engine.state.batch`` is term 0's part of the loaded batch. The scalars are the fine loss
    (``loss``) and those of :mod:`mge_plugins.scalars` (``mge_stage``, ``mge_level``,
    ``mge_term_{k}``, ``mge_saving``, ``mge_work_units``, ``mge_flops``), which MONAI's
    ``TensorBoardStatsHandler`` writes with the ``output_transform`` of
    :func:`~mge_monai.handlers.from_multiscale_output`. The plan is a pure function of
    ``engine.state.iteration``, so a checkpointed engine resumes in its stage; the cost counters
    travel in ``engine.state.mge_cost``.

    Args:
        strategy: ``"full-multiscale"``, ``"mge"``, ``"single"``, ``"progressive-resizing"``, a
            registered name, or a built :class:`~mge_plugins.Strategy` (e.g. the one given to a
            :class:`~mge_monai.MultiscaleBatchSampler`, whose batches then fit every step).
        levels: coarser levels (``"mge"``) or stages minus one (``"full-multiscale"``).
        mge_batch_size: finest-term batch; ``None`` keeps a quarter of the loaded batch and
            grows geometrically to all of it.
        growth: batch growth per coarser level.
        batch_sizes: explicit per-term sizes (``"mge"``).
        restriction: ``"area"``, ``"nearest"`` or ``"antialias"``, for the images.
        label_restriction: the label's rule: ``"auto"`` (default; inferred from the first batch),
            ``"mode"`` (majority per block: segmentation labels, integer or one-hot), ``"nearest"``,
            ``"keep"`` (class labels: the same at every level), ``"area"`` or ``"antialias"``
            (intensity targets). With ``noise_sigma``, ``"auto"`` is ``restriction``.
        iterations: Full-Multiscale steps (total, split by halving, or per stage); ``None`` =
            ``max_epochs * epoch_length``.
        mge_levels: cap on MGE levels inside Full-Multiscale stages.
        split: ``"nested"`` or ``"disjoint"`` per-term batches.
        size_multiple: divisor the network needs on every level; ``None`` checks with a dry
            forward pass at the coarsest level before the first step.
        noise_sigma: when set, the input of every level is built on the device as the clean
            label at that level (from a cached :class:`~mge_monai.LevelPyramidd` pyramid when the
            batch has one, else restricted) plus Gaussian noise drawn at the fine grid and
            restricted, so both halves of each MGE term see the same noise. The loaded
            ``image`` is then ignored.
        keep_noise_std: with ``noise_sigma``, keep the per-pixel std on coarse levels (default)
            or let it fall as the restricted noise does (``sigma / 2**(d/2)`` per level).
        label_key: key of the clean image in the batch, for the cached pyramid.
        allocation: ``"fixed"`` (default) per-term sizes, or ``"adaptive"`` for ``"mge"`` and inside
            each ``"full-multiscale"`` stage: sizes and levels re-chosen every ``reestimate_every``
            iterations from measured per-level
            gradient variances; the choices travel in ``engine.state.mge_allocation``.
        reestimate_every: iterations between measurements of the adaptive allocation.
        budget: what coarse-to-fine strategies spend, against the single-scale compute of the
            engine's iterations. A fraction ``f > 0``: the whole epochs that ``f`` times that
            compute pays for (``max_epochs`` is set at the first iteration, and a line says so);
            the default, ``0.33``, is the share at which the bundled tasks kept single-scale's
            quality (``mge_plugins.host_step.DEFAULT_BUDGET``). ``"compute"``: all of it.
            ``"steps"``: the engine's iterations, each cheaper than a single-scale one. A schedule
            whose length the engine cannot end between epochs is shortened to whole epochs (at
            least one), so the run spends no more than its budget.
        allow_strategy_change: resume a checkpoint trained with another strategy (other name,
            levels, sizes or stages), to fine-tune from it; the cost record then starts again. By
            default such a resume is refused, naming both strategies (the strategy travels in
            ``engine.state.mge_strategy``).
        nonfinite: ``"raise"`` (default) a :class:`mge_plugins.NonFiniteError` naming the term
            and level when a level's loss or the accumulated gradient is NaN/inf, with the
            weights and optimizer state untouched; ``"skip"`` such iterations (no optimizer step,
            one warning, counted in :attr:`skipped_steps` and ``engine.state.mge_skipped_steps``).
            With AMP, gradients are left to the engine's ``GradScaler``.
        fused: one weighted forward/backward per level instead of two per difference term
            (:func:`mge_plugins.mge_backward`): the same gradient for fewer FLOPs. With
            ``noise_sigma``, the noise is then drawn once per loaded batch at the fine grid and
            restricted to each level (instead of drawn in each pass with the random stream
            replayed), so every level's loss depends on the samples only; noise drawn inside the
            network or the transforms run per pass is refused on the first iteration. The loss
            must average over samples (torch's losses, MONAI's with ``batch=False``): a scalar loss
            is taken one sample at a time, a loss with ``reduction="none"`` is averaged per sample.
    """

    def __init__(
        self,
        strategy: str | Strategy = "full-multiscale",
        levels: int = 2,
        mge_batch_size: int | None = None,
        growth: float | None = None,
        batch_sizes: Sequence[int] | None = None,
        restriction: str = "area",
        label_restriction: str = "auto",
        iterations: int | Sequence[int] | None = None,
        mge_levels: int | None = None,
        split: str = "nested",
        size_multiple: int | None = None,
        noise_sigma: float | None = None,
        keep_noise_std: bool = True,
        label_key: str = "label",
        nonfinite: str = "raise",
        allow_strategy_change: bool = False,
        allocation: str = "fixed",
        reestimate_every: int = 100,
        budget: str | float = DEFAULT_BUDGET,
        fused: bool = False,
    ) -> None:
        self.fused = fused
        self._step_noise: tuple[int, torch.Tensor] | None = None
        self.strategy = strategy
        self.nonfinite = nonfinite
        self.allow_strategy_change = allow_strategy_change
        self.allocation = allocation
        self.reestimate_every = reestimate_every
        self.budget = budget
        self.noise_sigma = noise_sigma
        self.keep_noise_std = keep_noise_std
        self.label_key = label_key
        self.levels = levels
        self.mge_batch_size = mge_batch_size
        self.growth = growth
        self.batch_sizes = batch_sizes
        self.restriction = restriction
        check_level_rule(label_restriction, what="label_restriction")
        self.label_restriction = label_restriction
        self.label_rule: LevelRule | None = None
        self.iterations = iterations
        self.mge_levels = mge_levels
        self.split = split
        self.size_multiple = size_multiple
        validate_host_options(self)
        self.multiscale: MultiscaleStep | None = None
        self.cost = CostMeter()

    @property
    def strategy_name(self) -> str:
        """The strategy's registry name."""
        return self.strategy if isinstance(self.strategy, str) else self.strategy.name

    @property
    def built_strategy(self) -> Strategy | None:
        """The strategy built for this run at the first iteration (``None`` before)."""
        return None if self.multiscale is None else self.multiscale.strategy

    @property
    def skipped_steps(self) -> int:
        """Iterations skipped because of a non-finite loss or gradient (``nonfinite="skip"``)."""
        return 0 if self.multiscale is None else self.multiscale.policy.skipped

    # --- setup --------------------------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        """Register the cost counters in the engine's checkpointed state; warn about BatchNorm."""
        if self.strategy_name != "single":
            warn_batchnorm(
                engine.network, "norm='instance' or norm='group' in MONAI networks, e.g. UNet(..., norm='instance')"
            )
        for key, default in ((STATE_KEY, None), (SKIPPED_KEY, 0), (STRATEGY_KEY, None), (ALLOCATION_KEY, None)):
            if key not in engine._state_dict_user_keys:
                engine._state_dict_user_keys.append(key)
            if not hasattr(engine.state, key):
                setattr(engine.state, key, default)
        if getattr(engine, "accumulation_steps", 1) > 1 and self.strategy_name != "single":
            raise ValueError(
                "accumulation_steps > 1 is not supported with multiscale strategies: MGE already accumulates "
                "its terms; raise the loader's batch size instead"
            )
        if self.strategy_name != "single":
            self._check_dataset(engine)

    def _check_dataset(self, engine: Engine) -> None:
        """A dataset shorter than one loaded batch (or than the largest term) fails before training."""
        loader = getattr(engine, "data_loader", None)
        try:
            length = len(loader.dataset)  # type: ignore[union-attr]
        except (AttributeError, TypeError):  # an iterable dataset, or no loader yet
            return
        need = getattr(loader, "batch_size", None)
        if need:  # a batch sampler sizes its own batches (MultiscaleBatchSampler checks them)
            check_dataset_length(length, need)

    def _resolve_label_rule(self, engine: Engine, inputs: torch.Tensor, targets: Any) -> LevelRule:
        """The label's rule for this run, from the first batch."""
        rule = self.label_restriction
        if self.noise_sigma is not None and rule == "auto":
            rule = self.restriction  # the label is the clean image the noisy input is built from
        resolved = resolve_level_rule(
            rule,
            targets,
            inputs.shape[2:],
            intensity=self.restriction,
            categorical=_categorical(engine.loss_function),
            what="the label",
        )
        if self.noise_sigma is not None and resolved.rule == "keep":
            shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(
                f"noise_sigma builds each level's input from the clean label, but the label has shape {shape}, not "
                f"the images' {tuple(inputs.shape)}; drop noise_sigma for a classification target"
            )
        return resolved

    def _fit_levels(self, engine: Engine, batch: tuple, iterations: Any, options: dict) -> tuple[dict, bool]:
        """Fewer levels when the run, the images or the network cannot use the requested ones."""
        if not isinstance(self.strategy, str) or self.strategy not in FITTED_STRATEGIES:
            return options, False
        batchdata, inputs, targets, args, kwargs = batch

        def probe(level: int) -> None:
            """The loss window, then (without ``size_multiple``) a dry run at ``level``."""

            def dry_run() -> torch.Tensor:
                x, y = self._pose(batchdata, inputs, targets, slice(0, 1), level)
                return self._loss(engine, x, y, args, kwargs)[0]

            self._check_window(engine, inputs, level)
            if self.size_multiple is None:
                check_network(dry_run, engine.network, level=level, input_shape=inputs.shape)

        levels, reason = fit_levels(
            self.levels,
            iterations=iterations if self.strategy in STAGED_STRATEGIES else None,
            spatial_shape=tuple(inputs.shape[2:]),
            multiple=self.size_multiple or 1,
            probe=probe,
        )
        warn_fitted_levels(self.levels, levels, reason, stacklevel=4)
        return refit_options(options, levels), True

    def _build(self, engine: Engine, batch: tuple) -> MultiscaleStep:
        """The run's step, at the first iteration: the loaded batch and the engine's length are known."""
        inputs, targets = batch[1], batch[2]
        iterations = self.iterations
        if iterations is None:
            iterations = engine.state.max_epochs * engine.state.epoch_length
        loaded, dims = inputs.shape[0], inputs.dim() - 2
        self.label_rule = self._resolve_label_rule(engine, inputs, targets)
        options = host_options(self, loaded_batch_size=loaded, spatial_dims=dims, iterations=iterations)
        fitted = False
        if self.strategy_name != "single":
            options, fitted = self._fit_levels(engine, batch, iterations, options)
        strategy = build_strategy(self.strategy, **options)
        total = strategy.total_steps
        planned = engine.state.max_epochs * engine.state.epoch_length
        per_stage = isinstance(self.iterations, (list, tuple))  # a budget does not change given stage lengths
        if self.budget != "steps" and not per_stage and total is not None and total != planned:
            epochs = max(1, total // engine.state.epoch_length)  # ignite ends runs between epochs
            if epochs * engine.state.epoch_length != total:
                options = {**options, "iterations": epochs * engine.state.epoch_length, "budget": "steps"}
                strategy = build_strategy(self.strategy, **options)
                total = strategy.total_steps
            print(
                f"budget={self.budget!r}: {strategy.name} runs {total} iterations ({epochs} epochs instead of "
                f"{engine.state.max_epochs}) for the compute budget of {iterations} single-scale iterations"
            )
            engine.state.max_epochs = epochs
        baseline = loaded if strategy.name == "single" else max(strategy.max_batch_sizes)
        self.cost = CostMeter(dims, baseline_batch_size=baseline)
        saved = getattr(engine.state, STATE_KEY, None)
        keep = check_resumed_strategy(
            getattr(engine.state, STRATEGY_KEY, None), strategy, allow_change=self.allow_strategy_change
        )
        if saved and keep:
            self.cost.load_state_dict(saved)
        allocation = getattr(engine.state, ALLOCATION_KEY, None)
        if allocation and keep and hasattr(strategy, "load_state_dict"):
            strategy.load_state_dict(allocation)
        setattr(engine.state, STRATEGY_KEY, strategy.describe())
        done = engine.state.iteration - 1
        if done > 0 and done % engine.state.epoch_length:
            warnings.warn(
                f"resumed mid-epoch, after iteration {done} of epochs of {engine.state.epoch_length}: ignite starts "
                "the epoch's data again from its beginning, so this run will not repeat an uninterrupted one; save "
                "checkpoints at epoch ends (CheckpointSaver(save_interval=..., epoch_level=True))",
                stacklevel=2,
            )
        step = MultiscaleStep(
            strategy,
            self.cost,
            split=self.split,
            nonfinite=self.nonfinite,
            size_multiple=self.size_multiple,
            spatial_dims=dims,
            fused=self.fused,
        )
        step.policy.skipped = int(getattr(engine.state, SKIPPED_KEY, 0) or 0)
        step.checked = fitted  # the sizes and the network were checked at the chosen levels
        return step

    def _check_window(self, engine: Engine, inputs: torch.Tensor, coarsest: int) -> None:
        """An SSIM-like loss window larger than the coarsest level fails before training."""
        loss = engine.loss_function
        window = getattr(loss, "kernel_size", None) or getattr(loss, "win_size", None)
        if window is not None:
            window = max(window) if isinstance(window, (tuple, list)) else int(window)
            smallest = min(inputs.shape[2:]) // 2**coarsest
            if window > smallest:
                raise ValueError(
                    f"{type(loss).__name__} uses a window of {window} px but level {coarsest} has sides of {smallest} "
                    f"px; use win_size <= {smallest}, fewer levels, or a loss without a window (MSE/L1)"
                )

    # --- the iteration ------------------------------------------------------------------------

    def __call__(self, engine: Engine, batchdata: Any) -> dict:
        """Run one iteration on ``engine`` (the ``iteration_update`` signature)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        loaded = batch[0], batch[1]  # the output's image, label and pred take their metadata back
        inputs, targets = as_plain(batch[0]), as_plain(batch[1])  # the passes run on plain tensors
        args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
        engine.network.train()
        if self.multiscale is None:
            if self.strategy_name != "single":
                check_batch_rank(inputs, what="the training images")
            self.multiscale = self._build(engine, (batchdata, inputs, targets, args, kwargs))
            if not self.multiscale.native_single:
                self._check_window(engine, inputs, self.multiscale.strategy.coarsest_level)
        step = engine.state.iteration - 1
        plan = self.multiscale.plan(step, inputs.shape[0])
        if self.fused and self.noise_sigma is not None:  # one draw per loaded batch, shared by the levels
            self._step_noise = self._draw_noise(targets, plan.level)
        first: dict[str, torch.Tensor] = {}
        autocast = engine.amp and engine.scaler is not None
        scaling = autocast and engine.scaler.is_enabled()  # a CUDA scaler without CUDA passes losses through

        def level_loss(indices: slice, level: int) -> torch.Tensor:
            x, y = self._pose(batchdata, inputs, targets, indices, level)
            loss, pred = self._loss(engine, x, y, args, kwargs, per_sample=self.fused)
            if indices.start == 0 and level == plan.level:  # the last such call of a step is term 0's pass
                first.update({Keys.IMAGE: x, Keys.LABEL: y, Keys.PRED: pred.detach()})
            return loss

        # SupervisedTrainer's own iteration stands in for "single", except where this iteration
        # builds the input (noise_sigma): the engine's would train on the clean copy of the label.
        native = self.multiscale.native_single and self.noise_sigma is None
        if not native:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        outcome = self.multiscale.run(
            step,
            inputs.shape[0],
            level_loss,
            model=engine.network,
            input_shape=inputs.shape,
            backward=(lambda t: engine.scaler.scale(t).backward()) if scaling else None,
            check_gradients=not scaling,
            native=(lambda: engine._iteration(engine, batchdata)) if native else None,
            zero_grad=lambda: engine.optimizer.zero_grad(set_to_none=True),
            optimizer=engine.optimizer,
        )
        if outcome.native is not None:
            self.multiscale.after_update(engine.network)
            self._account(engine)
            scalars = step_scalars(plan, self.cost)
            for item in outcome.native if isinstance(outcome.native, list) else [outcome.native]:
                if isinstance(item, dict):  # the output, or its decollated items
                    item.update(scalars)
            return outcome.native
        first = self._with_metadata(first, *loaded)
        if outcome.skipped:
            return self._skipped(engine, plan, first, inputs.device)
        stats = outcome.stats
        assert stats is not None
        engine.state.output = dict(first)
        engine.state.output[Keys.LOSS] = torch.tensor(stats.fine_loss, device=inputs.device)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if autocast:
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            engine.optimizer.step()
        self.multiscale.after_update(engine.network)
        self._account(engine)
        engine.state.output.update(step_scalars(plan, self.cost, stats))
        if isinstance(batchdata, dict):
            engine.state.batch = slice_batch(batchdata, 0, plan.batch_sizes[0])
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def probe_level_loss(self, engine: Engine, batchdata: Any) -> tuple[Callable[[slice, int], torch.Tensor], Any]:
        """The level loss of one loaded batch, posed as a step poses it, and the prepared network input.

        For measurements outside training (``mge-bench diagnose``): the label rule is resolved on
        this batch unless a step resolved it, the network is put in training mode, nothing is stepped.

        Args:
            engine: the trainer whose ``prepare_batch``, ``inferer`` and ``loss_function`` are used.
            batchdata: one batch of its loader.

        Returns:
            ``(level_loss, inputs)``: ``level_loss(indices, level)`` is the mean loss of the loaded
            samples ``indices`` posed at ``level``.
        """
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = as_plain(batch[0]), as_plain(batch[1])  # posed as a step poses them
        args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
        if self.label_rule is None:
            self.label_rule = self._resolve_label_rule(engine, inputs, targets)
        engine.network.train()

        def level_loss(indices: slice, level: int) -> torch.Tensor:
            x, y = self._pose(batchdata, inputs, targets, indices, level)
            return self._loss(engine, x, y, args, kwargs)[0]

        return level_loss, inputs

    def check_levels(self, engine: Engine, inputs: torch.Tensor, levels: int) -> None:
        """What the first step checks: the network and an SSIM window work ``levels`` below the input's grid."""
        self._check_window(engine, inputs, levels)

    @staticmethod
    def _with_metadata(first: dict, inputs: Any, targets: Any) -> dict:
        """The output's image and pred with the loaded input's metadata, its label with the label's."""
        if not first:
            return first
        return {
            **first,
            Keys.IMAGE: with_meta_of(first[Keys.IMAGE], inputs),
            Keys.LABEL: with_meta_of(first[Keys.LABEL], targets),
            Keys.PRED: with_meta_of(first[Keys.PRED], inputs),
        }

    def _skipped(self, engine: Engine, plan, first: dict, device: torch.device) -> dict:
        """The output of a skipped iteration: no optimizer step, a NaN loss, the count in the state."""
        engine.state.output = dict(first)
        engine.state.output[Keys.LOSS] = torch.tensor(float("nan"), device=device)
        self._account(engine)
        setattr(engine.state, SKIPPED_KEY, self.skipped_steps)
        engine.state.output.update(step_scalars(plan, self.cost, skipped_steps=self.skipped_steps))
        return engine.state.output

    def _autocast(self, engine: Engine, device: torch.device) -> AbstractContextManager[Any]:
        """The autocast of ``SupervisedTrainer``'s own iteration for data on ``device``.

        MONAI enters ``torch.autocast("cuda", **amp_kwargs)`` whatever the device, which leaves
        work on the CPU in float32: so does this, unless ``amp_kwargs`` names a ``dtype``.
        """
        if not (engine.amp and engine.scaler is not None):
            return nullcontext()
        if device.type == "cuda" or "dtype" in engine.amp_kwargs:
            return torch.autocast(device.type, **engine.amp_kwargs)
        return nullcontext()

    @staticmethod
    def _draw_noise(targets: torch.Tensor, level: int) -> tuple[int, torch.Tensor]:
        """Standard normal noise on the grid of ``level``: restricted fine white noise has this law, times a std.

        Area-restricted white noise is white, so a step whose finest term is at ``level`` (a coarse
        Full-Multiscale stage) draws there instead of drawing on the fine grid and restricting.
        """
        shape = (*targets.shape[:2], *(n // 2**level for n in targets.shape[2:]))
        return level, torch.randn(shape, dtype=targets.dtype, device=targets.device)

    def _pose(
        self, batchdata: Any, inputs: torch.Tensor, targets: Any, indices: slice, level: int
    ) -> tuple[torch.Tensor, Any]:
        """Network input and label of the loaded samples ``indices`` at ``level``."""
        y = self._clean(batchdata, targets, indices.start, indices.stop, level)
        if self.noise_sigma is None:
            return restrict(inputs[indices], level, self.restriction), y
        if self._step_noise is not None and level >= self._step_noise[0]:  # fused: the batch's one draw
            base, drawn = self._step_noise
            noise = restrict(drawn[indices], level - base)  # std 2**(-d * (level - base) / 2)
            dims = noise.dim() - 2  # a restricted fine draw has std 2**(-d * level / 2), or 1 with keep_noise_std
            noise = noise * 2.0 ** (dims * (level - base) / 2 if self.keep_noise_std else -dims * base / 2)
        else:
            noise = restricted_randn(
                targets[indices].shape, level, keep_std=self.keep_noise_std, dtype=y.dtype, device=y.device
            )
        return y + self.noise_sigma * noise, y

    def _loss(
        self, engine: Engine, x: torch.Tensor, y: Any, args: Any, kwargs: Any, per_sample: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss of ``x`` against ``y`` (one per sample with ``per_sample``), and the prediction."""
        with self._autocast(engine, x.device):
            pred = engine.inferer(x, engine.network, *args, **kwargs)
        # The loss (and so each MGE difference) is taken in >= float32, whatever autocast returned.
        wide = pred.to(torch.promote_types(pred.dtype, torch.float32))
        value = engine.loss_function(wide, y)
        if not per_sample:
            return value.mean(), pred
        n = wide.shape[0]
        if value.dim() > 0 and value.shape[0] == n:  # reduction="none": average each sample's elements
            return per_sample_mean(value, "loss_function", "use reduction='none'"), pred
        return torch.stack([engine.loss_function(wide[i : i + 1], y[i : i + 1]).mean() for i in range(n)]), pred

    def _clean(self, batchdata: Any, targets: Any, start: int, stop: int, level: int) -> Any:
        """The label of samples ``start:stop`` at ``level``: cached pyramid, or the label's rule."""
        key = pyramid_key(self.label_key, level)
        if level > 0 and isinstance(batchdata, dict) and key in batchdata:
            cached = batchdata[key][start:stop]
            return torch.as_tensor(cached).to(device=targets.device, dtype=targets.dtype)
        assert self.label_rule is not None
        return self.label_rule.apply(targets[start:stop], level)

    def _account(self, engine: Engine) -> None:
        if self.multiscale is not None and hasattr(self.multiscale.strategy, "state_dict"):
            setattr(engine.state, ALLOCATION_KEY, self.multiscale.strategy.state_dict())
        setattr(engine.state, STATE_KEY, self.cost.state_dict())
