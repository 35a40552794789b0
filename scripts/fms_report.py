"""Tables and plots from ``scripts/fms_convergence.py`` results: the frontier against a converged reference.

Reads one or more ``results.jsonl`` files and writes ``report.md`` and ``report.png`` (or
``NAME.md`` and ``NAME.png`` with ``--block NAME``) next to the first. Runs of one family
(``single``, ``fms``, ``pr``, ``fms25``, ...) at several lengths form a curve of final PSNR
against FLOPs. The reference is the shortest single-scale run whose doubling
gains less than 0.2 dB; the target is the reference's PSNR minus 0.1 dB. For each family the
FLOPs to reach the target are interpolated between its runs (not along one run's curve), and the
saving is the reference's FLOPs over them. Seconds are quoted only for runs whose load stayed
within the machine's cores; when the reference was timed quietly, the seconds to the target are
interpolated the same way between each family's quiet runs.

    python scripts/fms_report.py results/study/s64/results.jsonl [more.jsonl ...]
    python scripts/fms_report.py docs/study/s64.jsonl --into BENCHMARKS.md --block s64
    python scripts/fms_report.py seed0.jsonl seed1.jsonl seed2.jsonl --per-seed single:300

With ``--into FILE --block NAME`` the report also replaces the text between the markers
``<!-- study:NAME -->`` and ``<!-- /study:NAME -->`` of ``FILE`` (``tests/test_benchmarks_doc.py``
checks that every such block equals the report of ``docs/study/NAME.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from mge_plugins.diagnostics import cost_to_target

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_blocks import replace_block

DOUBLING_GAIN_DB = 0.2
TARGET_MARGIN_DB = 0.1


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Every run of the given results files; a run measured several times keeps its last row.

    Its seconds become the median over the repeats whose load stayed within the cores (``repeats``
    counts them), so a timing is quoted as a median only when every repeat was quiet.
    """
    repeats: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                repeats[row["run"]].append(row)
    rows = []
    for runs in repeats.values():
        row = dict(runs[-1])
        quiet = [r for r in runs if r.get("load", {}).get("quiet")]
        if len(runs) > 1:
            row["repeats"] = len(runs)
            row["load"] = {**row.get("load", {}), "quiet": len(quiet) == len(runs)}
            row["seconds"] = statistics.median(r["seconds"] for r in runs)
        rows.append(row)
    return rows


