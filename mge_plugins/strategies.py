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
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from typing import Any

from .config import MGEConfig
from .restriction import check_level_sizes
from .schedule import FullMultiscaleSchedule

__all__ = [
    "ENTRY_POINT_GROUP",
    "FullMultiscaleStrategy",
    "MGEStrategy",
    "ProgressiveResizingStrategy",
    "SingleScaleStrategy",
    "StepPlan",
    "Strategy",
    "StrategyOptions",
    "available_strategies",
    "build_strategy",
    "get_strategy",
    "register_strategy",
    "strategy_for_loader",
]

ENTRY_POINT_GROUP = "mge_plugins.strategies"


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


class SingleScaleStrategy(Strategy):
    """Plain fine-level training, the baseline: one term of ``batch_size`` at level 0."""

    name = "single"

    def __init__(self, batch_size: int = 8, restriction: str = "area") -> None:
        self.config = MGEConfig(levels=0, batch_size=batch_size, restriction=restriction)

    def plan(self, step: int) -> StepPlan:
        """The same plan at every step."""
        return StepPlan(0, self.config.sizes, self.config.restriction)


class MGEStrategy(Strategy):
    """Multiscale Gradient Estimation at every step, with a fixed :class:`MGEConfig`."""

    name = "mge"

    def __init__(self, config: MGEConfig) -> None:
        self.config = config

    def plan(self, step: int) -> StepPlan:
        """The same plan at every step."""
        return StepPlan(0, self.config.sizes, self.config.restriction)


class FullMultiscaleStrategy(Strategy):
    """Coarse-to-fine stages with MGE inside each, driven by a :class:`FullMultiscaleSchedule`."""

    name = "full-multiscale"

    def __init__(self, schedule: FullMultiscaleSchedule) -> None:
        self.schedule = schedule

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

    def describe(self) -> dict[str, Any]:
        """The schedule as plain data."""
        return {"strategy": self.name, **self.schedule.to_dict()}


class ProgressiveResizingStrategy(FullMultiscaleStrategy):
    """Coarse-to-fine stages without MGE corrections: each stage trains on its own level only.

    The baseline that Full-Multiscale is measured against (progressive resizing, as in fastai and
    Composer, on the same power-of-two levels and stage split): same stages, same batches, but a
    stage's gradient is the plain gradient of its coarse problem, biased for the fine one.
    """

    name = "progressive-resizing"

    def __init__(self, schedule: FullMultiscaleSchedule) -> None:
        if schedule.mge_levels != 0:
            raise ValueError(
                f"progressive resizing uses no MGE levels inside a stage, got mge_levels={schedule.mge_levels}; "
                "build the schedule with mge_levels=0 or use FullMultiscaleStrategy"
            )
        super().__init__(schedule)


@dataclass(frozen=True)
class StrategyOptions:
    """The options a host collects from its user, shared by every strategy factory.

    Attributes:
        levels: MGE levels below the finest (``"mge"``) or number of stages minus one
            (``"full-multiscale"``); ignored by ``"single"``.
        batch_size: finest batch size.
        growth: batch growth per coarser level (default ``2**spatial_dims``).
        batch_sizes: explicit per-term sizes for ``"mge"``.
        restriction: restriction method.
        spatial_dims: 2 or 3.
        iterations: Full-Multiscale steps, total (split by halving) or per stage.
        mge_levels: Full-Multiscale's cap on MGE levels inside a stage.
    """

    levels: int = 2
    batch_size: int = 8
    growth: float | None = None
    batch_sizes: Sequence[int] | None = None
    restriction: str = "area"
    spatial_dims: int = 2
    iterations: int | Sequence[int] = 3750
    mge_levels: int | None = None


StrategyFactory = Callable[[StrategyOptions], Strategy]


def _single(options: StrategyOptions) -> Strategy:
    return SingleScaleStrategy(options.batch_size, options.restriction)


def _mge(options: StrategyOptions) -> Strategy:
    return MGEStrategy(
        MGEConfig(
            levels=options.levels,
            batch_size=options.batch_size,
            growth=options.growth,
            batch_sizes=options.batch_sizes,
            restriction=options.restriction,
            spatial_dims=options.spatial_dims,
        )
    )


