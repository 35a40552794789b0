"""Does MGE pay on this model and data? Per-level variances and costs, the allocation, a verdict.

:func:`run_diagnosis` takes a :class:`~mge_bench.probes.Probe` (a model, its level loss on one
loaded batch), fits the levels to the images and the network, measures the per-sample cost of
each level (FLOPs with :func:`mge_plugins.cost.measure_level_flops`, seconds by timing the probe
batch) and hands the rest to :func:`mge_plugins.allocation.diagnosis`: the per-sample gradient
variances ``V_k`` and the multilevel Monte Carlo allocation ``N_k ∝ sqrt(V_k / C_k)`` at the cost of
one single-scale step, every number of levels from 0 (plain SGD) up being a candidate.
:func:`format_diagnosis` prints it as a table and one verdict line; :func:`diagnosis_json` is the
``--json`` file, valid against :data:`DIAGNOSIS_SCHEMA`.
"""

from __future__ import annotations

import statistics
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from mge_deepinv.progress import Progress

from mge_plugins.allocation import Allocation, Diagnosis, diagnosis
from mge_plugins.checks import check_network, warn_batchnorm
from mge_plugins.cost import measure_level_flops
from mge_plugins.coupling import CoupledRandomness
from mge_plugins.diagnostics import LoadMonitor, LoadReport
from mge_plugins.meshfree import at_level
from mge_plugins.strategies import fit_levels

from .probes import LevelLossError, Probe
from .report import validate_against

__all__ = [
    "COST_BASES",
    "DIAGNOSIS_SCHEMA",
    "DiagnosisResult",
    "diagnosis_json",
    "format_diagnosis",
    "measure_level_seconds",
    "run_diagnosis",
    "validate_diagnosis",
    "verdict",
]

COST_BASES = ("flops", "seconds")
"""What ``C_k`` is measured in for the allocation: FLOPs (exact, machine-independent) or seconds (this machine)."""

SCHEMA_VERSION = "mge-bench-diagnose/1"

WIDTH = 110
"""Line width of the printed legend."""

PROGRESS_AFTER = 3.0
"""Seconds after which a progress bar (or, off a terminal, progress lines) appears."""


@dataclass(frozen=True)
class DiagnosisResult:
    """What :func:`run_diagnosis` measured.

    Attributes:
        probe: what was measured.
        diagnosis: the core's :class:`~mge_plugins.allocation.Diagnosis`, allocated by ``cost_basis``.
        other: the same variances allocated by the other cost basis.
        flops: forward + backward FLOPs per sample at each level.
        seconds: forward + backward seconds per sample at each level (median over the repeats).
        cost_basis: ``"flops"`` or ``"seconds"``: the costs ``diagnosis`` allocated with.
        requested_levels: the levels asked for; ``levels_note`` says why fewer were used.
        levels_note: why the levels were reduced, or ``None``.
        elapsed: seconds the diagnosis took.
        load: the machine's load while the seconds were timed (they hold only on a quiet machine).
    """

    probe: Probe
    diagnosis: Diagnosis
    other: Diagnosis
    flops: tuple[float, ...]
    seconds: tuple[float, ...]
    cost_basis: str
    requested_levels: int
    levels_note: str | None
    elapsed: float
    load: LoadReport

    @property
    def levels(self) -> int:
        """The deepest level measured."""
        return len(self.flops) - 1


class _Passes:
    """Counts the level-loss passes and shows progress once the diagnosis has run a few seconds."""

    def __init__(self, desc: str, total: int, after: float) -> None:
        self.desc, self.total, self.after = desc, total, after
        self.done = 0
        self.phase = "checks"
        self.started = time.perf_counter()
        self.progress: Progress | None = None

    def __call__(self, level_loss: Callable[[slice, int], torch.Tensor]) -> Callable[[slice, int], torch.Tensor]:
        def counted(indices: slice, level: int) -> torch.Tensor:
            loss = level_loss(indices, level)
            self.tick()
            return loss

        return counted

    def tick(self) -> None:
        self.done += 1
        if self.progress is None and time.perf_counter() - self.started >= self.after:
            self.progress = Progress(self.desc, total=max(self.total, self.done))
            self.progress.update(self.done, phase=self.phase)
        elif self.progress is not None:
            self.progress.update(1, phase=self.phase)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def _synchronize(model: torch.nn.Module) -> None:
    if any(p.is_cuda for p in model.parameters()):
        torch.cuda.synchronize()


