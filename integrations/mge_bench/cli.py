"""``mge-bench``: what multiscale training saves on a task, at equal budget and to a target quality.

Trains the same network on the same crops with single-scale SGD, MGE, Full-Multiscale, progressive
resizing and single-scale with random-resized crops, one after another in this process, on a common
FLOP budget F (single-scale's run of ``--steps`` steps), and writes ``report.json`` (every figure),
``report.md`` (the tables) and ``TASK.png`` (quality against FLOPs and wall-clock) under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from mge_deepinv.cli import HelpFormatter, device_problem, nonnegative_int, positive_float, positive_int
from mge_deepinv.progress import Progress
from mge_deepinv.tasks import TASKS

from .plots import plot_task
from .problems import TASKS_3D
from .report import SCHEMA_VERSION, baseline_line, markdown_report, validate_report
from .settings import PRESETS, STRATEGIES, BenchSettings
from .suite import run_task

__all__ = ["build_parser", "main", "run_benchmark"]

DESCRIPTION = """\
What multiscale training saves on a task, at equal budget and to a target quality.

Trains the same network on the same crops with single-scale SGD, MGE, Full-Multiscale, progressive
resizing and single-scale with random-resized crops, one after another in this process, on a common
FLOP budget F (single-scale's run of --steps steps), and writes report.json (every figure),
report.md (the tables) and TASK.png (quality against FLOPs and wall-clock) under --out.

mge-bench diagnose (--task TASK | --from module:function) answers "does MGE pay on my model and
data?" in about a minute: per-level gradient variances and costs, the per-term batches it would use
and a verdict (mge-bench diagnose --help).
"""

_OVERRIDES: dict[str, tuple[Any, str]] = {
    "size": (positive_int, "crop side in pixels, divisible by 2**levels x 4"),
    "size3d": (positive_int, "cube side of the 3D task"),
    "batch_size": (positive_int, "loaded batch; MGE terms are cut from it"),
    "steps": (positive_int, "single-scale steps, whose FLOPs are the full budget F"),
    "budgets": (positive_int, "budgets F/2**j, j = budgets-1 ... 0"),
    "evals": (positive_int, "evaluations along a curve run; --steps must be a multiple"),
    "levels": (nonnegative_int, "levels below the full resolution"),
    "repeats": (positive_int, "timing repeats (medians are reported)"),
    "lr": (positive_float, "Adam learning rate, constant"),
    "variance_draws": (positive_int, "batches per gradient-variance estimate"),
    "device": (str, "cpu, cuda or cuda:N"),
    "seed": (int, "seed of data, initial weights and noise"),
}
"""Options that override the preset: their type and help."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    tasks = "\n".join(f"  {n:<10} {t.description}" for n, t in TASKS.items())
    tasks += "\n" + "\n".join(f"  {n:<10} {d}" for n, d in TASKS_3D.items())
    presets = "\n".join(
        f"  {n:<6} {s.size}px crops (3D {s.size3d}), batch {s.batch_size}, {s.steps} single-scale steps, "
        f"{s.levels} levels, {s.budgets} budgets, {s.repeats} repeat(s), {s.device}"
        for n, s in PRESETS.items()
    )
    parser = argparse.ArgumentParser(
        prog="mge-bench",
        description=DESCRIPTION + "\ntasks:\n" + tasks + "\n\npresets:\n" + presets,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("tasks", nargs="*", metavar="TASK", help="tasks to run (default: the preset's)")
    parser.add_argument("--quick", action="store_true", help="the 'quick' preset: about 10 minutes on a 2-core CPU")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="the settings to start from (default: cpu)")
    parser.add_argument(
        "--strategies", metavar="LIST", help=f"comma-separated subset of {','.join(STRATEGIES)} (default: all)"
    )
    for name, (kind, text) in _OVERRIDES.items():
        values = ", ".join(f"{preset} {getattr(s, name)}" for preset, s in PRESETS.items())
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help=f"{text} (default: the preset's: {values})")
    parser.add_argument("--out", type=Path, default=Path("results/bench"), metavar="DIR", help="where the report goes")
    return parser


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The preset named by the arguments, with their overrides.

    Raises:
        ValueError: for an unknown task, a device this machine lacks or settings that cannot be run, naming the fix.
    """
    if args.quick and args.preset not in (None, "quick"):
        raise ValueError(f"--quick and --preset {args.preset} name two presets; give one of them")
    preset = "quick" if args.quick else args.preset or "cpu"
    settings = PRESETS[preset]
    changes: dict[str, Any] = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    if args.tasks:
        known = [*TASKS, *TASKS_3D]
        unknown = [t for t in args.tasks if t not in known]
        if unknown:
            raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        changes["tasks"] = tuple(args.tasks)
    if args.strategies:
        changes["strategies"] = tuple(s.strip() for s in args.strategies.split(","))
    settings = settings.replace(**changes)
    problem = device_problem(settings.device)
    if problem:
        raise ValueError(problem if args.device else f"the {preset} preset runs on {settings.device}: {problem}")
    return settings


def _machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import deepinv

        info["deepinv"] = deepinv.__version__
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_benchmark(settings: BenchSettings, out: Path, command: str) -> dict[str, Any]:
    """Run every task of ``settings``; the report is rewritten under ``out`` after each task.

    Args:
        settings: what to train and measure.
        out: folder of ``report.json``, ``report.md`` and one PNG per task (created if missing).
        command: the command line, recorded in the report.

    Returns:
        The report, valid against :data:`~mge_bench.report.REPORT_SCHEMA`.
    """
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
            "machine": _machine(settings.device),
            "settings": settings.to_dict(),
            "seconds": 0.0,
        },
        "tasks": {},
    }
    for name in settings.tasks:
        with Progress(f"mge-bench {name}") as progress:
            report["tasks"][name] = run_task(name, settings, progress=progress)
        check = report["tasks"][name]["baseline_check"]
        if not check["ok"]:
            print(f"mge-bench {name}: {baseline_line(check).strip('*')}", file=sys.stderr, flush=True)
        report["meta"]["seconds"] = time.perf_counter() - started
        validate_report(report)
        _write_atomic(out / "report.json", json.dumps(report, indent=1))
        _write_atomic(out / "report.md", markdown_report(report))
        plot_task(name, report["tasks"][name], out / f"{name}.png")
    return report


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``mge-bench`` (``mge-bench diagnose ...`` runs :func:`mge_bench.diagnose_cli.main`).

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["diagnose"]:
        from .diagnose_cli import main as diagnose

        diagnose(argv[1:])
        return
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    report = run_benchmark(settings, args.out, " ".join(["mge-bench", *argv]))
    print(markdown_report(report))
    print(f"\nwrote {args.out / 'report.json'}, {args.out / 'report.md'} and one PNG per task under {args.out}/")


if __name__ == "__main__":
    main()
