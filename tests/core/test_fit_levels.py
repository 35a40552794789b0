from __future__ import annotations

import warnings

import pytest

from mge_plugins import build_strategy
from mge_plugins.schedule import halving_split
from mge_plugins.strategies import fit_levels, refit_options, warn_fitted_levels


def test_requested_levels_that_work_are_kept() -> None:
    assert fit_levels(3, iterations=3750, spatial_shape=(64, 64), multiple=4) == (3, None)
    assert fit_levels(0, iterations=1, spatial_shape=(5, 7)) == (0, None)


@pytest.mark.parametrize("iterations, levels", [(1, 0), (2, 1), (4, 2), (7, 2), (8, 3), (100, 3)])
def test_too_few_iterations_give_the_most_stages_that_halving_fills(iterations: int, levels: int) -> None:
    chosen, reason = fit_levels(3, iterations=iterations)
    assert chosen == levels
    halving_split(iterations, chosen + 1)  # the chosen stages all get a step
    if levels < 3:
        with pytest.raises(ValueError):
            halving_split(iterations, chosen + 2)  # and one more stage would not
        assert f"a run of {iterations} iterations is too short for the {chosen + 2} stages" in reason


def test_per_stage_iterations_do_not_bound_the_levels() -> None:
    assert fit_levels(2, iterations=[1, 1, 1]) == (2, None)


def test_images_too_small_or_not_divisible_use_fewer_levels() -> None:
    levels, reason = fit_levels(3, spatial_shape=(12, 12))
    assert levels == 2 and "spatial size 12 (axis H) is not divisible by 2**3 = 8" in reason
    levels, reason = fit_levels(4, spatial_shape=(32, 32), multiple=8)
    assert levels == 2 and "the network needs sides divisible by 8" in reason


def test_a_probe_that_fails_deep_levels_bounds_them_and_its_error_is_the_reason() -> None:
    def probe(level: int) -> None:
        if level > 1:
            raise ValueError(f"the network fails at level {level}")

    assert fit_levels(3, probe=probe) == (1, "the network fails at level 2")


def test_nothing_works_raises_the_error_at_level_zero() -> None:
    def probe(level: int) -> None:
        raise ValueError(f"wrong channels (level {level})")

    with pytest.raises(ValueError, match=r"wrong channels \(level 0\)"):
        fit_levels(2, probe=probe)
    with pytest.raises(ValueError, match=r"spatial size 12 \(axis H\) gives side 12 at level 0"):
        fit_levels(2, spatial_shape=(12, 12), multiple=8)


def test_the_warning_names_both_levels_and_the_reason_once() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_fitted_levels(3, 3, None)
        warn_fitted_levels(3, 1, "a run of 4 iterations is too short")
    assert [str(w.message)[:86] for w in caught] == [
        "using levels=1 instead of the requested levels=3: a run of 4 iterations is too short. "
    ]


def test_refit_options_cut_per_level_lists_and_keep_the_run_length() -> None:
    options = {"levels": 2, "batch_sizes": [4, 8, 16], "iterations": 10}
    assert refit_options(options, 1) == {"levels": 1, "batch_sizes": [4, 8], "iterations": 10}
    staged = {"levels": 2, "batch_size": [16, 8, 4], "iterations": [6, 3, 1]}
    refit = refit_options(staged, 0)
    assert refit == {"levels": 0, "batch_size": [4], "iterations": [10]}
    assert build_strategy("full-multiscale", **refit).total_steps == 10
    assert refit_options(options, 2) == options
