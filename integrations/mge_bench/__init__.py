"""``mge-bench``: single-scale, MGE, Full-Multiscale and two baselines on a common FLOP budget.

The command trains the same network on the same crops with every strategy, one after another in one
process, and writes a report (:mod:`mge_bench.report`) with quality at equal budget, the cost of
reaching single-scale's quality, MGE's gradient diagnostics, peak memory and the plugin's overhead.
It builds on the DeepInverse adapter (``mge_deepinv``) for the 2D tasks and on MONAI for the 3D
phantoms: ``pip install 'mge-plugins[bench]'``.

``mge-bench diagnose`` (:mod:`mge_bench.diagnose_cli`) answers in about a minute whether MGE pays on
one batch of a bundled task or of the user's own trainer: :func:`probe_of` turns a trainer or a
``(model, level_loss, batch)`` triple into a :class:`Probe`, :func:`run_diagnosis` measures it.
"""

from __future__ import annotations

from .cli import main, run_benchmark
from .diagnose import DiagnosisResult, run_diagnosis
from .probes import Probe, probe_of
from .problems import Problem, make_problem
from .report import REPORT_SCHEMA, SCHEMA_VERSION, markdown_report, validate_report
from .runs import RunResult, train_run
from .settings import FRONTIER_STRATEGIES, PRESETS, STRATEGIES, BenchSettings
from .suite import plan_runs, run_task

__all__ = [
    "FRONTIER_STRATEGIES",
    "PRESETS",
    "REPORT_SCHEMA",
    "SCHEMA_VERSION",
    "STRATEGIES",
    "BenchSettings",
    "DiagnosisResult",
    "Probe",
    "Problem",
    "RunResult",
    "main",
    "make_problem",
    "markdown_report",
    "plan_runs",
    "probe_of",
    "run_benchmark",
    "run_diagnosis",
    "run_task",
    "train_run",
    "validate_report",
]
