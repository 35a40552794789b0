"""Progress of long runs: a tqdm bar on a terminal, periodic plain lines in a log file.

``mge-train`` and ``mge-bench`` report every training step here. On a terminal the bar shows the
steps done, what runs (stage, level, saving so far) and the seconds left; when the stream is not
a terminal (output redirected to a file, a CI log), the bar would leave carriage-return fragments,
so one plain line is printed every ``interval`` seconds and whenever the stage changes instead.

The seconds left are estimated from the work done, not from the steps done: a Full-Multiscale
run's coarse steps are much cheaper than its fine ones, so a step count would promise too early an end.
The first step is left out of the rate (it also pays for one-off setup: FLOP counts, checks).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from tqdm import tqdm

from mge_plugins import Strategy

__all__ = ["Progress", "format_seconds", "step_fields"]


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``.

    :param float seconds: a duration.
    :return: the duration, rounded to the second (to the minute past an hour).
    """
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def step_fields(scalars: Mapping[str, Any], strategy: Strategy | None = None) -> dict[str, Any]:
    """What runs in a training step, for :meth:`Progress.update`, from the step's logged scalars.

    :param dict scalars: the step's scalars (``MultiscaleTrainer.last_step_scalars``, see :mod:`mge_plugins.scalars`).
    :param mge_plugins.Strategy strategy: the run's strategy, for the number of stages.
    :return: ``stage`` (``"2/3"``, counted from 1; ``None`` without stages), ``level`` and ``saving`` (so far).
    """
    stages = getattr(getattr(strategy, "schedule", None), "stages", None)
    stage = scalars.get("mge_stage", -1)
    return {
        "stage": f"{int(stage) + 1}/{len(stages)}" if stages and stage is not None and stage >= 0 else None,
        "level": scalars.get("mge_level"),
        "saving": scalars.get("mge_saving"),
    }


class Progress:
    """Steps done, seconds left and what runs, as a bar on a terminal or as plain lines otherwise.

    :param str desc: what runs, at the start of the bar and of every line (e.g. ``"denoise full-multiscale"``).
    :param int total: steps planned (can be set later with :meth:`start`).
    :param float total_work: work planned, in the unit of :meth:`update`'s ``work``; ``None`` estimates
        the time left from the steps.
    :param stream: where to write; default ``sys.stderr``.
    :param bool, None tty: draw a bar (``True``) or print lines (``False``); ``None`` asks ``stream.isatty()``.
    :param float interval: seconds between two plain lines (a line is also printed when the first field of
        :meth:`update` changes, such as the stage or the run, and at the end).
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        total_work: float | None = None,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float = 10.0,
    ) -> None:
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self.interval = interval
        self.total, self.total_work = total, total_work
        self.done, self.work = 0, 0.0
        self.fields: dict[str, Any] = {}
        self._raw: dict[str, Any] = {}
        self._started = time.perf_counter()
        self._last_line = -float("inf")
        self._first: tuple[float, int, float] | None = None
        self._bar: tqdm | None = None
        if total is not None:
            self.start(total, total_work)

    def start(self, total: int, total_work: float | None = None) -> None:
        """(Re)start counting ``total`` steps (and ``total_work`` work) from now.

        :param int total: steps planned.
        :param float total_work: work planned, or ``None``.
        """
        self.total, self.total_work = total, total_work
        self.done, self.work = 0, 0.0
        self._started = time.perf_counter()
        self._first: tuple[float, int, float] | None = None  # (time, steps, work) after the first update
        if self.tty:
            if self._bar is None:
                self._bar = tqdm(
                    total=total, desc=self.desc, file=self.stream, dynamic_ncols=True, unit="step", mininterval=0.5,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps{postfix}",
                )  # fmt: skip
            else:
                self._bar.reset(total=total)

    @property
    def elapsed(self) -> float:
        """Seconds since :meth:`start`."""
        return time.perf_counter() - self._started

    def seconds_left(self) -> float | None:
        """Estimated seconds until the planned work is done (``None`` until two updates have been counted).

        The rate is measured from the end of the first update on, so that step's one-off setup does not count.
        """
        if self._first is None or not (self.total_work or self.total):
            return None
        since, steps, work = self._first
        if self.total_work:
            done, remaining = self.work - work, self.total_work - self.work
        else:
            done, remaining = float(self.done - steps), float(self.total - self.done)
        if done <= 0:
            return None
        return (time.perf_counter() - since) * max(0.0, remaining) / done

    def update(self, steps: int = 1, work: float | None = None, **fields: Any) -> None:
        """Count ``steps`` steps that did ``work``; ``fields`` (stage, level, saving...) describe what runs.

        :param int steps: steps done since the last call.
        :param float work: their work (same unit as ``total_work``).
        :param fields: shown as ``name value`` after the count, in the given order; ``None`` values are left out.
            Without a terminal, a change of the first field prints a line.
        """
        self.done += steps
        if work is not None:
            self.work += work
        if self._first is None:
            self._first = (time.perf_counter(), self.done, self.work)
        first = next(iter(fields), None)
        phase_changed = first is not None and fields[first] != self._raw.get(first)
        self._raw = dict(fields)
        self.fields = {k: v for k, v in fields.items() if v is not None}
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix().removeprefix(", "), refresh=False)  # tqdm adds the ", "
            self._bar.update(steps)
            return
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if phase_changed or finished or now - self._last_line >= self.interval:
            self._last_line = now
            self._line(self._count() + self._postfix())

    def note(self, text: str) -> None:
        """A line of its own (an evaluation's result, the next phase), above the bar on a terminal.

        :param str text: the line.
        """
        if self._bar is not None:
            self._bar.write(f"{self.desc}: {text}", file=self.stream)
        else:
            self._line(text)

    def close(self) -> None:
        """Close the bar (a terminal keeps it on screen)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self) -> str:
        if self.total:
            return f"step {self.done}/{self.total} ({100 * self.done / self.total:.0f}%)"
        return f"step {self.done}"

    def _postfix(self) -> str:
        parts = [f"{k} {v}" for k, v in _shown(self.fields).items()]
        left = self.seconds_left()
        timing = f"{format_seconds(self.elapsed)} elapsed"
        if self.total is not None and self.done >= self.total:
            timing += ", done"
        elif left is not None:
            timing += f", about {format_seconds(left)} left"
        return ", ".join(["", *parts, timing])

    def _line(self, text: str) -> None:
        sys.stdout.flush()  # keep the order of a log that holds stdout and stderr
        print(f"{self.desc}: {text}", file=self.stream, flush=True)


def _shown(fields: Mapping[str, Any]) -> dict[str, str]:
    shown = {}
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.2f}x" if key == "saving" else f"{value:.3g}"
        shown["saving so far" if key == "saving" else key.replace("_", " ")] = str(value)
    return shown
