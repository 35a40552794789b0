"""Wall-clock of the host paths: does time follow FLOPs in ``mge-train`` and the MONAI 3D example?

Runs each host's Full-Multiscale and single-scale training ``--repeats`` times, in turn, one thread
each, and reads back the training seconds and FLOPs the runs write themselves (``mge-train``'s
``summary.csv``, the MONAI example's ``summary_*.json``). The load is sampled throughout; a
repeat during which it exceeded the cores is kept in the JSON but marked, and the Markdown quotes
seconds only when every repeat of a case was quiet.

    python scripts/host_timing.py --repeats 3 --out results/host_timing
    python scripts/host_timing.py --render docs/host_timing.json --into BENCHMARKS.md

Writes ``host_timing.json`` and ``host_timing.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mge_plugins.diagnostics import LoadMonitor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_blocks import replace_block  # noqa: E402

MONAI_3D = [sys.executable, "examples/monai_3d.py"]
CASES: dict[str, list[str]] = {  # "--budget steps": as many steps as single-scale, as these cases were first timed
    "mge-train denoise": ["mge-train", "denoise", "--budget", "steps"],
    "mge-train sr": ["mge-train", "sr", "--budget", "steps"],
    "MONAI 3D denoise, full-multiscale": [*MONAI_3D, "--strategy", "full-multiscale", "--budget", "steps"],
    "MONAI 3D denoise, single": [*MONAI_3D, "--strategy", "single"],
    "mge-train sr, default budget": ["mge-train", "sr"],
    "MONAI 3D denoise, full-multiscale, default budget": [*MONAI_3D, "--strategy", "full-multiscale"],
}


def _read(case: str, out: Path) -> dict[str, dict[str, float]]:
    """``{strategy: {seconds, flops, psnr}}`` from what one run wrote under ``out``."""
    if case.startswith("mge-train"):
        (summary,) = sorted(out.glob("*/*/summary.csv"))
        with summary.open() as f:
            return {
                r["strategy"]: {"seconds": float(r["seconds"]), "flops": float(r["flops"]), "psnr": float(r["psnr"])}
                for r in csv.DictReader(f)
            }
    (summary,) = sorted(out.glob("*/summary_*.json"))
    data = json.loads(summary.read_text())
    return {data["strategy"]: {"seconds": data["seconds"], "flops": data["flops"], "psnr": data["psnr"]}}


def measure(repeats: int, out: Path, cases: list[str] | None = None) -> dict[str, Any]:
    """Every case (or those named in ``cases``) ``repeats`` times, in turn; the raw results with each repeat's load."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs: list[dict[str, Any]] = []
    chosen = {case: command for case, command in CASES.items() if cases is None or case in cases}
    for repeat in range(repeats):
        for case, command in chosen.items():
            folder = out / "runs" / f"{len(runs):02d}"
            with LoadMonitor(interval=5.0) as monitor:
                subprocess.run([*command, "--out", str(folder)], check=True, cwd=ROOT, env=env, capture_output=True)
            runs.append(
                {"case": case, "repeat": repeat, "load": monitor.report().to_dict(), "strategies": _read(case, folder)}
            )
    return {
        "command": "python scripts/host_timing.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }


def markdown(result: dict[str, Any]) -> str:
    """Medians per host and strategy, and time saving against FLOP saving where every repeat was quiet."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in result["runs"]:
        host = run["case"].split(",")[0]
        default = run["case"].endswith(", default budget")  # single-scale does not depend on the budget: pooled
        for strategy, values in run["strategies"].items():
            label = f"{strategy}, default budget" if default and strategy != "single" else strategy
            rows.setdefault((host, label), []).append({**values, "quiet": run["load"]["quiet"]})
    lines = [
        f"`{result['command']}`, {result['date']}.",
        "",
        "| host path | strategy | PSNR (dB) | GFLOPs | seconds (median) | repeats quiet | FLOP saving | time saving | "
        "time / FLOP saving |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (host, strategy), values in rows.items():
        quiet = all(v["quiet"] for v in values)
        seconds = statistics.median(v["seconds"] for v in values)
        flops = values[0]["flops"]
        base = rows.get((host, "single"))
        flop_saving = time_saving = ratio = "—"
        if base is not None:
            base_seconds = statistics.median(v["seconds"] for v in base)
            flop_saving = f"{base[0]['flops'] / flops:.2f}×"
            if quiet and all(v["quiet"] for v in base):
                t = base_seconds / seconds
                time_saving, ratio = f"{t:.2f}×", f"{t / (base[0]['flops'] / flops):.2f}"
        lines.append(
            f"| {host} | {strategy} | {values[0]['psnr']:.2f} | {flops / 1e9:.0f} | "
            f"{f'{seconds:.1f}' if quiet else '—'} | {sum(v['quiet'] for v in values)}/{len(values)} | "
            f"{flop_saving} | {time_saving} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure (or render a saved result) and write the JSON and the Markdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every case (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results/host_timing"), help="(default: %(default)s)")
    parser.add_argument("--render", type=Path, help="a saved host_timing.json to render instead of measuring")
    parser.add_argument("--into", type=Path, help="with --render: the document whose host-timing block to rewrite")
    parser.add_argument(
        "--cases",
        action="append",
        help=f"a case to measure, once per case (default: all of {'; '.join(CASES)})",
        default=None,
    )
    parser.add_argument(
        "--update", type=Path, help="a saved host_timing.json whose runs of the measured cases are replaced"
    )
    args = parser.parse_args()
    if args.render is not None:
        text = markdown(json.loads(args.render.read_text()))
        if args.into is not None:
            replace_block(args.into, "host-timing", None, text)
        print(text)
        return
    cases = args.cases
    unknown = sorted(set(cases or []) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {'; '.join(unknown)}; use {'; '.join(CASES)}")
    result = measure(args.repeats, args.out, cases)
    if args.update is not None:  # keep the saved runs of the other cases, in their place
        saved = json.loads(args.update.read_text())
        kept = [run for run in saved["runs"] if run["case"] not in {r["case"] for r in result["runs"]}]
        result = {**result, "command": f"{saved['command']}; then {result['command']}", "runs": kept + result["runs"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host_timing.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "host_timing.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
