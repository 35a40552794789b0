"""Rewrite the ``mge-train`` tables of README.md and BENCHMARKS.md from the runs' ``summary.csv`` files.

The README's main table sits between ``<!-- mge-train:table -->`` and ``<!-- /mge-train:table -->``:
the bundled tasks at ``mge-train``'s defaults. Its figures come from ``docs/figures/mge_train.json``,
which this script writes from the ``summary.csv`` of each task run with ``mge-train TASK --out DIR``
(the latest run of each task); ``tests/test_readme.py`` checks that every such block, in either
document, equals what its JSON gives, so it cannot go stale. ``--name NAME`` keeps another table:
markers ``<!-- mge-train:NAME -->`` in README.md or BENCHMARKS.md, figures in
``docs/figures/mge_train_NAME.json``.

    for t in denoise deblur inpaint sr; do mge-train $t --out results/readme; done
    python scripts/refresh_readme.py results/readme
    for t in denoise deblur inpaint sr; do mge-train $t --budget steps --out results/steps; done
    python scripts/refresh_readme.py results/steps --name steps
    for t in denoise deblur inpaint sr; do mge-train $t --budget 0.35 --out results/budget; done
    python scripts/refresh_readme.py results/budget --name budget

``--update`` replaces only the tasks found under the folder and keeps the others' figures
(the folder of each updated task is recorded under ``"updated"``). ``--operator-table FILE``
writes the comparison of the two coarse operators into FILE's ``operator`` block, from the
``steps`` and ``budget`` tables' figures and those kept from the restricted-operator runs
(``docs/figures/mge_train_*_restricted_operator.json``).

    python scripts/refresh_readme.py --operator-table BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_blocks import markers, replace_block

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "figures" / "mge_train.json"
DOCUMENTS = (ROOT / "README.md", ROOT / "BENCHMARKS.md")
TASKS = {
    "denoise": "denoise (σ = 0.1)",
    "deblur": "deblur (Gaussian σ = 1.5 px)",
    "inpaint": "inpaint (30 % of 8×8 blocks)",
    "sr": "2× super-resolution",
}


def json_path(name: str) -> Path:
    """Where the figures of table ``name`` are kept."""
    return JSON if name == "table" else JSON.with_name(f"mge_train_{name}.json")


def _summary(folder: Path, task: str) -> Path | None:
    """``folder/task/summary.csv``, or that of the task's latest run folder."""
    direct = folder / task / "summary.csv"
    if direct.exists():
        return direct
    runs = sorted((folder / task).glob("*/summary.csv"))
    return runs[-1] if runs else None


def collect(folder: Path) -> dict[str, Any]:
    """The figures of every task's ``summary.csv`` under ``folder``, with the machine's load."""
    tasks = {}
    for task in TASKS:
        path = _summary(folder, task)
        if path is not None:
            with path.open() as f:
                tasks[task] = [{k: v for k, v in row.items()} for row in csv.DictReader(f)]
    return {"folder": str(folder), "load_after": os.getloadavg()[0], "cores": os.cpu_count(), "tasks": tasks}


def table(data: dict[str, Any]) -> str:
    """The Markdown table (PSNR, SSIM, GFLOPs, work units, FLOP saving; seconds are load-dependent)."""
    lines = [
        "| task | strategy | PSNR (dB) | SSIM | GFLOPs | work units | FLOP saving |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for task, label in TASKS.items():
        for i, row in enumerate(data["tasks"].get(task, [])):
            psnr, ssim, flops = float(row["psnr"]), float(row["ssim"]), float(row["flops"]) / 1e9
            work, saving = float(row["work_units"]), float(row["flop_saving"])
            name = label if i == 0 else ""
            lines.append(
                f"| {name} | {row['strategy']} | {psnr:.2f} | {ssim:.3f} | {flops:.0f} | {work:.0f} | {saving:.2f}× |"
            )
    return "\n".join(lines) + "\n"


OPERATOR_TASKS = ("deblur", "inpaint", "sr")


def _rows(data: dict[str, Any], task: str) -> dict[str, dict[str, str]]:
    return {row["strategy"]: row for row in data["tasks"].get(task, [])}


def operator_table() -> str:
    """Full-Multiscale with the coarse operator restricted and kept, against single-scale, per task and budget."""
    lines = [
        "| task | budget | single-scale (dB) | restricted operator (dB) | kept operator (dB) "
        "| kept − single (dB) | FLOP saving |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, budget in (("steps", "steps"), ("budget", "0.35")):
        kept_path = json_path(name)
        kept = json.loads(kept_path.read_text())
        restricted = json.loads(kept_path.with_name(f"{kept_path.stem}_restricted_operator.json").read_text())
        for task in OPERATOR_TASKS:
            new, old = _rows(kept, task), _rows(restricted, task)
            single, fms, before = (
                float(r["psnr"]) for r in (new["single"], new["full-multiscale"], old["full-multiscale"])
            )
            saving = float(new["full-multiscale"]["flop_saving"])
            lines.append(
                f"| {task} | {budget} | {single:.2f} | {before:.2f} | {fms:.2f} | {fms - single:+.2f} | {saving:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def document(name: str) -> Path:
    """README.md or BENCHMARKS.md, whichever holds the markers of table ``name``.

    Raises:
        SystemExit: when neither does, naming the markers.
    """
    start, _ = markers("mge-train", name)
    for path in DOCUMENTS:
        if start in path.read_text():
            return path
    raise SystemExit(f"neither README.md nor BENCHMARKS.md has a {start} block; add its two markers where it goes")


def main() -> None:
    """Collect the summaries into the JSON and rewrite the README table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", help="the --out folder of the mge-train runs")
    parser.add_argument("--name", default="table", help="which README table (default: %(default)s)")
    parser.add_argument("--update", action="store_true", help="keep the tasks not found under the folder")
    parser.add_argument("--operator-table", type=Path, metavar="FILE", help="write the coarse-operator comparison")
    args = parser.parse_args()
    if args.operator_table is not None:
        text = operator_table()
        replace_block(args.operator_table, "mge-train-operator", None, text)
        print(text, end="")
        return
    if args.folder is None:
        parser.error("give the folder of the runs, or --operator-table FILE")
    data = collect(args.folder)
    path = json_path(args.name)
    if args.update and path.exists():
        kept = json.loads(path.read_text())
        if not data["tasks"]:
            raise SystemExit(f"no summary.csv of any task under {args.folder}")
        kept.setdefault("updated", {}).update({task: str(args.folder) for task in data["tasks"]})
        kept["tasks"].update(data["tasks"])
        data = kept
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    replace_block(document(args.name), "mge-train", args.name, table(data))
    print(table(data))


if __name__ == "__main__":
    main()
