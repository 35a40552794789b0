from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mge_plugins import CostMeter, MultiscaleStep, build_strategy, restrict
from mge_plugins.allocation import (
    AdaptiveFullMultiscaleStrategy,
    AdaptiveMGEStrategy,
    LevelVariances,
    measure_level_variances,
    optimal_allocation,
    term_costs,
)
from mge_plugins.diagnostics import level_difference_norms

COSTS = (1.0, 0.25, 0.0625)  # per-sample pass cost per level in 2D


def test_the_rule_is_n_proportional_to_sqrt_v_over_c_at_the_budget() -> None:
    measured = LevelVariances(plain=(100.0, 80.0, 40.0), difference=(1.0, 0.5), samples=8)
    budget = 40.0
    best = optimal_allocation(measured, COSTS, budget, max_levels=2)
    v, c = measured.term_variances(2), term_costs(COSTS, 2)
    scale = budget / sum(math.sqrt(vk * ck) for vk, ck in zip(v, c))
    assert best.batch_sizes == tuple(max(1, round(scale * math.sqrt(vk / ck))) for vk, ck in zip(v, c))
    assert best.levels == 2 and best.variance_ratio < 0.5  # small differences: MGE pays
    assert best.cost == pytest.approx(budget, rel=0.1)


def test_uncorrelated_levels_choose_plain_sgd() -> None:
    # Differences as noisy as the gradients themselves: every MGE level only adds variance.
    measured = LevelVariances(plain=(100.0, 100.0, 100.0), difference=(200.0, 200.0), samples=8)
    best = optimal_allocation(measured, COSTS, budget=16.0)
    assert best.levels == 0 and best.batch_sizes == (16,) and best.variance_ratio == pytest.approx(1.0)


def test_a_loaded_batch_caps_the_terms_and_says_so() -> None:
    measured = LevelVariances(plain=(100.0, 80.0, 40.0), difference=(1.0, 0.5), samples=8)
    best = optimal_allocation(measured, COSTS, budget=40.0, max_levels=2, bound=16)
    assert max(best.batch_sizes) == 16 and best.capped


def smooth(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g).repeat_interleave(size // 4, 2).repeat_interleave(size // 4, 3)


def test_measured_differences_are_small_where_levels_agree_and_large_where_they_do_not() -> None:
    torch.manual_seed(0)
    pointwise = nn.Conv2d(1, 1, 1)  # commutes with area restriction: the levels' gradients nearly agree
    images = smooth(8)

    def smooth_loss(indices: slice, level: int) -> torch.Tensor:
        x = restrict(images[indices], level)
        return (pointwise(x) - 0.5 * x).pow(2).mean()

    agree = measure_level_variances(smooth_loss, pointwise, samples=8, levels=2)
    assert all(d < 0.05 * p for d, p in zip(agree.difference, agree.plain))
    assert optimal_allocation(agree, COSTS, budget=16.0).levels == 2

    noise = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))  # no structure across levels
    conv = nn.Conv2d(1, 1, 3, padding=1)

    def rough_loss(indices: slice, level: int) -> torch.Tensor:
        x = restrict(noise[indices], level)
        return (conv(x) - x.flip(-1)).pow(2).mean()

    rough = measure_level_variances(rough_loss, conv, samples=8, levels=2)
    assert rough.difference[0] / rough.plain[0] > 10 * agree.difference[0] / agree.plain[0]


def test_coupled_draws_at_every_level_and_random_streams_left_as_they_were() -> None:
    model = nn.Conv2d(1, 1, 1)
    images = smooth(4)

    def noisy_loss(indices: slice, level: int) -> torch.Tensor:
        from mge_plugins import restricted_randn

        clean = images[indices]
        noisy = restrict(clean, level) + 0.1 * restricted_randn(clean.shape, level, keep_std=True)
        return (model(noisy) - restrict(clean, level)).pow(2).mean()

    state = torch.get_rng_state()
    measure_level_variances(noisy_loss, model, samples=4, levels=1)
    assert torch.equal(torch.get_rng_state(), state)