def measure_level_seconds(
    level_loss: Callable[[slice, int], torch.Tensor],
    model: torch.nn.Module,
    samples: int,
    levels: int,
    *,
    repeats: int = 3,
    generators: Sequence[torch.Generator] = (),
) -> tuple[float, ...]:
    """Forward + backward seconds per sample of ``level_loss`` at levels ``0..levels``, on ``samples`` samples.

    Each level runs once untimed (warm-up), then ``repeats`` timed passes of the first ``samples``
    loaded samples; the median is divided by ``samples``. Gradients are taken with
    :func:`torch.autograd.grad` (``.grad`` untouched) and the random streams are left as they were.

    Args:
        level_loss: ``level_loss(indices, level)``.
        model: the network.
        samples: samples per timed pass.
        levels: deepest level.
        repeats: timed passes per level.
        generators: the host's own generators.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    rng = CoupledRandomness(list(generators))
    rng.capture()
    per_level = []
    try:
        for level in range(levels + 1):
            times = []
            for repeat in range(repeats + 1):
                _synchronize(model)
                start = time.perf_counter()
                with at_level(level):
                    loss = level_loss(slice(0, samples), level)
                torch.autograd.grad(loss, params, allow_unused=True)
                _synchronize(model)
                if repeat:
                    times.append(time.perf_counter() - start)
            per_level.append(statistics.median(times) / samples)
    finally:
        rng.replay()
    return tuple(per_level)


def _fit(probe: Probe, requested: int, level_loss: Callable[[slice, int], torch.Tensor]) -> tuple[int, str | None]:
    """The deepest level, at most ``requested``, that the images, the host and the network allow."""

    def dry_run(levels: int) -> None:
        if probe.check is not None:
            probe.check(levels)

        def run() -> torch.Tensor:
            with at_level(levels):
                return level_loss(slice(0, 1), levels)

        shape = probe.input_shape if probe.input_shape is not None else (1, 1, 1, 1)
        try:
            check_network(run, probe.model, level=levels, input_shape=shape, generators=probe.generators)
        except ValueError as error:
            if isinstance(error.__cause__, LevelLossError):  # the loss's contract, not the network, is broken
                raise error.__cause__ from None
            if probe.input_shape is None:  # no image tensor to explain a failure with: say which level broke
                raise ValueError(f"level_loss(batch, {levels}) failed: {error.__cause__ or error}") from error
            raise

    spatial = probe.input_shape[2:] if probe.input_shape is not None else None
    return fit_levels(requested, spatial_shape=spatial, probe=dry_run)


def run_diagnosis(
    probe: Probe,
    *,
    levels: int | None = None,
    samples: int = 8,
    cost: str = "flops",
    repeats: int = 3,
    resamples: int = 200,
    seed: int = 0,
    progress_after: float = PROGRESS_AFTER,
) -> DiagnosisResult:
    """Fit the levels, measure ``C_k`` (FLOPs and seconds) and ``V_k``, and allocate by ``cost``.

    Runs about ``(samples + repeats + 3) x (levels + 1)`` passes of one to ``samples`` samples.

    Args:
        probe: the model, level loss and loaded batch.
        levels: deepest level to consider (default: the probe's); fewer when the images or the
            network cannot go that deep (said in :attr:`DiagnosisResult.levels_note`).
        samples: probe samples for the variances and the timing (at most the loaded batch, at least 2).
        cost: ``"flops"`` or ``"seconds"``: what ``C_k`` is for the allocation.
        repeats: timed passes per level.
        resamples: bootstrap resamples of the probe samples, for the spread of the verdict's ratio.
        seed: seed of the resampling.
        progress_after: seconds after which progress is shown (on stderr).

    Raises:
        ValueError: for a bad option, a batch of one sample, or a network or host that cannot run
            even at level 0, naming the fix.
    """
    if cost not in COST_BASES:
        raise ValueError(f"cost must be one of {', '.join(COST_BASES)}, got {cost!r}")
    if probe.loaded < 2:
        raise ValueError(
            f"the loaded batch has {probe.loaded} sample; a variance needs at least 2: load a larger batch"
        )
    if samples < 2:
        raise ValueError(f"samples must be at least 2 to measure a variance, got {samples}")
    requested = probe.levels if levels is None else levels
    samples = min(samples, probe.loaded)
    started = time.perf_counter()
    warn_batchnorm(probe.model, "a network without BatchNorm (instance or group normalisation)")
    total = (requested + 1) * (samples + repeats + 2) + requested
    passes = _Passes("mge-bench diagnose", total, progress_after)
    level_loss = passes(probe.level_loss)
    try:
        fitted, reason = _fit(probe, requested, level_loss)
        passes.total += (fitted - requested) * (samples + repeats + 2)
        passes.phase = "FLOPs"
        rng = CoupledRandomness(list(probe.generators))
        rng.capture()  # the FLOP probe leaves the random streams as they were, as the other measurements do
        flops = measure_level_flops(level_loss, slice(0, 1), fitted, probe.model.parameters())
        rng.replay()
        passes.phase = "timing"
        with LoadMonitor(interval=1.0) as monitor:
            seconds = measure_level_seconds(
                level_loss, probe.model, samples, fitted, repeats=repeats, generators=probe.generators
            )
        passes.phase = "variances"
        costs = {"flops": flops, "seconds": seconds}
        chosen = diagnosis(
            level_loss,
            probe.model,
            loaded=probe.loaded,
            levels=fitted,
            samples=samples,
            costs=costs[cost],
            generators=probe.generators,
            resamples=resamples,
            seed=seed,
        )
    finally:
        passes.close()
    other = chosen.with_costs(costs["seconds" if cost == "flops" else "flops"])
    return DiagnosisResult(
        probe,
        chosen,
        other,
        tuple(flops),
        tuple(seconds),
        cost,
        requested,
        reason,
        time.perf_counter() - started,
        monitor.report(),
    )


def _si(value: float, unit: str) -> str:
    """``12.3 MFLOP``, ``1.52 ms``: three significant digits with an SI prefix."""
    if value == 0 or not value == value:
        return f"0 {unit}"
    prefixes = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")]
    scale, prefix = next(((s, p) for s, p in prefixes if abs(value) >= s), prefixes[-1])
    return f"{value / scale:.3g} {prefix}{unit}"


def _describe(allocation: Allocation) -> str:
    if allocation.levels == 0:
        return f"plain SGD, batch {allocation.batch_sizes[0]}"
    levels = allocation.levels
    return f"{levels} level{'s' if levels != 1 else ''} and per-term batches {list(allocation.batch_sizes)}"


def _spread(result: DiagnosisResult) -> str:
    """`` (0.35-0.50x in 80 % of resamples of the 8 probe samples)``, and whether that settles the verdict."""
    chosen = result.diagnosis
    interval = chosen.ratio_interval()
    if interval is None:
        return ""
    low, high = interval
    text = f" ({low:.2f}-{high:.2f}x in 80 % of resamples of the {chosen.measured.samples} probe samples"
    if not low < 1 < high:
        return text + ")"
    if chosen.measured.samples < chosen.loaded:
        more = f"--samples {chosen.loaded}"
    elif result.probe.kind == "task":
        more = f"--batch-size {2 * chosen.loaded} --samples {2 * chosen.loaded}"
    else:
        more = "a larger loaded batch"
    share = 100 * (chosen.pays_share or 0.0)
    return text + f", MGE ahead in {share:.0f} % of them: not settled; rerun with {more})"


def verdict(result: DiagnosisResult) -> str:
    """One line: does MGE pay here, by how much (and how surely), and what to train with."""
    chosen = result.diagnosis
    equal = "at equal FLOPs" if result.cost_basis == "flops" else "at equal wall-clock"
    if chosen.pays:
        best = chosen.best
        return (
            f"MGE pays: variance x cost {best.variance_ratio:.2f}x single-scale's {equal}{_spread(result)}, with "
            f"{_describe(best)}; train with strategy='mge', allocation='adaptive' (it re-measures this as the "
            "network learns)"
        )
    alternative = (
        "train single-scale (strategy='single'), or coarse-to-fine without MGE terms "
        "(strategy='progressive-resizing', or strategy='full-multiscale' with mge_levels=0)"
    )
    multiscale = chosen.best_multiscale
    if multiscale is None:
        why = result.levels_note or "levels=0 asks for plain SGD only; pass --levels 1 or more"
        return f"MGE cannot run here: no coarser level ({why}); {alternative}"
    return (
        f"MGE does not pay here ({multiscale.variance_ratio:.2f}x): its best allocation {equal}, "
        f"{_describe(multiscale)}, has {multiscale.variance_ratio:.2f}x single-scale's variance x cost"
        f"{_spread(result)}; {alternative}"
    )


def format_diagnosis(result: DiagnosisResult) -> str:
    """The table (level, ``V_k``, ``C_k`` in FLOPs and seconds, ``N_k``), the allocation rule and the verdict."""
    chosen = result.diagnosis
    measured = chosen.measured
    best = chosen.best
    lines = [
        f"probe: {result.probe.description}",
        f"loaded batch {chosen.loaded}, {measured.samples} probe samples ({len(measured.resampled)} bootstrap "
        f"resamples), levels 0..{result.levels}"
        + (f" (not {result.requested_levels}: {result.levels_note})" if result.levels_note else "")
        + f", {result.elapsed:.1f} s",
        "",
    ]
    header = f"{'level':>5}  {'V(grad l_k)':>12}  {'V(grad l_k - grad l_k+1)':>24}  {'|diff| / |grad|':>15}  "
    header += f"{'C_k FLOPs':>11}  "
    header += f"{'C_k seconds':>11}  {'N_k':>5}"
    lines += [header, "-" * len(header)]
    for k in range(result.levels + 1):
        difference = f"{measured.difference[k]:24.3e}" if k < result.levels else f"{'':>24}"
        relative = f"{measured.relative_difference[k]:15.3f}" if k < result.levels else f"{'':>15}"
        size = str(best.batch_sizes[k]) if k < len(best.batch_sizes) else "-"
        lines.append(
            f"{k:>5}  {measured.plain[k]:12.3e}  {difference}  {relative}  {_si(result.flops[k], 'FLOP'):>11}  "
            f"{_si(result.seconds[k], 's'):>11}  {size:>5}"
        )
    basis = "FLOPs" if result.cost_basis == "flops" else "seconds"
    legend = (
        "V: per-sample gradient variance (trace of the covariance). |diff| / |grad|: mean norm of a sample's "
        "gradient difference to level k+1 over the mean norm of its gradient at level k. C_k: forward + backward "
        f"cost of one sample at level k. N_k: per-term batches by N_k ∝ sqrt(V_k / C_k) with C in {basis} "
        "(term k < K: the difference, "
        "cost C_k + C_k+1; term K: level K itself), spending one single-scale step of "
        f"{chosen.loaded} samples; K = 0 (plain SGD) to {result.levels} compared."
    )
    if best.capped:
        legend += (
            f" The optimum wants more samples in some term than the loaded batch holds: capped at {chosen.loaded}."
        )
    other, other_multiscale = result.other.best, result.other.best_multiscale
    other_basis = "seconds" if result.cost_basis == "flops" else "FLOPs"
    legend += (
        f" With C in measured {other_basis} instead: {_describe(other)}, variance x cost {other.variance_ratio:.2f}x"
    )
    if other.levels == 0 and other_multiscale is not None:
        legend += f" ({other_multiscale.variance_ratio:.2f}x at best with coarser levels)"
    if not result.load.quiet:
        legend += (
            f". The machine was loaded while the seconds were timed (load average up to {result.load.peak:.1f} on "
            f"{result.load.cores} cores): they do not measure this network, the FLOPs do"
        )
    lines += ["", *textwrap.wrap(legend + ".", width=WIDTH)]
    lines += ["", verdict(result)]
    return "\n".join(lines)


_NUMBER = (int, float)
_ALLOCATION = {
    "batch_sizes": [int],
    "levels": int,
    "variance": _NUMBER,
    "cost": _NUMBER,
    "single_variance": _NUMBER,
    "variance_ratio": _NUMBER,
    "capped": bool,
}
DIAGNOSIS_SCHEMA: dict[str, Any] = {
    "schema": str,
    "command": str,
    "source": {"kind": str, "description": str},
    "loaded": int,
    "samples": int,
    "requested_levels": int,
    "levels": int,
    "levels_note": (str, type(None)),
    "cost_basis": str,
    "per_level": [
        {
            "level": int,
            "variance": _NUMBER,
            "difference_variance": (int, float, type(None)),
            "relative_difference": (int, float, type(None)),
            "flops": _NUMBER,
            "seconds": _NUMBER,
            "batch_size": (int, type(None)),
        }
    ],
    "allocation": _ALLOCATION,
    "candidates": [_ALLOCATION],
    "other_basis": {"cost_basis": str, "allocation": _ALLOCATION, "candidates": [_ALLOCATION]},
    "pays": bool,
    "resamples": int,
    "ratio_interval": (list, type(None)),
    "pays_share": (int, float, type(None)),
    "verdict": str,
    "seconds": _NUMBER,
    "machine": {
        "device": str,
        "torch": str,
        "load": {"cores": int, "peak_load": _NUMBER, "samples": int, "quiet": bool},
    },
}
"""The ``--json`` file's layout (the notation of :data:`mge_bench.report.REPORT_SCHEMA`)."""


def diagnosis_json(result: DiagnosisResult, command: str) -> dict[str, Any]:
    """The ``--json`` file: every measured number, the allocations by both cost bases and the verdict."""
    chosen = result.diagnosis
    measured = chosen.measured
    best = chosen.best
    device = next((str(p.device) for p in result.probe.model.parameters()), "cpu")
    data = {
        "schema": SCHEMA_VERSION,
        "command": command,
        "source": {"kind": result.probe.kind, "description": result.probe.description},
        "loaded": chosen.loaded,
        "samples": measured.samples,
        "requested_levels": result.requested_levels,
        "levels": result.levels,
        "levels_note": result.levels_note,
        "cost_basis": result.cost_basis,
        "per_level": [
            {
                "level": k,
                "variance": measured.plain[k],
                "difference_variance": measured.difference[k] if k < result.levels else None,
                "relative_difference": measured.relative_difference[k] if k < result.levels else None,
                "flops": result.flops[k],
                "seconds": result.seconds[k],
                "batch_size": best.batch_sizes[k] if k < len(best.batch_sizes) else None,
            }
            for k in range(result.levels + 1)
        ],
        "allocation": best.to_dict(),
        "candidates": [a.to_dict() for a in chosen.candidates],
        "other_basis": {
            "cost_basis": "seconds" if result.cost_basis == "flops" else "flops",
            "allocation": result.other.best.to_dict(),
            "candidates": [a.to_dict() for a in result.other.candidates],
        },
        "pays": chosen.pays,
        "resamples": len(measured.resampled),
        "ratio_interval": list(chosen.ratio_interval()) if chosen.ratio_interval() is not None else None,
        "pays_share": chosen.pays_share,
        "verdict": verdict(result),
        "seconds": result.elapsed,
        "machine": {"device": device, "torch": torch.__version__, "load": result.load.to_dict()},
    }
    validate_diagnosis(data)
    return data


def validate_diagnosis(data: Any) -> None:
    """Check a ``--json`` file against :data:`DIAGNOSIS_SCHEMA`.

    Raises:
        ValueError: naming the first missing key or wrong type.
    """
    validate_against(data, DIAGNOSIS_SCHEMA, "diagnosis")
    if data["schema"] != SCHEMA_VERSION:
        raise ValueError(f"diagnosis.schema: expected {SCHEMA_VERSION!r}, got {data['schema']!r}")
    if len(data["per_level"]) != data["levels"] + 1 or len(data["candidates"]) != data["levels"] + 1:
        raise ValueError("diagnosis: per_level and candidates must have levels + 1 entries")
