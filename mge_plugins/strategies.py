"""Training strategies by name: ``"single"``, ``"mge"``, ``"full-multiscale"``, ``"progressive-resizing"``, plug-ins.

A strategy answers one question for a host, as plain data: at global step ``t``, at which level
does the step start and which per-term batch sizes does it use (:class:`StepPlan`). It is a pure
function of the step, so checkpoints only need the step.

Third-party packages add strategies through the entry-point group ``mge_plugins.strategies``;
each entry point names a factory ``factory(options: StrategyOptions) -> Strategy``::

    [project.entry-points."mge_plugins.strategies"]
    my-strategy = "my_package.strategies:make_my_strategy"
"""

from __future__ import annotations

import difflib
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from importlib.metadata import entry_points
from typing import Any

from .batching import SPLIT_MODES, required_batch_size
from .config import MGEConfig
from .restriction import RESTRICTION_METHODS, check_level_sizes
from .schedule import FullMultiscaleSchedule, halving_split

__all__ = [
    "ENTRY_POINT_GROUP",
    "STAGED_STRATEGIES",
    "FullMultiscaleStrategy",
    "MGEStrategy",
    "StepPlan",
    "Strategy",
    "StrategyOptions",
    "available_strategies",
    "build_strategy",
    "check_fits",
    "fit_levels",
    "get_strategy",
    "refit_options",
    "register_strategy",
    "warn_fitted_levels",
]

ENTRY_POINT_GROUP = "mge_plugins.strategies"
ALLOCATIONS: tuple[str, ...] = ("fixed", "adaptive")
BUDGETS: tuple[str, ...] = ("steps", "compute")


