"""The variance x cost table of BENCHMARKS.md from saved ``mge-bench diagnose --json`` results.

Each JSON is one task and network at trained weights. The table gives, per result, the ratio of
MGE's best allocation (at least one coarser level) to single-scale SGD's variance x cost at equal
FLOPs, its spread over bootstrap resamples of the probe, the relative variance of the level-0
difference ``V(grad l_0 - grad l_1) / V(grad l_0)``, the relative norm of that difference per
sample ``mean ||grad l_0 - grad l_1|| / mean ||grad l_0||``, and the allocation the adaptive rule chooses
(``K = 0`` is plain SGD, so the adaptive estimator is never worse than single-scale).

    python scripts/diagnose_table.py docs/diagnose/*.json --into BENCHMARKS.md --block diagnose
    python scripts/diagnose_table.py docs/diagnose/grid/*.json --into BENCHMARKS.md --block grid
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_blocks import replace_block

__all__ = ["row", "table"]


def _network(result: dict[str, Any]) -> str:
    command = result["command"].split()
    return command[command.index("--network") + 1] if "--network" in command else "dncnn"


def _option(result: dict[str, Any], flag: str, default: str) -> str:
    command = result["command"].split()
    return command[command.index(flag) + 1] if flag in command else default


def _task(result: dict[str, Any]) -> str:
    return _option(result, "--task", "?")


def _key(result: dict[str, Any]) -> tuple[str, ...]:
    return (_task(result), _network(result), _option(result, "--restriction", "area"),
            _option(result, "--coarse-noise", "keep"),
            _option(result, "--coarse-operator", "restrict"))  # fmt: skip


def _names_operator(results: list[dict[str, Any]]) -> bool:
    """Whether the table gets a coarse-operator column: some result was run with ``--coarse-operator``.

    Results without the flag predate it, when the coarse operator was always restricted.
    """
    return any("--coarse-operator" in r["command"].split() for r in results)


def row(result: dict[str, Any], operator: bool = False) -> str:
    """One table row from a diagnose result (with its coarse operator when ``operator``)."""
    mge = [c for c in result["candidates"] if c["levels"] > 0]
    best = min(mge, key=lambda c: c["variance_ratio"]) if mge else None
    level0 = result["per_level"][0]
    relative = level0["difference_variance"] / level0["variance"] if level0.get("difference_variance") else None
    low, high = result["ratio_interval"]
    chosen = result["allocation"]
    ratio = f"{best['variance_ratio']:.2f}× ({low:.2f}–{high:.2f})" if best else "—"
    adaptive = f"K = {chosen['levels']}, {chosen['batch_sizes']}, {chosen['variance_ratio']:.2f}×"
    relative_text = f"{relative:.2f}" if relative is not None else "—"
    norm_text = f"{level0['relative_difference']:.2f}" if level0["relative_difference"] is not None else "—"
    task, network, restriction, noise, coarse_operator = _key(result)
    settings = f"{restriction} | {noise} | {coarse_operator}" if operator else f"{restriction} | {noise}"
    return f"| {task} | {network} | {settings} | {ratio} | {relative_text} | {norm_text} | {adaptive} |"


def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table, sorted by task and network."""
    operator = _names_operator(results)
    extra, rule = (" coarse operator |", "---|") if operator else ("", "")
    lines = [
        f"| task | network | restriction | coarse noise |{extra} best MGE allocation, variance × cost vs SGD (80 % "
        "of resamples) | V(∇ℓ₀ − ∇ℓ₁) / V(∇ℓ₀) | ‖∇ℓ₀ − ∇ℓ₁‖ / ‖∇ℓ₀‖ | adaptive choice |",
        f"|---|---|---|---|{rule}---:|---:|---:|---|",
    ]
    lines += [row(r, operator) for r in sorted(results, key=_key)]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print the table; with ``--into`` and ``--block``, also write it into the document."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="mge-bench diagnose --json files")
    parser.add_argument("--into", type=Path, help="the document whose block to rewrite")
    parser.add_argument("--block", help="the marker name")
    args = parser.parse_args()
    text = table([json.loads(p.read_text()) for p in args.results])
    if args.into is not None:
        replace_block(args.into, "diagnose", args.block or "diagnose", text)
    print(text)


if __name__ == "__main__":
    main()