def families(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by name, each family sorted by length."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        name, steps = row["run"].split(":")
        grouped[name].append({**row, "steps": int(steps)})
    return {name: sorted(runs, key=lambda r: r["steps"]) for name, runs in grouped.items()}


def reference(single: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """The shortest single-scale run whose doubled run gains < 0.2 dB, and how it was chosen."""
    by_steps = {r["steps"]: r for r in single}
    for run in single:
        doubled = by_steps.get(2 * run["steps"])
        if doubled is not None and doubled["psnr"] - run["psnr"] < DOUBLING_GAIN_DB:
            gain = doubled["psnr"] - run["psnr"]
            return run, f"single:{run['steps']} (doubling it to {2 * run['steps']} steps gains {gain:+.2f} dB)"
    if not single:
        return None, "no single-scale run was measured"
    longest = single[-1]
    half = by_steps.get(longest["steps"] // 2)
    gain = f"; doubling single:{half['steps']} gained {longest['psnr'] - half['psnr']:+.2f} dB" if half else ""
    return longest, (
        f"provisional, single:{longest['steps']}, the longest single-scale run, which is not converged{gain}: the "
        "savings below are against a run that still improves, not against converged quality"
    )


def report(rows: list[dict[str, Any]]) -> str:
    """The Markdown report."""
    grouped = families(rows)
    ref, why = reference(grouped.get("single", []))
    config = rows[0]["config"]
    lines = [
        config.get("description")
        or f"Crops {config['size']}², {config['levels']} levels, loaded batch {config['batch_size']}, residual CNN "
        f"width {config['width']} depth {config['depth']}, Adam peak lr {config['lr']} with a cosine schedule over "
        f"each run, noise σ = {config['sigma']}.",
        "",
        f"Reference: {why}.",
        "",
        "| run | PSNR (dB) | GFLOPs | seconds | quiet |",
        "|---|---:|---:|---:|---|",
    ]
    for _, runs in sorted(grouped.items()):
        for r in runs:
            quiet = r.get("load", {}).get("quiet")
            seconds = f"{r['seconds']:.1f}" if quiet else "—"
            if quiet and r.get("repeats"):
                seconds += f" (median of {r['repeats']})"
            lines.append(
                f"| {r['run']} | {r['psnr']:.2f} | {r['flops'] / 1e9:.0f} | {seconds} | "
                f"{'yes' if quiet else 'no' if quiet is not None else 'not recorded'} |"
            )
    if ref is not None:
        target = ref["psnr"] - TARGET_MARGIN_DB
        lines += [
            "",
            f"FLOPs to reach {target:.2f} dB (the reference's {ref['psnr']:.2f} dB minus 0.1), interpolated "
            "between each family's runs:",
            "",
            "| family | GFLOPs to target | saving against the reference |",
            "|---|---:|---:|",
        ]
        for name, runs in sorted(grouped.items()):
            points = [{"flops": r["flops"], "psnr": r["psnr"]} for r in runs]
            cost = cost_to_target(points, target)
            if cost is None:
                best = max(r["psnr"] for r in runs)
                lines.append(f"| {name} | not reached (best {best:.2f} dB) | — |")
            else:
                lines.append(f"| {name} | {cost / 1e9:.0f} | {ref['flops'] / cost:.2f}× |")
    lines += _wall_clock(ref, rows)
    return "\n".join(lines) + "\n"


def _wall_clock(ref: dict[str, Any] | None, rows: list[dict[str, Any]]) -> list[str]:
    """Time saving against FLOP saving for the quiet runs, when the reference was timed quietly too."""
    if ref is None or not ref.get("load", {}).get("quiet"):
        return []
    quiet = [r for r in rows if r["run"] != ref["run"] and r.get("load", {}).get("quiet")]
    if not quiet:
        return []
    lines = [
        "",
        f"Wall-clock against the reference ({ref['run']}, {ref['seconds']:.1f} s), quiet runs only:",
        "",
        "| run | PSNR − reference (dB) | FLOP saving | time saving | time / FLOP saving |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in sorted(quiet, key=lambda r: r["run"]):
        flop, time = ref["flops"] / r["flops"], ref["seconds"] / r["seconds"]
        lines.append(f"| {r['run']} | {r['psnr'] - ref['psnr']:+.2f} | {flop:.2f}× | {time:.2f}× | {time / flop:.2f} |")
    target = ref["psnr"] - TARGET_MARGIN_DB
    lines += [
        "",
        f"Seconds to reach {target:.2f} dB, interpolated between each family's quiet runs as the FLOPs are:",
        "",
        "| family | seconds to target | time saving against the reference |",
        "|---|---:|---:|",
    ]
    for name, runs in sorted(families([ref, *quiet]).items()):
        seconds = cost_to_target([{"seconds": r["seconds"], "psnr": r["psnr"]} for r in runs], target,
                                 cost_key="seconds")  # fmt: skip
        if seconds is None:
            lines.append(f"| {name} | not reached by a quiet run (best {max(r['psnr'] for r in runs):.2f} dB) | — |")
        else:
            lines.append(f"| {name} | {seconds:.1f} | {ref['seconds'] / seconds:.2f}× |")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """PSNR against GFLOPs, one line per family."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, runs in sorted(families(rows).items()):
        ax.plot([r["flops"] / 1e9 for r in runs], [r["psnr"] for r in runs], marker="o", label=name)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ref, _ = reference(families(rows).get("single", []))
    if ref is not None:
        ax.axhline(ref["psnr"] - TARGET_MARGIN_DB, color="grey", linestyle="--", linewidth=1, label="target")
    ax.set_xlabel("GFLOPs (forward + backward, whole run)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def per_seed(paths: list[Path], reference_run: str) -> str:
    """FLOPs-to-target savings per family for each seed's results file, against its own ``reference_run``.

    Each file holds one seed's runs (``--seed`` of ``fms_convergence.py``); the target is that
    seed's reference minus 0.1 dB, and the last column is the median over the seeds that reached it.
    """
    seeds, savings = [], defaultdict(dict)
    for path in paths:
        rows = load([path])
        seed = rows[0]["config"].get("seed", "?")
        seeds.append(seed)
        by_run = {r["run"]: r for r in rows}
        if reference_run not in by_run:
            raise SystemExit(f"{path}: no {reference_run} run to take as the reference")
        ref = by_run[reference_run]
        target = ref["psnr"] - TARGET_MARGIN_DB
        for name, runs in families(rows).items():
            cost = cost_to_target([{"flops": r["flops"], "psnr": r["psnr"]} for r in runs], target)
            savings[name][seed] = None if cost is None else ref["flops"] / cost
    lines = [
        f"FLOPs saving to reach {reference_run} minus 0.1 dB, each seed against its own {reference_run}:",
        "",
        "| family | " + " | ".join(f"seed {s}" for s in seeds) + " | median |",
        "|---|" + "---:|" * (len(seeds) + 1),
    ]
    for name in sorted(savings):
        values = [savings[name].get(s) for s in seeds]
        reached = [v for v in values if v is not None]
        median = f"{statistics.median(reached):.2f}×" if len(reached) == len(values) else "—"
        cells = ["not reached" if v is None else f"{v:.2f}×" for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {median} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Read the results, write the report and its plot (and the ``--into`` block)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="results.jsonl files of fms_convergence.py")
    parser.add_argument("--into", type=Path, help="a Markdown file to update between study markers")
    parser.add_argument("--block", help="the marker name for --into (e.g. s64)")
    parser.add_argument(
        "--per-seed",
        metavar="RUN",
        help="one file per seed: the FLOPs-to-target saving of each family per seed against its own RUN "
        "(e.g. single:300), instead of the report",
    )
    args = parser.parse_args()
    if args.per_seed:
        text = per_seed(args.results, args.per_seed)
        if args.into is not None:
            if not args.block:
                parser.error("--into needs --block NAME")
            replace_block(args.into, "seeds", args.block, text)
        print(text, end="")
        return
    rows = load(args.results)
    out = args.results[0].parent
    text = report(rows)
    stem = args.block or "report"
    written = [out / f"{stem}.png"]
    plot(rows, written[0])
    if args.into is not None:
        if not args.block:
            parser.error("--into needs --block NAME")
        replace_block(args.into, "study", args.block, text)
        written.append(args.into)
    else:
        written.insert(0, out / f"{stem}.md")
        written[0].write_text(text)
    print(text)
    print("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