@dataclass(frozen=True)
class StepPlan:
    """What one optimizer step does.

    Attributes:
        level: level of the finest term (0 = full resolution).
        batch_sizes: per-term batch sizes, finest first; ``len - 1`` levels below ``level``.
        restriction: restriction method.
        stage: Full-Multiscale stage index, or ``None``.
    """

    level: int
    batch_sizes: tuple[int, ...]
    restriction: str = "area"
    stage: int | None = None

    @property
    def levels_below(self) -> int:
        """Number of MGE levels below :attr:`level`."""
        return len(self.batch_sizes) - 1

    @property
    def coarsest_level(self) -> int:
        """Deepest level the step evaluates."""
        return self.level + self.levels_below

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view for logs."""
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data


class Strategy(ABC):
    """A training strategy: the plan of every optimizer step, a pure function of the step."""

    name: str = ""

    @abstractmethod
    def plan(self, step: int) -> StepPlan:
        """Plan of global step ``step`` (0-based)."""

    @property
    def total_steps(self) -> int | None:
        """Steps the strategy is built for, or ``None`` when the host decides."""
        return None

    @property
    def coarsest_level(self) -> int:
        """Deepest level any step reaches (to check image and network sizes up front)."""
        return self.plan(0).coarsest_level

    @property
    def max_batch_sizes(self) -> tuple[int, ...]:
        """Largest per-term batch sizes of any step."""
        return self.plan(0).batch_sizes

    def required_batch_size(self, split: str = "nested") -> int:
        """Samples per loaded batch that every step needs."""
        return required_batch_size(self.max_batch_sizes, split)

    def check_image_size(self, spatial_shape: Sequence[int], multiple: int = 1) -> None:
        """Fail up front if images of ``spatial_shape`` cannot reach :attr:`coarsest_level`.

        Args:
            spatial_shape: fine spatial shape, ``(H, W)`` or ``(D, H, W)``.
            multiple: divisor the network needs at every level (e.g. ``2**3`` for a U-Net with
                3 downsamplings).

        Raises:
            ValueError: naming the size, the level that breaks and the nearest valid sizes.
        """
        check_level_sizes(spatial_shape, self.coarsest_level, multiple=multiple)

    def describe(self) -> dict[str, Any]:
        """Plain-data description for logs."""
        return {"strategy": self.name, "plan": self.plan(0).to_dict()}


class MGEStrategy(Strategy):
    """Multiscale Gradient Estimation at every step, with a fixed :class:`MGEConfig`.

    Single-scale training is this strategy with ``levels=0`` (registered as ``"single"``).
    """

    def __init__(self, config: MGEConfig, name: str = "mge") -> None:
        self.config = config
        self.name = name

    def plan(self, step: int) -> StepPlan:
        """The same plan at every step."""
        return StepPlan(0, self.config.batch_sizes, self.config.restriction)


class FullMultiscaleStrategy(Strategy):
    """Coarse-to-fine stages with MGE inside each, driven by a :class:`FullMultiscaleSchedule`.

    Progressive resizing is this strategy with ``mge_levels=0`` (registered as
    ``"progressive-resizing"``): the same stages, but a stage's gradient is the plain gradient of
    its coarse problem, biased for the fine one.
    """

    def __init__(self, schedule: FullMultiscaleSchedule, name: str = "full-multiscale") -> None:
        self.schedule = schedule
        self.name = name

    def plan(self, step: int) -> StepPlan:
        """The plan of the stage that ``step`` belongs to."""
        stage = self.schedule.stage_at(step)
        return StepPlan(stage.level, stage.batch_sizes, stage.mge.restriction, stage.index)

    @property
    def total_steps(self) -> int:
        """Steps over all stages."""
        return self.schedule.total_steps

    @property
    def coarsest_level(self) -> int:
        """The first stage's level."""
        return self.schedule.levels

    @property
    def max_batch_sizes(self) -> tuple[int, ...]:
        """Per-term sizes of the stage that needs the largest loaded batch."""
        return max((s.batch_sizes for s in self.schedule.stages), key=lambda sizes: (max(sizes), sum(sizes)))

    def required_batch_size(self, split: str = "nested") -> int:
        """Samples per loaded batch that every stage's step needs."""
        return max(required_batch_size(s.batch_sizes, split) for s in self.schedule.stages)

    def describe(self) -> dict[str, Any]:
        """The schedule as plain data."""
        return {"strategy": self.name, **self.schedule.to_dict()}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class StrategyOptions:
    """The one specification of a strategy's sizes, shared by every host and every factory.

    Every registered factory receives one, so a strategy added through the entry point gets the
    same loader-derived sizes as the built-in ones (:meth:`term_sizes`). Hosts fill
    ``loaded_batch_size`` (the loader's batch, which bounds the largest term), ``spatial_dims``
    and, by default, ``iterations`` (the run's length); the rest comes from the user.

    Attributes:
        levels: MGE levels below the finest (``"mge"``) or number of stages minus one
            (``"full-multiscale"``); ignored by ``"single"``.
        batch_size: finest-term batch size: one ``int``, or one per Full-Multiscale stage; ``None``
            derives it from ``loaded_batch_size`` (see :meth:`term_sizes`), or uses 8 without one.
        growth: batch growth per coarser level; ``None`` derives it from the loader, or uses
            ``2**spatial_dims``.
        batch_sizes: explicit per-term sizes for ``"mge"`` (finest first).
        restriction: restriction method.
        spatial_dims: 2 or 3.
        iterations: Full-Multiscale steps, total (split by halving) or per stage.
        mge_levels: Full-Multiscale's cap on MGE levels inside a stage (``0`` = no MGE).
        loaded_batch_size: samples per loaded batch, or ``None`` when the sizes are free.
        split: ``"nested"`` or ``"disjoint"`` per-term batches.
        allocation: ``"fixed"`` per-term sizes, or ``"adaptive"`` (``"mge"``, and MGE inside each
            ``"full-multiscale"`` stage): sizes and levels
            re-chosen every ``reestimate_every`` steps by the multilevel Monte Carlo rule from
            measured per-level gradient variances (:class:`~mge_plugins.allocation.AdaptiveMGEStrategy`,
            :class:`~mge_plugins.allocation.AdaptiveFullMultiscaleStrategy`).
        reestimate_every: steps between measurements of the adaptive allocation.
        budget: what ``iterations`` fixes for a coarse-to-fine strategy: ``"steps"`` (default:
            that many optimizer steps, each cheaper than a single-scale one), ``"compute"`` (the
            work of that many single-scale steps of the loaded batch: the schedule is lengthened
            until it spends as much, for the best quality at the same cost), or a fraction such as
            ``0.35`` of that work (lengthened, or shortened, to spend that share).

    Raises:
        ValueError: for a value no strategy can use, naming the option and the fix.
    """

    levels: int = 2
    batch_size: int | Sequence[int] | None = None
    growth: float | None = None
    batch_sizes: Sequence[int] | None = None
    restriction: str = "area"
    spatial_dims: int = 2
    iterations: int | Sequence[int] = 3750
    mge_levels: int | None = None
    loaded_batch_size: int | None = None
    split: str = "nested"
    allocation: str = "fixed"
    reestimate_every: int = 100
    budget: str | float = "steps"

    def __post_init__(self) -> None:
        _check_int("levels", self.levels, 0)
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (images) or 3 (volumes), got {self.spatial_dims!r}")
        if self.restriction not in RESTRICTION_METHODS:
            close = difflib.get_close_matches(str(self.restriction), RESTRICTION_METHODS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown restriction {self.restriction!r}{hint}; use one of "
                f"{', '.join(map(repr, RESTRICTION_METHODS))}"
            )
        if isinstance(self.budget, bool) or not (
            self.budget in BUDGETS or (isinstance(self.budget, (int, float)) and 0 < self.budget < math.inf)
        ):
            raise ValueError(
                f"unknown budget {self.budget!r}; use one of {', '.join(map(repr, BUDGETS))} or a fraction > 0 of "
                "the single-scale compute (e.g. 0.33, the hosts' default)"
            )
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"unknown allocation {self.allocation!r}; use one of {', '.join(map(repr, ALLOCATIONS))}")
        _check_int("reestimate_every", self.reestimate_every, 1)
        if self.split not in SPLIT_MODES:
            raise ValueError(f"unknown split {self.split!r}; use one of {', '.join(map(repr, SPLIT_MODES))}")
        if self.growth is not None and not (isinstance(self.growth, (int, float)) and 1 <= self.growth < math.inf):
            raise ValueError(
                f"growth must be a finite number >= 1 (coarser terms use at least as many samples), got {self.growth!r}"
            )
        if isinstance(self.iterations, (list, tuple)):
            for n in self.iterations:
                _check_int("every entry of iterations", n, 1)
        else:
            _check_int("iterations", self.iterations, 1)
        if self.mge_levels is not None:
            _check_int("mge_levels", self.mge_levels, 0)
        if self.loaded_batch_size is not None:
            _check_int("loaded_batch_size", self.loaded_batch_size, 1)
        if isinstance(self.batch_size, (list, tuple)):
            for n in self.batch_size:
                _check_int("every entry of batch_size", n, 1)
        elif self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 1)

    @property
    def derived(self) -> bool:
        """Whether the per-term sizes come from the loaded batch (no explicit sizes given)."""
        return self.loaded_batch_size is not None and self.batch_size is None and self.batch_sizes is None

    def resolved_growth(self) -> float:
        """Growth per coarser level.

        Given, or derived from the loaded batch ``B``: the finest term keeps ``B // 4`` and the
        sizes grow geometrically to ``B`` at the deepest level (capped to ``[1, B**(1/levels)]``);
        else ``2**spatial_dims``.
        """
        if self.growth is not None:
            return float(self.growth)
        if self.derived and self.levels > 0:
            loaded = int(self.loaded_batch_size or 1)
            growth = (loaded / max(1, loaded // 4)) ** (1 / self.levels)
            return max(1.0, min(growth, loaded ** (1 / self.levels)))
        return float(2**self.spatial_dims)

    def finest_size(self, levels_below: int) -> int:
        """Finest-term size of a step with ``levels_below`` MGE levels.

        The given ``batch_size``; else, with a loaded batch ``B``, ``round(B / growth**levels_below)``
        so the deepest term takes the whole batch; else 8.
        """
        if isinstance(self.batch_size, int):
            return self.batch_size
        if self.loaded_batch_size is not None:
            return max(1, round(self.loaded_batch_size / self.resolved_growth() ** levels_below))
        return 8

    def mge_config(self, levels_below: int, batch_size: int | None = None) -> MGEConfig:
        """The :class:`MGEConfig` of a step with ``levels_below`` MGE levels under these options."""
        return MGEConfig(
            levels=levels_below,
            batch_size=self.finest_size(levels_below) if batch_size is None else batch_size,
            growth=self.resolved_growth(),
            batch_sizes=self.batch_sizes if levels_below == self.levels else None,
            restriction=self.restriction,
            spatial_dims=self.spatial_dims,
        )

    def without_equal_tail(self, levels_below: int) -> int:
        """Fewer MGE levels while the two coarsest terms of a derived nested step would be equal.

        A term whose nested batch equals the previous term's holds the same samples, so the pair
        ``l_{K-1}(B) - l_K(B) + l_K(B)`` is ``l_{K-1}(B)``: dropping the coarsest level gives the
        same estimate (in expectation when each pass draws its own noise) for fewer passes. This
        happens when the loaded batch is too small to grow, e.g. a batch of 1.
        """
        while levels_below > 0 and self.split == "nested":
            sizes = self.mge_config(levels_below).batch_sizes
            if sizes[-1] != sizes[-2]:
                break
            levels_below -= 1
        return levels_below

    def schedule(self, mge_levels: int | None = None) -> FullMultiscaleSchedule:
        """The :class:`FullMultiscaleSchedule` of these options (``mge_levels`` overrides the cap).

        With per-term sizes derived from the loaded batch, each stage keeps only the MGE levels
        whose nested batches grow (:meth:`without_equal_tail`).
        """
        cap = self.mge_levels if mge_levels is None else mge_levels
        below = [self.levels - lv if cap is None else min(cap, self.levels - lv) for lv in range(self.levels, -1, -1)]
        kept = [self.without_equal_tail(k) for k in below] if self.derived else below
        if kept != below:
            cap, below = kept, kept  # one cap per stage
        sizes = self.batch_size if self.batch_size is not None else [self.finest_size(k) for k in below]
        return FullMultiscaleSchedule(
            levels=self.levels,
            iterations=self.iterations,
            batch_size=sizes,
            growth=self.resolved_growth(),
            mge_levels=cap,
            restriction=self.restriction,
            spatial_dims=self.spatial_dims,
        )


StrategyFactory = Callable[[StrategyOptions], Strategy]


def _single(options: StrategyOptions) -> Strategy:
    size = options.loaded_batch_size or (options.batch_size if isinstance(options.batch_size, int) else 8)
    return MGEStrategy(MGEConfig(levels=0, batch_size=size, restriction=options.restriction), name="single")


def _mge(options: StrategyOptions) -> Strategy:
    config = options.mge_config(options.levels)
    if options.allocation == "adaptive":
        from .allocation import AdaptiveMGEStrategy

        return AdaptiveMGEStrategy(
            config.batch_sizes,
            every=options.reestimate_every,
            bound=options.loaded_batch_size,
            restriction=options.restriction,
            spatial_dims=options.spatial_dims,
        )
    return MGEStrategy(config)


def _equal_compute(options: StrategyOptions, mge_levels: int | None) -> FullMultiscaleSchedule:
    """The schedule whose work equals ``iterations`` single-scale steps of the loaded batch."""
    schedule = options.schedule(mge_levels)
    if options.budget == "steps" or not isinstance(options.iterations, int):
        return schedule
    share = 1.0 if options.budget == "compute" else float(options.budget)
    from .cost import step_work_units

    single = options.iterations * (options.loaded_batch_size or options.finest_size(0))
    spent = sum(
        s.iterations * step_work_units(s.batch_sizes, base_level=s.level, spatial_dims=options.spatial_dims)
        for s in schedule.stages
    )
    steps = max(2 ** (options.levels + 1) - 1, round(options.iterations * share * single / spent))
    return replace(options, iterations=steps, budget="steps").schedule(mge_levels)


def _full_multiscale(options: StrategyOptions) -> Strategy:
    schedule = _equal_compute(options, None)
    if options.allocation == "adaptive":
        from .allocation import AdaptiveFullMultiscaleStrategy

        return AdaptiveFullMultiscaleStrategy(
            schedule, every=options.reestimate_every, bound=options.loaded_batch_size, spatial_dims=options.spatial_dims
        )
    return FullMultiscaleStrategy(schedule)


def _progressive_resizing(options: StrategyOptions) -> Strategy:
    return FullMultiscaleStrategy(_equal_compute(options, 0), name="progressive-resizing")


_REGISTRY: dict[str, StrategyFactory] = {
    "single": _single,
    "mge": _mge,
    "full-multiscale": _full_multiscale,
    "progressive-resizing": _progressive_resizing,
}


def register_strategy(name: str, factory: StrategyFactory, *, overwrite: bool = False) -> None:
    """Register ``factory`` under ``name`` for this process.

    Raises:
        ValueError: if ``name`` is taken and ``overwrite`` is false.
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a strategy named {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory


def _entry_point_factories() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_strategies() -> tuple[str, ...]:
    """Names of the built-in, registered and entry-point strategies."""
    return tuple(sorted(set(_REGISTRY) | set(_entry_point_factories())))


def get_strategy(name: str) -> StrategyFactory:
    """The factory registered under ``name`` (built-in, registered, or from an entry point).

    Raises:
        ValueError: for an unknown name, listing the known ones and the closest match.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    plugins = _entry_point_factories()
    if name in plugins:
        factory = plugins[name].load()
        _REGISTRY[name] = factory
        return factory
    known = available_strategies()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown strategy {name!r}; known strategies: {', '.join(map(repr, known))}.{hint} "
        f"Packages add strategies under the entry-point group {ENTRY_POINT_GROUP!r}."
    )


def check_fits(strategy: Strategy, loaded_batch_size: int, split: str = "nested") -> None:
    """Fail up front when ``strategy`` needs more samples per step than a loaded batch holds.

    Raises:
        ValueError: naming the per-term sizes and the batch size to load.
    """
    need = strategy.required_batch_size(split)
    if need > loaded_batch_size:
        raise ValueError(
            f"strategy {strategy.name!r} needs {need} samples per step (per-term sizes "
            f"{list(strategy.max_batch_sizes)}, {split} split) but the loaded batches hold {loaded_batch_size}; "
            f"use DataLoader(batch_size={need}) or lower mge_batch_size/growth"
        )


def build_strategy(strategy: str | Strategy, **options: Any) -> Strategy:
    """The one way to get a strategy: by name from :class:`StrategyOptions` keywords, or as given.

    With ``loaded_batch_size``, the per-term batches are cut from loaded batches of that size:
    unless ``batch_size``, ``growth`` or ``batch_sizes`` say otherwise, the finest term keeps
    ``B // 4`` of a loaded batch of ``B`` and the sizes grow geometrically to ``B`` at the
    coarsest level (``B = 16``, 2 levels: 4, 8, 16); each Full-Multiscale stage ends its terms at
    ``B``, so the coarsest stage trains on the whole batch. A strategy built here is then checked
    to fit the loaded batch. A built strategy is returned as given (its batches may come from a
    sampler that sizes each step's batch, such as ``mge_monai.MultiscaleBatchSampler``).

    Args:
        strategy: a registered name (``"single"``, ``"mge"``, ``"full-multiscale"``,
            ``"progressive-resizing"``, plug-ins) or a built :class:`Strategy`, returned as is.
        options: :class:`StrategyOptions` fields.

    Raises:
        ValueError: for an unknown name or option, or a strategy that needs more samples per step
            than a loaded batch holds, naming the batch size to load.

    Example:
        >>> build_strategy("mge", levels=2, batch_size=2).plan(0).batch_sizes
        (2, 8, 32)
        >>> build_strategy("mge", levels=2, loaded_batch_size=16).plan(0).batch_sizes
        (4, 8, 16)
        >>> fms = build_strategy("full-multiscale", loaded_batch_size=16, iterations=7)
        >>> [s.batch_sizes for s in fms.schedule.stages]
        [(16,), (8, 16), (4, 8, 16)]
        >>> progressive = build_strategy("progressive-resizing", loaded_batch_size=16, iterations=7)
        >>> [s.batch_sizes for s in progressive.schedule.stages]
        [(16,), (16,), (16,)]
    """
    unknown = sorted(set(options) - {f.name for f in fields(StrategyOptions)})
    if unknown:
        known = ", ".join(f.name for f in fields(StrategyOptions))
        raise ValueError(f"unknown strategy option(s) {', '.join(map(repr, unknown))}; the options are: {known}")
    spec = StrategyOptions(**options)
    if isinstance(strategy, Strategy):
        return strategy
    built = get_strategy(strategy)(spec)
    if spec.loaded_batch_size is not None:
        check_fits(built, spec.loaded_batch_size, spec.split)
    return built


# --- fitting the levels to a run -------------------------------------------------------------

STAGED_STRATEGIES: tuple[str, ...] = ("full-multiscale", "progressive-resizing")
"""Built-in strategies with ``levels + 1`` stages, whose run length bounds the levels."""


def _fit_problem(
    levels: int,
    iterations: int | Sequence[int] | None,
    spatial_shape: Sequence[int] | None,
    multiple: int,
    probe: Callable[[int], Any] | None,
) -> ValueError | None:
    """Why ``levels`` cannot be used (the first failing check), or ``None``."""
    if isinstance(iterations, int) and not isinstance(iterations, bool):
        try:
            halving_split(iterations, levels + 1)
        except ValueError as error:
            return ValueError(
                f"a run of {iterations} iterations is too short for the {levels + 1} stages of "
                f"levels={levels} ({error})"
            )
    if spatial_shape is not None:
        try:
            check_level_sizes(spatial_shape, levels, multiple=multiple)
        except ValueError as error:
            return error
    if probe is not None:
        try:
            probe(levels)
        except ValueError as error:
            return error
    return None


def fit_levels(
    requested: int,
    *,
    iterations: int | Sequence[int] | None = None,
    spatial_shape: Sequence[int] | None = None,
    multiple: int = 1,
    probe: Callable[[int], Any] | None = None,
) -> tuple[int, str | None]:
    """The largest number of levels, at most ``requested``, that this run can use, and why not more.

    Checked for each candidate, from ``requested`` down: the run length (``iterations`` split by
    halving over ``levels + 1`` stages, for staged strategies; pass ``None`` otherwise, or for
    explicit per-stage counts), the image sizes (every level of ``spatial_shape`` divisible by
    ``multiple``), then ``probe(levels)`` (e.g. a dry run of the network at that level, raising
    ``ValueError`` when it fails). ``levels=0`` passes the first check always, and the second for
    any size ``multiple`` divides.

    Args:
        requested: the levels the user asked for.
        iterations: the run's total steps, for a staged strategy.
        spatial_shape: the images' fine spatial shape.
        multiple: divisor the network needs at every level.
        probe: ``probe(levels)`` raises ``ValueError`` when the network cannot run that deep.

    Returns:
        ``(levels, reason)``: ``reason`` is ``None`` when ``requested`` works, else why
        ``levels + 1`` does not (for :func:`warn_fitted_levels`).

    Raises:
        ValueError: when no level works (the images or the network fail even at level 0): the
            error found at level 0.

    Example:
        >>> fit_levels(3, iterations=6)[0]  # 4 stages need 8 steps when halving
        2
        >>> levels, reason = fit_levels(3, spatial_shape=(12, 12))
        >>> levels, reason[:45]
        (2, 'spatial size 12 (axis H) is not divisible by ')
    """
    _check_int("levels", requested, 0)
    problems: dict[int, ValueError] = {}
    for levels in range(requested, -1, -1):
        problem = _fit_problem(levels, iterations, spatial_shape, multiple, probe)
        if problem is None:
            return levels, None if levels == requested else str(problems[levels + 1])
        problems[levels] = problem
    raise problems[0]


def warn_fitted_levels(requested: int, levels: int, reason: str | None, *, stacklevel: int = 3) -> None:
    """Warn once that a run uses ``levels`` instead of ``requested`` (nothing when they agree)."""
    if reason is None or levels == requested:
        return
    warnings.warn(
        f"using levels={levels} instead of the requested levels={requested}: {reason}. Pass levels={levels} to "
        "choose this yourself (and silence this warning), or give the run more iterations or larger images",
        stacklevel=stacklevel,
    )


def refit_options(options: dict[str, Any], levels: int) -> dict[str, Any]:
    """:class:`StrategyOptions` keywords for ``levels`` instead of ``options["levels"]``.

    Per-level lists are cut to the new levels: explicit ``batch_sizes`` (finest first) lose their
    coarsest terms, per-stage ``batch_size`` lists (coarsest first) their coarsest stages, and
    per-stage ``iterations`` give the dropped stages' steps to the new coarsest stage, so the run
    keeps its length.

    Example:
        >>> refit_options({"levels": 3, "iterations": [8, 4, 2, 1], "batch_size": [16, 8, 4, 2]}, 1)
        {'levels': 1, 'iterations': [14, 1], 'batch_size': [4, 2]}
    """
    out = dict(options, levels=levels)
    drop = int(options.get("levels", levels)) - levels
    if drop <= 0:
        return out
    if isinstance(options.get("batch_sizes"), (list, tuple)):
        out["batch_sizes"] = list(options["batch_sizes"])[: levels + 1]
    if isinstance(options.get("batch_size"), (list, tuple)):
        out["batch_size"] = list(options["batch_size"])[drop:]
    if isinstance(options.get("iterations"), (list, tuple)):
        steps = [int(n) for n in options["iterations"]]
        out["iterations"] = [sum(steps[: drop + 1]), *steps[drop + 1 :]]
    return out
