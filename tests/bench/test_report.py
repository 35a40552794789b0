"""The ``mge-bench`` report: its schema, the validator's messages and the Markdown tables."""

from __future__ import annotations

import copy
import math
import re

import pytest
from mge_bench.report import SCHEMA_VERSION, markdown_report, validate_report


def _point(psnr: float) -> dict:
    return {"step": 1, "flops": 1.0, "work_units": 1.0, "seconds": 1.0, "psnr": psnr, "ssim": 0.5}


def _strategy_entry(psnr: float) -> dict:
    return {
        "kind": "curve",
        "points": [_point(psnr)],
        "final": {**_point(psnr), "seconds_median": 1.0, "seconds_repeats": [1.0]},
        "at_budget": [psnr, None],
        "to_target": {"flops": None, "seconds": None, "flop_saving": None, "time_saving": None},
        "data_share": {"0": 0.01},
        "peak_memory": {"saved_bytes": 2**20, "cuda_bytes": None},
        "runs": [{"steps": 1, "budget": None, "plan": {}}],
    }


def minimal_report() -> dict:
    task = {
        "description": "toy",
        "spatial_dims": 2,
        "size": 16,
        "flops_per_sample": [4.0, 1.0],
        "budget_flops": 2.0,
        "budgets": [1.0, 2.0],
        "target_psnr": 24.9,
        "baseline_check": {"input_psnr": 20.0, "single_psnr": 25.0, "gain_db": 5.0, "min_gain_db": 1.0, "ok": True},
        "strategies": {"single": _strategy_entry(25.0), "mge": _strategy_entry(26.0)},
        "diagnostics": {},
        "memory": {},
        "overhead": {"batch_sizes": [1, 4], "plugin_seconds_per_step": 0.011, "hand_written_seconds_per_step": 0.01,
                     "overhead": 0.1},
    }  # fmt: skip
    meta = {"date": "2026-01-01", "command": "mge-bench", "machine": {}, "settings": {}, "seconds": 1.0}
    return {"schema": SCHEMA_VERSION, "meta": meta, "tasks": {"toy": task}}


def test_a_complete_report_validates_and_renders() -> None:
    report = minimal_report()
    validate_report(report)
    text = markdown_report(report)
    assert "| mge | 26.00 |" in text
    assert "not reached" in text
    assert "+10.0 %" in text
    assert "Single-scale's final PSNR is 25.00 dB, +5.00 dB over the measurement's own 20.00 dB." in text
    assert "Warning" not in text


def test_a_baseline_that_did_not_learn_is_marked() -> None:
    report = minimal_report()
    report["tasks"]["toy"]["baseline_check"].update(single_psnr=20.3, gain_db=0.3, ok=False)
    validate_report(report)
    assert "**Warning: Single-scale's final PSNR is 20.30 dB, +0.30 dB" in markdown_report(report)
    report["tasks"]["toy"]["baseline_check"]["ok"] = 1
    with pytest.raises(ValueError, match=r"baseline_check.ok: expected bool"):
        validate_report(report)


def test_log_axes_have_positive_limits_and_plain_ticks() -> None:
    pytest.importorskip("matplotlib")
    from mge_bench.plots import task_figure

    task = minimal_report()["tasks"]["toy"]
    for entry in task["strategies"].values():  # the untrained network at cost 0, then three evaluations
        entry["points"] = [{**_point(18.0), "flops": 0.0, "seconds": 0.0}] + [
            {**_point(20.0 + k), "flops": 2e9 * 4**k, "seconds": 0.4 * 3**k} for k in range(3)
        ]
    task["budgets"] = [8e9, 32e9]
    fig = task_figure("toy", task)
    fig.canvas.draw()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        assert ax.get_xscale() == "log" and 0 < low < high
        labels = [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high and t.get_text()]
        assert len(labels) >= 2, labels
        assert all(re.fullmatch(r"\d+(\.\d+)?", label) for label in labels), labels  # no "0", "10^1", "-1"
        assert "0" not in labels
    fig.clf()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema",), "other/2", "expected 'mge-bench/1'"),
        (("meta", "date"), None, r"report.meta.date: expected str"),
        (("tasks", "toy", "strategies", "mge", "final", "psnr"), math.nan, "is not finite"),
        (("tasks", "toy", "strategies", "mge", "at_budget"), [1.0, "x"], r"at_budget\[1\]: expected int/float/null"),
        (("tasks", "toy", "budgets"), 3.0, r"report.tasks.toy.budgets: expected a list"),
        (("tasks", "toy", "strategies", "mge", "kind"), True, "expected str"),
    ],
)
def test_report_errors_name_the_path(path: tuple, value, message: str) -> None:
    report = copy.deepcopy(minimal_report())
    node = report
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        validate_report(report)


def test_report_requires_the_single_scale_baseline() -> None:
    report = minimal_report()
    del report["tasks"]["toy"]["strategies"]["single"]
    with pytest.raises(ValueError, match=r"report.tasks.toy.strategies: missing key 'single'"):
        validate_report(report)
