from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

import mge_plugins.strategies as strategies_module
from mge_plugins import (
    MGEConfig,
    StepPlan,
    Strategy,
    StrategyOptions,
    available_strategies,
    build_strategy,
    register_strategy,
)
from mge_plugins.strategies import MGEStrategy, get_strategy


def test_default_growth_is_two_to_the_d() -> None:
    assert MGEConfig(levels=2, batch_size=2).batch_sizes == (2, 8, 32)
    assert MGEConfig(levels=2, batch_size=1, spatial_dims=3).batch_sizes == (1, 8, 64)
    assert MGEConfig(levels=3, batch_size=2, growth=2).batch_sizes == (2, 4, 8, 16)
    assert MGEConfig(levels=1, batch_sizes=[3, 5]).batch_sizes == (3, 5)
    assert MGEConfig(levels=1, batch_sizes=[3, 5]).batch_size == 3
    assert MGEConfig(levels=0, batch_size=5).num_terms == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(levels=2, batch_sizes=[4, 8]), r"batch_sizes has 2 entries but levels=2 needs 3.*set levels=1"),
        (dict(levels=1, batch_sizes=[4, 0]), "must be >= 1"),
        (dict(growth=0.5), r"growth must be >= 1.*growth=1 for equal batches or leave it None for 4 in 2D"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(levels=-1), "levels must be an integer >= 0"),
        (dict(restriction="bilinear"), "unknown restriction method 'bilinear'"),
        (dict(spatial_dims=1), "spatial_dims must be 2"),
    ],
)
def test_bad_configs(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MGEConfig(**kwargs)


def test_builtin_strategies() -> None:
    assert {"single", "mge", "full-multiscale"} <= set(available_strategies())
    single = build_strategy("single", batch_size=6, levels=3)
    assert single.plan(0) == single.plan(99) == StepPlan(0, (6,), "area")
    mge = build_strategy("mge", levels=2, batch_size=2, restriction="nearest")
    assert mge.plan(5) == StepPlan(0, (2, 8, 32), "nearest")
    assert mge.coarsest_level == 2 and mge.total_steps is None
    fms = build_strategy("full-multiscale", levels=2, batch_size=2, iterations=[4, 2, 1])
    assert [fms.plan(t).level for t in range(8)] == [2, 2, 2, 2, 1, 1, 0, 0]
    assert fms.plan(5) == StepPlan(1, (2, 8), "area", stage=1)
    assert fms.total_steps == 7 and fms.coarsest_level == 2
    assert fms.max_batch_sizes == (2, 8, 32)
    assert fms.describe()["stages"][0]["level"] == 2


def test_unknown_strategy_lists_known_names_and_suggests() -> None:
    with pytest.raises(ValueError) as info:
        get_strategy("full_multiscale")
    msg = str(info.value)
    assert "'full-multiscale', 'mge', 'progressive-resizing', 'single'" in msg
    assert "Did you mean 'full-multiscale'?" in msg and "mge_plugins.strategies" in msg


class EveryOtherStepCoarse(Strategy):
    name = "alternate"

    def plan(self, step: int) -> StepPlan:
        return StepPlan(step % 2, (4,))


def make_alternate(options) -> Strategy:
    return EveryOtherStepCoarse()


def test_entry_point_strategies_are_found(monkeypatch) -> None:
    ep = EntryPoint(name="alternate", value=f"{__name__}:make_alternate", group="mge_plugins.strategies")
    monkeypatch.setattr(
        strategies_module, "entry_points", lambda group: [ep] if group == "mge_plugins.strategies" else []
    )
    monkeypatch.setattr(strategies_module, "_REGISTRY", dict(strategies_module._REGISTRY))
    assert "alternate" in available_strategies()
    assert build_strategy("alternate").plan(3) == StepPlan(1, (4,))


def test_register_strategy(monkeypatch) -> None:
    monkeypatch.setattr(strategies_module, "_REGISTRY", dict(strategies_module._REGISTRY))
    register_strategy("tiny", lambda options: MGEStrategy(MGEConfig(levels=0, batch_size=1)))
    assert build_strategy("tiny").plan(0).batch_sizes == (1,)
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        register_strategy("mge", make_alternate)


def test_strategy_checks_image_size_against_its_coarsest_level() -> None:
    fms = build_strategy("full-multiscale", levels=3, iterations=15)
    fms.check_image_size((128, 64), multiple=8)
    with pytest.raises(ValueError, match=r"80 \(axis W\) gives side 20 at level 2.*64 or 96.*levels <= 1"):
        fms.check_image_size((128, 80), multiple=8)
    build_strategy("single").check_image_size((81, 81))


def test_loaded_batch_size_derives_terms_from_the_loaded_batch() -> None:
    assert build_strategy("mge", levels=2, loaded_batch_size=16).plan(0).batch_sizes == (4, 8, 16)
    assert build_strategy("mge", levels=1, spatial_dims=3, loaded_batch_size=8).plan(0).batch_sizes == (2, 8)
    # An explicit finest batch keeps the default growth (4 in 2D).
    assert build_strategy("mge", levels=2, batch_size=2, loaded_batch_size=32).plan(0).batch_sizes == (2, 8, 32)
    fms = build_strategy("full-multiscale", levels=2, iterations=7, mge_levels=1, loaded_batch_size=16)
    assert [s.batch_sizes for s in fms.schedule.stages] == [(16,), (8, 16), (8, 16)]
    assert build_strategy("single", loaded_batch_size=12).plan(3).batch_sizes == (12,)
    with pytest.raises(ValueError, match=r"needs 64 samples.*loaded batches hold 16.*DataLoader\(batch_size=64\)"):
        build_strategy("mge", levels=2, batch_sizes=[4, 16, 64], loaded_batch_size=16)
    with pytest.raises(ValueError, match=r"needs 28 samples.*disjoint"):
        build_strategy("mge", levels=2, split="disjoint", loaded_batch_size=16)


def test_full_multiscale_drops_coarse_terms_a_small_loaded_batch_cannot_grow() -> None:
    def stages(**options) -> list[tuple[int, ...]]:
        fms = build_strategy("full-multiscale", levels=2, iterations=7, **options)
        return [s.batch_sizes for s in fms.schedule.stages]

    # A batch of 1 would give (1, 1, 1) at the fine stage: three levels of passes on one sample.
    assert stages(loaded_batch_size=1) == [(1,), (1,), (1,)]
    assert stages(loaded_batch_size=2) == [(2,), (2,), (1, 1, 2)]  # the middle stage's (1, 1) becomes (2,)
    assert stages(loaded_batch_size=16) == [(16,), (8, 16), (4, 8, 16)]  # growing batches are kept
    # Disjoint terms hold different samples, and explicit sizes are the user's: both are kept as given.
    assert StrategyOptions(levels=2, loaded_batch_size=1, split="disjoint").without_equal_tail(2) == 2
    assert StrategyOptions(levels=2, loaded_batch_size=1).without_equal_tail(2) == 0
    assert stages(batch_size=1, growth=1.0) == [(1,), (1, 1), (1, 1, 1)]


def test_a_plugin_strategy_gets_the_same_loader_derived_sizes(monkeypatch) -> None:
    monkeypatch.setattr(strategies_module, "_REGISTRY", dict(strategies_module._REGISTRY))
    seen: list[StrategyOptions] = []

    def every_step_mge(options: StrategyOptions) -> Strategy:
        seen.append(options)
        return MGEStrategy(options.mge_config(options.levels), name="plugin")

    register_strategy("plugin", every_step_mge)
    plugin = build_strategy("plugin", levels=2, loaded_batch_size=16)
    assert plugin.plan(0).batch_sizes == build_strategy("mge", levels=2, loaded_batch_size=16).plan(0).batch_sizes
    assert seen[0].loaded_batch_size == 16 and seen[0].split == "nested"
    with pytest.raises(ValueError, match=r"strategy 'plugin' needs 28 samples"):
        build_strategy("plugin", levels=2, split="disjoint", loaded_batch_size=16)


def test_a_built_strategy_is_returned_as_given() -> None:
    built = build_strategy("mge", levels=2, batch_size=2)
    assert build_strategy(built) is built
    assert build_strategy(built, loaded_batch_size=1) is built  # a batch sampler may size each step's batch
    with pytest.raises(ValueError, match=r"needs 32 samples.*hold 8"):
        build_strategy("mge", levels=2, batch_size=2, loaded_batch_size=8)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(restriction="aera"), r"unknown restriction 'aera' \(did you mean 'area'\?\)"),
        (dict(levels=-1), "levels must be an integer >= 0, got -1"),
        (dict(iterations=2.5), "iterations must be an integer >= 1, got 2.5"),
        (dict(iterations=0), "iterations must be an integer >= 1, got 0"),
        (dict(growth=float("inf")), "growth must be a finite number >= 1"),
        (dict(split="nestd"), "unknown split 'nestd'"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(levles=2), "unknown strategy option.*'levles'"),
    ],
)
def test_bad_options_fail_when_the_strategy_is_built(options, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_strategy("full-multiscale", **options)


def test_single_is_mge_with_no_levels_and_progressive_resizing_is_fms_without_mge() -> None:
    single = build_strategy("single", loaded_batch_size=8)
    assert isinstance(single, MGEStrategy) and single.config.levels == 0 and single.name == "single"
    fms = build_strategy("full-multiscale", levels=2, iterations=70, loaded_batch_size=16)
    progressive = build_strategy("progressive-resizing", levels=2, iterations=70, loaded_batch_size=16)
    assert type(progressive) is type(fms) and progressive.schedule.mge_levels == 0
    assert [s.iterations for s in progressive.schedule.stages] == [s.iterations for s in fms.schedule.stages]
    for step in (0, 39, 40, 59, 60, 69):
        assert progressive.plan(step).level == fms.plan(step).level
        assert progressive.plan(step).batch_sizes == (16,)
    assert progressive.describe()["strategy"] == "progressive-resizing"


@pytest.mark.parametrize("name", ["full-multiscale", "progressive-resizing"])
def test_the_compute_budget_lengthens_the_schedule_to_the_single_scale_work(name: str) -> None:
    from mge_plugins.cost import step_work_units

    steps = build_strategy(name, levels=2, loaded_batch_size=16, iterations=400)
    compute = build_strategy(name, levels=2, loaded_batch_size=16, iterations=400, budget="compute")
    work = sum(s.iterations * step_work_units(s.batch_sizes, base_level=s.level) for s in compute.schedule.stages)
    assert compute.total_steps > 4 * steps.total_steps
    assert work == pytest.approx(400 * 16, rel=0.01)  # what 400 single-scale steps of 16 samples spend
    assert [s.level for s in compute.schedule.stages] == [s.level for s in steps.schedule.stages]
    assert build_strategy("mge", levels=2, loaded_batch_size=16, budget="compute").plan(0).batch_sizes == (4, 8, 16)
    with pytest.raises(ValueError, match="unknown budget 'flops'"):
        build_strategy(name, budget="flops")


def test_a_fractional_budget_spends_that_share_of_the_single_scale_work() -> None:
    from mge_plugins.cost import step_work_units

    third = build_strategy("progressive-resizing", levels=2, loaded_batch_size=16, iterations=400, budget=0.35)
    work = sum(s.iterations * step_work_units(s.batch_sizes, base_level=s.level) for s in third.schedule.stages)
    assert work == pytest.approx(0.35 * 400 * 16, rel=0.01)
    with pytest.raises(ValueError, match=r"unknown budget -1.*a fraction > 0"):
        build_strategy("full-multiscale", budget=-1)
