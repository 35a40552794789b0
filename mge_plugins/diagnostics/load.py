"""Whether a wall-clock measurement was taken on a quiet machine.

A timing taken while other processes load the cores is not a result: on a shared 2-core machine
the same run took 56 s quiet and 452 s loaded. :class:`LoadMonitor` samples the one-minute load
average while a measurement runs and says whether it stayed within the cores.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

__all__ = ["LoadMonitor", "LoadReport"]


@dataclass(frozen=True)
class LoadReport:
    """The machine's load during a measurement.

    Attributes:
        cores: CPU cores available to this process.
        peak: highest one-minute load average sampled.
        samples: number of samples.
    """

    cores: int
    peak: float
    samples: int

    @property
    def quiet(self) -> bool:
        """Whether the load never exceeded the cores (timings are then valid)."""
        return self.peak <= self.cores

    def to_dict(self) -> dict[str, float | int | bool]:
        """Plain data for reports."""
        return {"cores": self.cores, "peak_load": round(self.peak, 2), "samples": self.samples, "quiet": self.quiet}


@dataclass
class LoadMonitor:
    """Samples ``os.getloadavg()`` every ``interval`` seconds in a background thread.

    Use it around a timed run; ``report()`` gives the peak against the cores. The one-minute load
    includes this process itself, so a quiet machine running one single-threaded measurement
    reads about 1.

    Args:
        interval: seconds between samples.
        cores: cores to compare with (default: those this process may run on).

    Example:
        >>> with LoadMonitor(interval=0.01) as monitor:
        ...     pass
        >>> monitor.report().samples >= 1
        True
    """

    interval: float = 5.0
    cores: int = field(
        default_factory=lambda: (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        )
    )
    _peak: float = 0.0
    _samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _sample(self) -> None:
        self._peak = max(self._peak, os.getloadavg()[0])
        self._samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> LoadMonitor:
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def report(self) -> LoadReport:
        """The peak load so far against the cores."""
        return LoadReport(self.cores, self._peak, self._samples)
