"""deepinv's two stock demos with only the trainer class swapped: PSNR and FLOPs against the stock trainer.

Runs ``examples/deepinv_demo_training.py`` and ``examples/deepinv_demo_r2r.py`` with
``--trainer stock`` and with ``MultiscaleTrainer`` under each ``--budget`` (``steps``: the user's
epochs; a fraction: that share of the stock trainer's FLOPs; ``compute``: the same FLOPs), over
``--seeds`` (crops, weights and shuffling), one thread each. PSNR and FLOPs do not depend on the
machine's load, so no timing is taken. Appends one JSON line per run to ``--out``.

    python scripts/stock_swap.py --seeds 0,1,2 --out docs/stock_swap.jsonl
    python scripts/stock_swap.py --render docs/stock_swap.jsonl --into BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_blocks import replace_block

ROOT = Path(__file__).resolve().parents[1]
DEMOS = {"demo_training": "deepinv_demo_training.py", "demo_r2r": "deepinv_demo_r2r.py"}
BUDGETS = ("steps", "0.33", "0.5", "compute")
RESTRICTIONS = ("area", "nearest")


def run(demo: str, trainer: str, budget: str, seed: int) -> dict[str, Any]:
    """One demo run in a subprocess of one thread; its JSON summary."""
    with tempfile.TemporaryDirectory() as folder:
        summary = Path(folder) / "summary.json"
        cmd = [sys.executable, str(ROOT / "examples" / DEMOS[demo]), "--trainer", trainer, "--seed", str(seed)]
        cmd += ["--json", str(summary)] + (["--budget", budget] if trainer == "multiscale" else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=folder)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
        return json.loads(summary.read_text())


def markdown(rows: list[dict[str, Any]]) -> str:
    """Per demo, budget and restriction: median PSNR over the seeds, its change against the stock trainer, FLOP saving.

    A run measured again (the same demo, budget, restriction and seed) keeps its last row.
    """
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        key = "stock" if row["trainer"] == "stock" else f"budget={row['budget']}, {row.get('restriction', 'area')}"
        latest[row["demo"], key, row["seed"]] = row
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (demo, key, _), row in latest.items():
        by[demo, key].append(row)
    lines = [
        "| demo | trainer | seeds | PSNR (dB, median) | Δ vs stock (dB, per seed) | FLOP saving |",
        "|---|---|---:|---:|---|---:|",
    ]
    for demo in DEMOS:
        stock = {r["seed"]: r for r in by.get((demo, "stock"), [])}
        for key in ("stock", *(f"budget={b}, {r}" for b in BUDGETS for r in RESTRICTIONS)):
            runs = sorted(by.get((demo, key), []), key=lambda r: r["seed"])
            if not runs:
                continue
            psnr = statistics.median(r["psnr"] for r in runs)
            deltas = [r["psnr"] - stock[r["seed"]]["psnr"] for r in runs if r["seed"] in stock]
            saving = [stock[r["seed"]]["flops"] / r["flops"] for r in runs if r["seed"] in stock]
            delta = "—" if key == "stock" else ", ".join(f"{d:+.2f}" for d in deltas)
            ratio = "1.00×" if key == "stock" else f"{statistics.median(saving):.2f}×"
            name = "`dinv.Trainer`" if key == "stock" else f"`MultiscaleTrainer`, {key} restriction"
            lines.append(f"| {demo} | {name} | {len(runs)} | {psnr:.2f} | {delta} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure the runs, or render a saved file's table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--demos", default=",".join(DEMOS), help="comma-separated demos (default: %(default)s)")
    parser.add_argument("--budgets", default=",".join(BUDGETS), help="MultiscaleTrainer budgets (default: %(default)s)")
    parser.add_argument("--no-stock", action="store_true", help="only the swapped runs (the stock ones are saved)")
    parser.add_argument("--out", type=Path, default=Path("results/stock_swap.jsonl"), help="(default: %(default)s)")
    parser.add_argument("--render", type=Path, help="a saved JSON-lines file to render instead of measuring")
    parser.add_argument("--into", type=Path, help="with --render: the document whose stock-swap block to rewrite")
    args = parser.parse_args()
    if args.render:
        rows = [json.loads(line) for line in args.render.read_text().splitlines() if line.strip()]
        text = markdown(rows)
        if args.into:
            replace_block(args.into, "stock-swap", None, text)
        print(text, end="")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for demo in args.demos.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            stock = [] if args.no_stock else [("stock", "steps")]
            for trainer, budget in stock + [("multiscale", b) for b in args.budgets.split(",")]:
                row = run(demo, trainer, budget, seed)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                label = "stock" if trainer == "stock" else f"budget={budget}"
                print(f"{demo:>14} seed {seed} {label:>15}: {row['psnr']:6.2f} dB, {row['flops'] / 1e9:8.1f} GFLOPs")


if __name__ == "__main__":
    main()
