"""The bundled ``mge-train`` tasks over seeds and budgets: Full-Multiscale's PSNR against single-scale's.

For every task and seed, ``mge-train TASK --seed S --budget B --out ROOT/TASK_sS/B`` runs once per
budget, one thread each; the first budget of a seed runs the single-scale baseline too, the others
pass ``--no-baseline`` and are compared with it (single-scale does not depend on the budget). A run
whose ``summary.csv`` is already under ``ROOT`` is read, not run again, so an interrupted sweep
goes on where it stopped. PSNR and FLOPs do not depend on the machine's load, so no timing is
taken. Appends one JSON line per strategy and run to ``--jsonl``; ``--render`` writes the table
(median over the seeds and each seed's difference) into a document's ``budget-seeds`` block.

    python scripts/budget_seeds.py --budgets 0.33,steps,0.35 --jsonl docs/figures/budget_seeds.jsonl
    python scripts/budget_seeds.py --render docs/figures/budget_seeds.jsonl --into BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_blocks import replace_block

TASKS = ("denoise", "deblur", "inpaint", "sr")


def summary(folder: Path) -> Path | None:
    """The latest ``summary.csv`` under an ``mge-train --out`` folder, or ``None``."""
    found = sorted(folder.glob("*/*/summary.csv"))
    return found[-1] if found else None


def run(task: str, seed: int, budget: str, baseline: bool, root: Path) -> list[dict[str, Any]]:
    """One ``mge-train`` run (or the one already under ``root``): a row per strategy it trained."""
    folder = root / f"{task}_s{seed}" / budget
    path = summary(folder)
    if path is None:
        cmd = ["mge-train", task, "--seed", str(seed), "--budget", budget, "--out", str(folder)]
        cmd += [] if baseline else ["--no-baseline"]
        log = folder / "log.txt"
        folder.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        path = summary(folder)
        if code != 0 or path is None:
            raise SystemExit(f"{' '.join(cmd)} failed (exit {code}); see {log}")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [
        {
            "task": task,
            "seed": seed,
            "budget": budget,
            "strategy": row["strategy"],
            "psnr": float(row["psnr"]),
            "ssim": float(row["ssim"]),
            "steps": int(row["steps"]),
            "flops": float(row["flops"]),
            "folder": str(path.parent),
        }
        for row in rows
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    """Per task and budget: median PSNR of each strategy, each seed's difference, the FLOP saving.

    A run measured again (the same task, seed, budget and strategy) keeps its last row.
    """
    latest = {(r["task"], r["seed"], r["budget"], r["strategy"]): r for r in rows}
    single = {(t, s): r for (t, s, _, strategy), r in latest.items() if strategy == "single"}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (task, _, budget, strategy), row in sorted(latest.items(), key=lambda kv: kv[0][1]):
        if strategy == "full-multiscale":
            runs[task, budget].append(row)
    budgets = sorted({b for _, b in runs}, key=lambda b: (b == "steps", b))
    lines = [
        "| task | budget | seeds | single-scale (dB, median) | Full-Multiscale (dB, median) "
        "| Δ per seed (dB) | Δ median (dB) | FLOP saving |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for task in TASKS:
        for budget in budgets:
            paired = [(r, single[task, r["seed"]]) for r in runs.get((task, budget), []) if (task, r["seed"]) in single]
            if not paired:
                continue
            deltas = [r["psnr"] - s["psnr"] for r, s in paired]
            saving = statistics.median(s["flops"] / r["flops"] for r, s in paired)
            lines.append(
                f"| {task} | {budget} | {len(paired)} | {statistics.median(s['psnr'] for _, s in paired):.2f} "
                f"| {statistics.median(r['psnr'] for r, _ in paired):.2f} | {', '.join(f'{d:+.2f}' for d in deltas)} "
                f"| {statistics.median(deltas):+.2f} | {saving:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure the runs, or render a saved file's table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--budgets", default="0.33,steps", help="comma-separated budgets (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=Path("results/seeds"), help="run folders (default: %(default)s)")
    parser.add_argument("--jsonl", type=Path, default=Path("results/budget_seeds.jsonl"), help="(default: %(default)s)")
    parser.add_argument("--render", type=Path, help="a saved JSON-lines file to render instead of measuring")
    parser.add_argument("--into", type=Path, help="with --render: the document whose budget-seeds block to rewrite")
    args = parser.parse_args()
    if args.render:
        rows = [json.loads(line) for line in args.render.read_text().splitlines() if line.strip()]
        text = markdown(rows)
        if args.into:
            replace_block(args.into, "budget-seeds", None, text)
        print(text, end="")
        return
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for i, budget in enumerate(args.budgets.split(",")):
                found = run(task, seed, budget, baseline=i == 0, root=args.root)
                with args.jsonl.open("a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in found)
                text = ", ".join(f"{r['strategy']} {r['psnr']:.2f} dB" for r in found)
                print(f"{task:>8} seed {seed} budget {budget:>6}: {text}", flush=True)


if __name__ == "__main__":
    main()