def _full_multiscale(options: StrategyOptions) -> Strategy:
    return FullMultiscaleStrategy(
        FullMultiscaleSchedule(
            levels=options.levels,
            iterations=options.iterations,
            batch_size=options.batch_size,
            growth=options.growth,
            mge_levels=options.mge_levels,
            restriction=options.restriction,
            spatial_dims=options.spatial_dims,
        )
    )


def _progressive_resizing(options: StrategyOptions) -> Strategy:
    return ProgressiveResizingStrategy(
        FullMultiscaleSchedule(
            levels=options.levels,
            iterations=options.iterations,
            batch_size=options.batch_size,
            growth=options.growth,
            mge_levels=0,
            restriction=options.restriction,
            spatial_dims=options.spatial_dims,
        )
    )


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


def build_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy ``name`` from :class:`StrategyOptions` keyword arguments.

    Example:
        >>> build_strategy("mge", levels=2, batch_size=2).plan(0).batch_sizes
        (2, 8, 32)
    """
    return get_strategy(name)(StrategyOptions(**options))


def strategy_for_loader(
    name: str,
    loaded_batch_size: int,
    *,
    levels: int = 2,
    mge_batch_size: int | None = None,
    growth: float | None = None,
    batch_sizes: Sequence[int] | None = None,
    restriction: str = "area",
    spatial_dims: int = 2,
    iterations: int | Sequence[int] = 3750,
    mge_levels: int | None = None,
    split: str = "nested",
) -> Strategy:
    """Build a strategy whose per-term batches are cut from loaded batches of ``loaded_batch_size``.

    Hosts with one data loader use this. Unless ``mge_batch_size``, ``growth`` or ``batch_sizes``
    say otherwise, the finest term keeps ``B // 4`` of a loaded batch of ``B`` and the sizes grow
    geometrically to ``B`` at the coarsest level (``B = 16``, 2 levels: 4, 8, 16); each
    Full-Multiscale stage ends its terms at ``B``, so the coarsest stage trains on the whole batch.

    Raises:
        ValueError: when the strategy needs more samples per step than a loaded batch holds,
            naming the batch size to load.

    Example:
        >>> strategy_for_loader("mge", 16, levels=2).plan(0).batch_sizes
        (4, 8, 16)
        >>> [s.batch_sizes for s in strategy_for_loader("full-multiscale", 16, iterations=7).schedule.stages]
        [(16,), (8, 16), (4, 8, 16)]
        >>> [s.batch_sizes for s in strategy_for_loader("progressive-resizing", 16, iterations=7).schedule.stages]
        [(16,), (16,), (16,)]
    """
    from .batching import required_batch_size

    loaded = int(loaded_batch_size)
    if name == "single":
        return build_strategy("single", batch_size=loaded, restriction=restriction)
    derived = mge_batch_size is None and batch_sizes is None
    if derived and growth is None and levels > 0:
        growth = (loaded / max(1, loaded // 4)) ** (1 / levels)
    elif growth is None:
        growth = float(2**spatial_dims)
    if derived and levels > 0:
        growth = max(1.0, min(growth, loaded ** (1 / levels)))
    if name == "progressive-resizing":
        mge_levels = 0
    if name in ("full-multiscale", "progressive-resizing") and mge_batch_size is None:
        below = [levels - lv if mge_levels is None else min(mge_levels, levels - lv) for lv in range(levels, -1, -1)]
        batch_size: int | list[int] = [max(1, round(loaded / growth**k)) for k in below]
    else:
        batch_size = mge_batch_size or max(1, round(loaded / growth**levels))
    strategy = build_strategy(
        name,
        levels=levels,
        batch_size=batch_size,
        growth=growth,
        batch_sizes=batch_sizes,
        restriction=restriction,
        spatial_dims=spatial_dims,
        iterations=iterations,
        mge_levels=mge_levels,
    )
    schedule = getattr(strategy, "schedule", None)
    starts = [s.start for s in schedule.stages] if schedule is not None else [0]
    need = max(required_batch_size(strategy.plan(t).batch_sizes, split) for t in starts)
    if need > loaded:
        raise ValueError(
            f"strategy {name!r} needs {need} samples per step (per-term sizes {list(strategy.max_batch_sizes)}, "
            f"{split} split) but the loaded batches hold {loaded}; use DataLoader(batch_size={need}) or lower "
            "mge_batch_size/growth"
        )
    return strategy