def adaptive_run(steps: int, resume_at: int | None = None) -> tuple[list[tuple[int, ...]], AdaptiveMGEStrategy]:
    torch.manual_seed(0)
    model = nn.Conv2d(1, 1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    strategy = build_strategy("mge", levels=2, loaded_batch_size=16, allocation="adaptive", reestimate_every=3)
    assert isinstance(strategy, AdaptiveMGEStrategy)
    runner = MultiscaleStep(strategy, CostMeter(baseline_batch_size=16))
    plans = []
    for step in range(steps):
        images = smooth(16, seed=step)

        def level_loss(indices: slice, level: int, images=images) -> torch.Tensor:
            x = restrict(images[indices], level)
            return (model(x) - 0.5 * x).pow(2).mean()

        before = strategy.plan(step).batch_sizes
        opt.zero_grad()
        outcome = runner.run(step, 16, level_loss, model=model)
        assert outcome.plan.batch_sizes == before  # a step's sizes were fixed before its batch was seen
        opt.step()
        plans.append(before)
        if resume_at is not None and step + 1 == resume_at:
            saved = strategy.state_dict()
            strategy = AdaptiveMGEStrategy(strategy.initial, every=3, bound=16)
            strategy.load_state_dict(saved)
            runner = MultiscaleStep(strategy, runner.meter)
    return plans, strategy


def test_adaptive_mge_changes_sizes_only_after_a_measurement_and_resumes_alike() -> None:
    plans, strategy = adaptive_run(9)
    assert plans[:3] == [(4, 8, 16)] * 3  # the loader-derived start
    assert [entry["from_step"] for entry in strategy.history] == [3, 6, 9]
    assert plans[3] == tuple(strategy.history[0]["batch_sizes"]) and max(plans[3]) <= 16
    assert plans[3] != plans[0]
    resumed, _ = adaptive_run(9, resume_at=5)
    assert resumed == plans


def adaptive_fms_run(resume_at: int | None = None) -> tuple[list, AdaptiveFullMultiscaleStrategy]:
    torch.manual_seed(0)
    model = nn.Conv2d(1, 1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    options = {"levels": 2, "loaded_batch_size": 16, "iterations": 42, "allocation": "adaptive", "reestimate_every": 3}
    strategy = build_strategy("full-multiscale", **options)
    assert isinstance(strategy, AdaptiveFullMultiscaleStrategy)
    runner = MultiscaleStep(strategy, CostMeter(baseline_batch_size=16))
    plans = []
    for step in range(42):
        images = smooth(16, seed=step)

        def level_loss(indices: slice, level: int, images=images) -> torch.Tensor:
            x = restrict(images[indices], level)
            return (model(x) - 0.5 * x).pow(2).mean()

        before = strategy.plan(step)
        opt.zero_grad()
        outcome = runner.run(step, 16, level_loss, model=model)
        assert outcome.plan == before  # a step's sizes were fixed before its batch was seen
        opt.step()
        plans.append((before.level, before.batch_sizes))
        if resume_at is not None and step + 1 == resume_at:
            saved = strategy.state_dict()
            strategy = build_strategy("full-multiscale", **options)
            strategy.load_state_dict(saved)
            runner = MultiscaleStep(strategy, runner.meter)
    return plans, strategy


def test_adaptive_full_multiscale_reallocates_inside_stages_and_resumes_alike() -> None:
    plans, strategy = adaptive_fms_run()
    stages = strategy.schedule.stages  # 24 / 12 / 6 steps at levels 2, 1, 0
    assert [(s.level, s.start, s.stop) for s in stages] == [(2, 0, 24), (1, 24, 36), (0, 36, 42)]
    # The coarsest stage has no MGE level to allocate; the others measure every 3 of their steps.
    assert [(e["stage"], e["from_step"]) for e in strategy.history] == [(1, 27), (1, 30), (1, 33), (2, 39)]
    assert plans[:24] == [(2, (16,))] * 24 and plans[24:27] == [(1, (8, 16))] * 3
    assert plans[27] == (1, tuple(strategy.history[0]["batch_sizes"])) and plans[27][1] != (8, 16)
    assert plans[36] == (0, (4, 8, 16))  # a new stage starts from the schedule's sizes
    assert plans[39] == (0, tuple(strategy.history[3]["batch_sizes"]))
    # Each measurement covers the stage's level and those below it: levels 1-2, then 0-2.
    assert [len(e["costs"]) for e in strategy.history] == [2, 2, 2, 3]
    first = strategy.history[0]["costs"]
    assert first[0] / first[1] == pytest.approx(4, rel=0.2)  # FLOPs per sample at levels 1 and 2 (2D)
    resumed, _ = adaptive_fms_run(resume_at=31)
    assert resumed == plans


def test_an_unknown_allocation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown allocation 'optimal'"):
        build_strategy("mge", allocation="optimal")


def test_diagnose_reports_the_variances_and_the_allocation() -> None:
    from mge_plugins.allocation import diagnose

    model = nn.Conv2d(1, 1, 1)
    images = smooth(16)

    def level_loss(indices: slice, level: int) -> torch.Tensor:
        x = restrict(images[indices], level)
        return (model(x) - 0.5 * x).pow(2).mean()

    report = diagnose(level_loss, model, loaded=16, levels=2)
    assert report.count("\n") == 4 and "V(diff to k+1)" in report and "|diff|/|grad|" in report
    level0 = report.splitlines()[1].split()  # level, V, V(diff), |diff|/|grad|, cost
    assert len(level0) == 5 and 0 <= float(level0[3]) < 1
    assert "2 levels" in report and "MGE pays" in report


def test_the_diagnosis_compares_every_number_of_levels_as_optimal_allocation_does() -> None:
    from mge_plugins.allocation import Diagnosis, allocation_at

    measured = LevelVariances(plain=(4.0, 3.0, 2.0), difference=(0.1, 0.2), samples=8)
    diagnosis = Diagnosis.of(measured, COSTS, loaded=16)
    assert diagnosis.best == optimal_allocation(measured, COSTS, budget=16 * COSTS[0], bound=16)
    assert [a.levels for a in diagnosis.candidates] == [0, 1, 2]
    plain = diagnosis.candidates[0]
    assert plain.batch_sizes == (16,) and plain.variance_ratio == 1.0  # K = 0 is plain SGD, exactly
    assert diagnosis.candidates[2] == allocation_at(measured, COSTS, 16 * COSTS[0], 2, bound=16)
    assert diagnosis.pays and diagnosis.best_multiscale == diagnosis.best
    # the same variances at costs where coarse passes cost as much as fine ones: no level pays
    flat = diagnosis.with_costs([1.0, 1.0, 1.0])
    assert flat.measured == measured and not flat.pays and flat.best.levels == 0
    assert flat.best_multiscale is not None and flat.best_multiscale.variance_ratio > 1
    with pytest.raises(ValueError, match="give one cost per measured level"):
        diagnosis.with_costs([1.0, 0.25])


def test_bootstrap_resamples_are_the_variances_of_the_resampled_gradients() -> None:
    from mge_plugins.allocation import _resampled_variances, _variance

    grads = torch.randn(6, 3, 40, dtype=torch.float64)  # (samples, levels + 1, parameters)
    resampled = _resampled_variances(grads, 5, seed=3)
    generator = torch.Generator().manual_seed(3)
    for measured in resampled:
        rows = torch.randint(6, (6,), generator=generator)
        picked = grads[rows]
        assert measured.plain == pytest.approx([_variance(picked[:, k]) for k in range(3)], rel=1e-10)
        expected = [_variance(picked[:, k] - picked[:, k + 1]) for k in range(2)]
        assert measured.difference == pytest.approx(expected, rel=1e-10)
    assert _resampled_variances(grads, 5, seed=3) == resampled  # seeded


def test_the_diagnosis_spread_comes_from_the_resamples() -> None:
    from mge_plugins.allocation import Diagnosis

    model = nn.Conv2d(1, 1, 1)
    images = smooth(16)

    def level_loss(indices: slice, level: int) -> torch.Tensor:
        x = restrict(images[indices], level)
        return (model(x) - 0.5 * x).pow(2).mean()

    state = torch.get_rng_state()
    measured = measure_level_variances(level_loss, model, 8, 2, resamples=50)
    assert torch.equal(torch.get_rng_state(), state)  # the resampling draws from its own generator
    assert len(measured.resampled) == 50 and measured == measure_level_variances(level_loss, model, 8, 2, resamples=50)
    diagnosis = Diagnosis.of(measured, COSTS, loaded=16)
    low, high = diagnosis.ratio_interval()
    assert low <= diagnosis.best_multiscale.variance_ratio <= high or diagnosis.pays_share in (0.0, 1.0)
    assert (
        list(diagnosis.resampled_ratios) == sorted(diagnosis.resampled_ratios) and len(diagnosis.resampled_ratios) == 50
    )
    assert diagnosis.pays_share == sum(r < 1 for r in diagnosis.resampled_ratios) / 50
    assert Diagnosis.of(measure_level_variances(level_loss, model, 8, 2), COSTS, 16).ratio_interval() is None


def test_the_relative_level_difference_is_the_ratio_of_mean_norms_with_a_negative_control() -> None:
    # grad l_k(i) = 2**-k x_i exactly, so ||g_k - g_{k+1}|| = ||g_k|| / 2 for every sample: 0.5 at
    # every level pair. A loss that ignores the level has no difference at all.
    torch.manual_seed(0)
    model = nn.Linear(6, 1, bias=False)
    x = torch.randn(5, 6)

    def halving(indices: slice, level: int) -> torch.Tensor:
        return 2.0**-level * model(x[indices]).sum()

    def constant(indices: slice, level: int) -> torch.Tensor:
        return model(x[indices]).sum()

    measured = measure_level_variances(halving, model, samples=5, levels=2)
    assert measured.relative_difference == pytest.approx((0.5, 0.5), abs=1e-12)
    assert measured.relative_difference == pytest.approx(
        [n.relative for n in level_difference_norms(halving, [slice(i, i + 1) for i in range(5)], 2, [model.weight])],
        abs=1e-6,
    )
    assert measure_level_variances(constant, model, samples=5, levels=2).relative_difference == (0.0, 0.0)
