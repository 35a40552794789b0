"""The benchmark report: its JSON schema, a validator, and Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["REPORT_SCHEMA", "SCHEMA_VERSION", "baseline_line", "markdown_report", "validate_against", "validate_report"]

SCHEMA_VERSION = "mge-bench/1"

_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))

_POINT = {
    "step": _NUMBER, "flops": _NUMBER, "work_units": _NUMBER, "seconds": _NUMBER, "psnr": _NUMBER, "ssim": _NUMBER,
}  # fmt: skip
_STRATEGY = {
    "kind": str,
    "points": [_POINT],
    "final": {**_POINT, "seconds_median": _NUMBER, "seconds_repeats": [_NUMBER]},
    "at_budget": [_OPTIONAL_NUMBER],
    "to_target": {"flops": _OPTIONAL_NUMBER, "seconds": _OPTIONAL_NUMBER, "flop_saving": _OPTIONAL_NUMBER,
                  "time_saving": _OPTIONAL_NUMBER},
    "data_share": dict,
    "peak_memory": {"saved_bytes": _NUMBER, "cuda_bytes": _OPTIONAL_NUMBER},
    "runs": [{"steps": _NUMBER, "budget": _OPTIONAL_NUMBER, "plan": dict}],
}  # fmt: skip
_TASK = {
    "description": str,
    "spatial_dims": int,
    "size": int,
    "flops_per_sample": [_NUMBER],
    "budget_flops": _NUMBER,
    "budgets": [_NUMBER],
    "target_psnr": _NUMBER,
    "baseline_check": {
        "input_psnr": _NUMBER,
        "single_psnr": _NUMBER,
        "gain_db": _NUMBER,
        "min_gain_db": _NUMBER,
        "ok": bool,
    },
    "strategies": {"single": _STRATEGY, "*": _STRATEGY},
    "diagnostics": dict,
    "memory": dict,
    "overhead": dict,
}
REPORT_SCHEMA: dict[str, Any] = {
    "schema": str,
    "meta": {"date": str, "command": str, "machine": dict, "settings": dict, "seconds": _NUMBER},
    "tasks": {"*": _TASK},
}
"""The report's layout: a dict maps keys to sub-schemas (``"*"``: every other key), a one-element list
means a list of such items, a type (or tuple of types) a leaf."""


def _check(value: Any, schema: Any, path: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected an object, got {type(value).__name__}")
        for key, sub in schema.items():
            if key == "*":
                continue
            if key not in value:
                raise ValueError(f"{path}: missing key {key!r}")
            _check(value[key], sub, f"{path}.{key}")
        if "*" in schema:
            for key, item in value.items():
                if key not in schema:
                    _check(item, schema["*"], f"{path}.{key}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{path}[{i}]")
    else:
        types = schema if isinstance(schema, tuple) else (schema,)
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{path}: expected {names}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not finite")


def validate_against(value: Any, schema: Any, name: str) -> None:
    """Check ``value`` against a schema in the notation of :data:`REPORT_SCHEMA`.

    Args:
        value: the data.
        schema: the layout it must have.
        name: the name the error's path starts with.

    Raises:
        ValueError: naming the path of the first missing or ill-typed entry.
    """
    _check(value, schema, name)


def validate_report(report: Mapping[str, Any]) -> None:
    """Check ``report`` against :data:`REPORT_SCHEMA`.

    Raises:
        ValueError: naming the path of the first missing or ill-typed entry.
    """
    _check(report, REPORT_SCHEMA, "report")
    if report["schema"] != SCHEMA_VERSION:
        raise ValueError(f"report.schema: expected {SCHEMA_VERSION!r}, got {report['schema']!r}")


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "not reached" if value is None else f"{value:{spec}}{suffix}"


def markdown_report(report: Mapping[str, Any]) -> str:
    """Markdown tables of a validated report.

    Per task: the strategies at the full budget, quality at each budget, the cost of reaching
    single-scale's final quality, and the checks.
    """
    lines = [f"Measured {report['meta']['date']} with `{report['meta']['command']}`.", ""]
    for name, task in report["tasks"].items():
        budgets = task["budgets"]
        lines += [f"### {name}: {task['description']} ({task['size']}^{task['spatial_dims']})", ""]
        lines += [baseline_line(task["baseline_check"]), ""]
        lines += [
            "| strategy | PSNR (dB) | SSIM | GFLOPs | work units | seconds | peak saved MB | data-loading share |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for strategy, entry in task["strategies"].items():
            final = entry["final"]
            share = ", ".join(f"L{lv} {100 * s:.0f}%" for lv, s in entry["data_share"].items())
            lines.append(
                f"| {strategy} | {final['psnr']:.2f} | {final['ssim']:.3f} | {final['flops'] / 1e9:.1f} | "
                f"{final['work_units']:.0f} | {final['seconds_median']:.1f} | "
                f"{entry['peak_memory']['saved_bytes'] / 2**20:.1f} | {share} |"
            )
        fractions = [f"F/{round(budgets[-1] / b)}" if b < budgets[-1] else "F" for b in budgets]
        lines += ["", f"PSNR (dB) at equal budget (F = {budgets[-1] / 1e9:.1f} GFLOPs, single-scale's run):", ""]
        lines += ["| strategy | " + " | ".join(fractions) + " |", "|---|" + "---:|" * len(budgets)]
        for strategy, entry in task["strategies"].items():
            lines.append(f"| {strategy} | " + " | ".join(_fmt(q, ".2f") for q in entry["at_budget"]) + " |")
        lines += [
            "",
            f"Cost of reaching single-scale's final PSNR within 0.1 dB ({task['target_psnr']:.2f} dB):",
            "",
            "| strategy | GFLOPs | FLOP saving | seconds | time saving |",
            "|---|---:|---:|---:|---:|",
        ]
        for strategy, entry in task["strategies"].items():
            t = entry["to_target"]
            flops = None if t["flops"] is None else t["flops"] / 1e9
            lines.append(
                f"| {strategy} | {_fmt(flops, '.2f')} | {_fmt(t['flop_saving'], '.2f', 'x')} | "
                f"{_fmt(t['seconds'], '.1f')} | {_fmt(t['time_saving'], '.2f', 'x')} |"
            )
        lines += ["", *_checks(task), ""]
    return "\n".join(lines)


def baseline_line(check: Mapping[str, Any]) -> str:
    """One line on single-scale's gain over the measurement, a warning when it is below ``min_gain_db``.

    Args:
        check: a task's ``baseline_check`` (:func:`mge_bench.suite.baseline_check`).
    """
    text = (
        f"Single-scale's final PSNR is {check['single_psnr']:.2f} dB, {check['gain_db']:+.2f} dB over the "
        f"measurement's own {check['input_psnr']:.2f} dB."
    )
    if check["ok"]:
        return text
    return (
        f"**Warning: {text} A baseline less than {check['min_gain_db']:.1f} dB above its input has not learned the "
        "task, so the savings below compare undertrained networks; raise --steps or --lr.**"
    )


def _checks(task: Mapping[str, Any]) -> list[str]:
    lines = ["| check | measured |", "|---|---|"]
    for restriction, at_states in task["diagnostics"].items():
        for state, d in at_states.items():
            norms = ", ".join(f"L{n['level']}-{n['level'] + 1}: {n['relative']:.2f}" for n in d["levels"])
            lines.append(
                f"| MGE variance x cost / single-scale's ({restriction}, {state} weights; terms "
                f"{d['mge_batch_sizes']} vs {d['single_batch_size']}) | {d['variance_ratio_at_equal_cost']:.2f} |"
            )
            lines.append(f"| mean norm of grad l_k - grad l_k+1 / of grad l_k ({restriction}, {state}) | {norms} |")
    memory = task["memory"].get("mge_step_vs_fine_pass")
    if memory:
        cuda = f", CUDA {memory['cuda_ratio']:.3f}" if memory.get("cuda_ratio") is not None else ""
        lines.append(
            f"| peak memory of an MGE step {memory['mge_batch_sizes']} / one fine pass of its finest batch | "
            f"saved tensors {memory['saved_ratio']:.3f}{cuda} |"
        )
    overhead = task["overhead"]
    lines.append(
        f"| plugin overhead per step over a hand-written loop (`mge_step`, terms {overhead['batch_sizes']}) | "
        f"{100 * overhead['overhead']:+.1f} % ({overhead['plugin_seconds_per_step'] * 1e3:.1f} vs "
        f"{overhead['hand_written_seconds_per_step'] * 1e3:.1f} ms) |"
    )
    return lines
