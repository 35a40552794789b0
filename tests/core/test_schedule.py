from __future__ import annotations

import itertools

import pytest
import torch

from mge_plugins import FullMultiscaleSchedule
from mge_plugins.schedule import halving_split


def test_paper_default_stages() -> None:
    schedule = FullMultiscaleSchedule(levels=3, batch_size=4)
    assert [s.iterations for s in schedule.stages] == [2000, 1000, 500, 250]
    assert [s.level for s in schedule.stages] == [3, 2, 1, 0]
    assert [s.levels_below for s in schedule.stages] == [0, 1, 2, 3]
    assert schedule.stages[3].batch_sizes == (4, 16, 64, 256)
    assert schedule.total_steps == 3750


@pytest.mark.parametrize(
    "step, stage", [(0, 0), (1999, 0), (2000, 1), (2999, 1), (3000, 2), (3499, 2), (3500, 3), (3749, 3), (10**6, 3)]
)
def test_stage_boundaries(step: int, stage: int) -> None:
    assert FullMultiscaleSchedule(levels=3).stage_at(step).index == stage


def test_resume_lands_in_the_same_stage() -> None:
    kwargs = dict(levels=2, iterations=[30, 20, 10], batch_size=[8, 4, 2], mge_levels=1)
    first, resumed = FullMultiscaleSchedule(**kwargs), FullMultiscaleSchedule(**kwargs)
    for step in range(70):
        assert first.stage_at(step) == resumed.stage_at(step)
    assert resumed.stage_at(45).to_dict() == {
        "stage": 1,
        "level": 1,
        "start": 30,
        "stop": 50,
        "levels_below": 1,
        "batch_sizes": [4, 16],
        "restriction": "area",
    }


def test_mge_levels_caps_levels_inside_stages() -> None:
    plain = FullMultiscaleSchedule(levels=3, iterations=15, mge_levels=0)
    assert all(s.levels_below == 0 for s in plain.stages)
    capped = FullMultiscaleSchedule(levels=3, iterations=15, mge_levels=1, spatial_dims=3, batch_size=1)
    assert [s.batch_sizes for s in capped.stages] == [(1,), (1, 8), (1, 8), (1, 8)]
    per_stage = FullMultiscaleSchedule(levels=2, iterations=7, mge_levels=[None, 0, 1], batch_size=2)
    assert [s.batch_sizes for s in per_stage.stages] == [(2,), (2,), (2, 8)]


def test_learning_rate_schedule_spans_the_run_and_resumes() -> None:
    schedule = FullMultiscaleSchedule(levels=2, iterations=70)
    param = torch.nn.Parameter(torch.zeros(1))

    def make():
        opt = torch.optim.SGD([param], lr=1.0)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=schedule.total_steps)

    opt, sched = make()
    lrs = []
    for _ in range(schedule.total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    jumps = [abs(a - b) for a, b in itertools.pairwise(lrs)]
    # No restart at stage boundaries: the largest step-to-step change is that of a cosine over the
    # whole run (pi / total_steps / 2), nowhere near a reset to the base LR.
    assert max(jumps) <= torch.pi / schedule.total_steps / 2 + 1e-12
    boundaries = [s.start for s in schedule.stages[1:]]
    assert all(lrs[b] < lrs[b - 1] for b in boundaries)
    # Resume from a checkpoint at step 65 (stage 2) continues the same learning rates.
    opt2, sched2 = make()
    for _ in range(65):
        opt2.step()
        sched2.step()
    state = sched2.state_dict()
    opt3, sched3 = make()
    sched3.load_state_dict(state)
    opt3.param_groups[0]["lr"] = sched3.get_last_lr()[0]
    assert schedule.stage_at(65).index == 2
    assert opt3.param_groups[0]["lr"] == pytest.approx(lrs[65], rel=1e-12)


def test_halving_split_sums_exactly() -> None:
    for total in range(7, 200):
        parts = halving_split(total, 3)
        assert sum(parts) == total and parts[0] >= parts[1] >= parts[2] >= 1
    assert halving_split(3750, 4) == (2000, 1000, 500, 250)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(levels=3, iterations=4), r"total_steps=4 is too few.*use at least 8 steps"),
        (dict(levels=2, iterations=[10, 5]), r"lists 2 stages but levels=2 gives 3"),
        (dict(levels=1, iterations=[10, 0]), "at least one iteration"),
        (dict(levels=1, batch_size=[4, 4, 4]), r"batch_size lists 3 stages"),
        (dict(levels=-1), "levels must be an integer >= 0"),
        (dict(levels=1, mge_levels=-2), "mge_levels must be >= 0"),
        (dict(levels=1, mge_levels=[0, -1]), "mge_levels must be >= 0"),
        (dict(levels=2, mge_levels=[0, 1]), r"mge_levels lists 2 stages but levels=2 gives 3"),
        (dict(levels=1, growth=0.5), "growth must be >= 1"),
    ],
)
def test_bad_schedules(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FullMultiscaleSchedule(**kwargs)


def test_negative_step() -> None:
    with pytest.raises(ValueError, match="step must be >= 0"):
        FullMultiscaleSchedule(levels=1, iterations=3).stage_at(-1)
