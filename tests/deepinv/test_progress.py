"""Progress of ``mge-train`` and ``mge-bench``: a bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io

import pytest
from mge_deepinv import progress as progress_module
from mge_deepinv.progress import Progress, format_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", clock)
    return clock


def test_a_log_gets_plain_lines_at_the_interval_at_each_stage_and_at_the_end(clock: Clock) -> None:
    stream = io.StringIO()
    progress = Progress("denoise fms", total=6, total_work=6.0, stream=stream, interval=30.0)
    assert not progress.tty
    for step, stage in enumerate(["1/2", "1/2", "1/2", "2/2", "2/2", "2/2"], start=1):
        clock.now = 10.0 * step
        progress.update(1, 1.0, stage=stage, level=1 if stage == "1/2" else 0, saving=4.0)
    progress.note("evaluation 1/1 after step 6: PSNR 20.000")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(",")[0] for line in lines] == [
        "denoise fms: step 1/6 (17%)",  # the first step (a new stage)
        "denoise fms: step 4/6 (67%)",  # the stage changed
        "denoise fms: step 6/6 (100%)",  # the end
        "denoise fms: evaluation 1/1 after step 6: PSNR 20.000",
    ]
    assert (
        lines[1]
        == "denoise fms: step 4/6 (67%), stage 2/2, level 0, saving so far 4.00x, 40 s elapsed, about 20 s left"
    )
    assert lines[2].endswith("1 min 00 s elapsed, done")


def test_lines_follow_the_interval_within_a_stage(clock: Clock) -> None:
    stream = io.StringIO()
    progress = Progress("run", total=100, stream=stream, interval=10.0)
    for step in range(1, 101):
        clock.now = float(step)  # one step a second
        progress.update(1, level=0)
    assert len(stream.getvalue().splitlines()) == 1 + 9 + 1  # the first, one every 10 s, the last


def test_the_time_left_comes_from_the_work_and_skips_the_first_steps_setup(clock: Clock) -> None:
    progress = Progress("fms", total=4, total_work=10.0, stream=io.StringIO())
    assert progress.seconds_left() is None
    clock.now = 30.0  # the first step pays for setup
    progress.update(1, 1.0)
    assert progress.seconds_left() is None
    clock.now = 31.0  # one unit of work per second from here on
    progress.update(1, 1.0)
    assert progress.seconds_left() == pytest.approx(8.0)  # 8 units left; steps alone would say 2 s
    by_steps = Progress("single", total=4, stream=io.StringIO())
    clock.now = 32.0
    by_steps.update(1)
    clock.now = 33.0
    by_steps.update(1)
    assert by_steps.seconds_left() == pytest.approx(2.0)


def test_a_terminal_gets_a_bar(clock: Clock) -> None:
    stream = io.StringIO()
    with Progress("denoise fms", total=3, stream=stream, tty=True) as progress:
        progress.update(1, stage="1/3", level=2)
        progress.note("evaluation")
    text = stream.getvalue()
    assert "\r" in text and "denoise fms: evaluation" in text
    assert "1/3 steps, stage 1/3, level 2" in text


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0.4, 42, 185, 3720)] == ["0 s", "42 s", "3 min 05 s", "1 h 02 min"]


def test_step_fields_show_the_stage_of_a_staged_run_counted_from_one(clock: Clock) -> None:
    from mge_deepinv.progress import step_fields

    from mge_plugins import build_strategy

    fms = build_strategy("full-multiscale", levels=2, iterations=8, loaded_batch_size=16)
    fields = step_fields({"mge_stage": 1, "mge_level": 1, "mge_saving": 4.0, "mge_work_units": 3.0}, fms)
    assert fields == {"stage": "2/3", "level": 1, "saving": 4.0}
    mge = build_strategy("mge", levels=1, loaded_batch_size=16)
    assert step_fields({"mge_stage": -1, "mge_level": 0, "mge_saving": 1.5}, mge) == {
        "stage": None,
        "level": 0,
        "saving": 1.5,
    }
    stream = io.StringIO()
    Progress("bench", total=2, stream=stream).update(1, run="1/7 fms", **fields)
    assert stream.getvalue().startswith("bench: step 1/2 (50%), run 1/7 fms, stage 2/3, level 1, saving so far 4.00x")
