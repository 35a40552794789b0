"""Every study table in BENCHMARKS.md is what its script writes from the results committed beside it."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def script_module(name: str):
    """``scripts/{name}.py``, imported."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def report_module():
    return script_module("fms_report")


def test_study_blocks_equal_the_reports_of_their_committed_results() -> None:
    document = (ROOT / "BENCHMARKS.md").read_text()
    blocks = re.findall(r"<!-- study:(\w+) -->\n(.*?)<!-- /study:\1 -->", document, flags=re.S)
    assert blocks, "BENCHMARKS.md has no study block"
    fms_report = report_module()
    for name, text in blocks:
        results = ROOT / "docs" / "study" / f"{name}.jsonl"
        assert results.exists(), f"block {name} has no {results}"
        assert text == fms_report.report(fms_report.load([results])), (
            f"BENCHMARKS.md block {name} is stale: python scripts/fms_report.py docs/study/{name}.jsonl "
            f"--into BENCHMARKS.md --block {name}"
        )


def test_a_stale_block_is_detected(tmp_path: Path) -> None:
    fms_report = report_module()
    path = tmp_path / "doc.md"
    path.write_text("before\n<!-- study:x -->\nold\n<!-- /study:x -->\nafter\n")
    fms_report.replace_block(path, "study", "x", "new\n")
    assert path.read_text() == "before\n<!-- study:x -->\nnew\n<!-- /study:x -->\nafter\n"


@pytest.mark.parametrize(
    ("script", "kind", "folder", "names"),
    [
        ("step_profile", "profile", "profile", {"unfused", "fused"}),
        ("step_options", "options", "options", {"cpu128"}),
        ("conv_backend", "conv", "options", {"conv3d", "conv3d_w8"}),
    ],
)
def test_timed_blocks_equal_their_saved_quiet_results(script: str, kind: str, folder: str, names: set[str]) -> None:
    spec = importlib.util.spec_from_file_location(script, ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    document = (ROOT / "BENCHMARKS.md").read_text()
    blocks = re.findall(rf"<!-- {kind}:(\w+) -->\n(.*?)<!-- /{kind}:\1 -->", document, flags=re.S)
    assert {name for name, _ in blocks} == names
    for name, text in blocks:
        saved = json.loads((ROOT / "docs" / folder / f"{name}.json").read_text())
        assert saved["valid"], f"docs/{folder}/{name}.json was timed under load"
        assert text == module.markdown(saved), (
            f"stale: python scripts/{script}.py --render docs/{folder}/{name}.json --into BENCHMARKS.md --block {name}"
        )


def test_repeated_runs_report_their_median_seconds_only_when_every_repeat_was_quiet(tmp_path: Path) -> None:
    fms_report = report_module()
    config = {k: "1" for k in ("size", "levels", "batch_size", "width", "depth", "lr", "sigma")}
    rows = []
    for seconds, quiet in ((30.0, True), (10.0, True), (20.0, True)):
        rows.append({"run": "single:4", "psnr": 20.0, "flops": 8e9, "seconds": seconds, "load": {"quiet": quiet},
                     "config": config})  # fmt: skip
    for seconds, quiet in ((2.0, True), (4.0, False), (3.0, True)):
        rows.append({"run": "fms:8", "psnr": 19.95, "flops": 1e9, "seconds": seconds, "load": {"quiet": quiet},
                     "config": config})  # fmt: skip
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = {r["run"]: r for r in fms_report.load([path])}
    assert loaded["single:4"]["seconds"] == 20.0 and loaded["single:4"]["repeats"] == 3
    assert loaded["fms:8"]["load"]["quiet"] is False  # one loaded repeat: no seconds quoted
    report = fms_report.report(list(loaded.values()))
    assert "| single:4 | 20.00 | 8 | 20.0 (median of 3) | yes |" in report
    assert "| fms:8 | 19.95 | 1 | — | no |" in report and "Wall-clock against" not in report


def test_the_diagnose_blocks_equal_their_saved_results() -> None:
    spec = importlib.util.spec_from_file_location("diagnose_table", ROOT / "scripts" / "diagnose_table.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    blocks = re.findall(r"<!-- diagnose:(\w+) -->\n(.*?)<!-- /diagnose:\1 -->", (ROOT / "BENCHMARKS.md").read_text(),
                        flags=re.S)  # fmt: skip
    folders = {"diagnose": ROOT / "docs" / "diagnose"}
    subfolders = ("grid", "grid_meshfree", "initial", "operator")
    folders.update({name: ROOT / "docs" / "diagnose" / name for name in subfolders})
    assert {name for name, _ in blocks} <= set(folders) and "diagnose" in dict(blocks)
    for name, text in blocks:
        results = [json.loads(p.read_text()) for p in sorted(folders[name].glob("*.json"))]
        assert results and all(r["schema"] == "mge-bench-diagnose/1" for r in results)
        assert text == module.table(results), (
            f"stale: python scripts/diagnose_table.py {folders[name].relative_to(ROOT)}/*.json --into BENCHMARKS.md "
            f"--block {name}"
        )
        # the adaptive rule never does worse than plain SGD: its choice is at most single-scale's variance x cost
        assert all(r["allocation"]["variance_ratio"] <= 1.0 + 1e-9 for r in results)


def test_the_host_timing_block_equals_its_saved_result() -> None:
    spec = importlib.util.spec_from_file_location("host_timing", ROOT / "scripts" / "host_timing.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    (text,) = re.findall(r"<!-- host-timing -->\n(.*?)<!-- /host-timing -->", (ROOT / "BENCHMARKS.md").read_text(),
                         flags=re.S)  # fmt: skip
    saved = json.loads((ROOT / "docs" / "host_timing.json").read_text())
    assert all(run["load"]["quiet"] for run in saved["runs"]), "a repeat was timed under load"
    assert text == module.markdown(saved), (
        "stale: python scripts/host_timing.py --render docs/host_timing.json --into BENCHMARKS.md"
    )


def test_the_per_seed_blocks_equal_their_committed_results() -> None:
    document = (ROOT / "BENCHMARKS.md").read_text()
    blocks = re.findall(r"<!-- seeds:(\w+) -->\n(.*?)<!-- /seeds:\1 -->", document, flags=re.S)
    assert blocks, "BENCHMARKS.md has no per-seed block"
    fms_report = report_module()
    for name, text in blocks:
        (reference,) = re.findall(r"to reach (\S+) minus", text.splitlines()[0])
        paths = [
            ROOT / "docs" / "study" / f"{name}.jsonl",
            *sorted((ROOT / "docs" / "study").glob(f"{name}_seed*.jsonl")),
        ]
        assert len(paths) >= 3, f"block seeds:{name} needs three seeds' results"
        assert text == fms_report.per_seed(paths, reference), (
            f"stale: python scripts/fms_report.py {' '.join(str(p.relative_to(ROOT)) for p in paths)} "
            f"--per-seed {reference} --into BENCHMARKS.md --block {name}"
        )


def test_the_stock_swap_block_equals_its_saved_runs() -> None:
    spec = importlib.util.spec_from_file_location("stock_swap", ROOT / "scripts" / "stock_swap.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    (text,) = re.findall(r"<!-- stock-swap -->\n(.*?)<!-- /stock-swap -->", (ROOT / "BENCHMARKS.md").read_text(), re.S)
    rows = [json.loads(line) for line in (ROOT / "docs" / "stock_swap.jsonl").read_text().splitlines() if line]
    assert {(r["demo"], r["seed"]) for r in rows if r["trainer"] == "stock"} >= {
        (demo, seed) for demo in module.DEMOS for seed in (0, 1, 2)
    }
    assert text == module.markdown(rows), (
        "stale: python scripts/stock_swap.py --render docs/stock_swap.jsonl --into BENCHMARKS.md"
    )


def test_seconds_to_target_are_interpolated_between_quiet_runs_and_loaded_ones_are_left_out() -> None:
    fms_report = report_module()
    config = {"description": "synthetic"}
    quiet, loaded = {"quiet": True}, {"quiet": False}

    def row(run: str, psnr: float, seconds: float, load: dict) -> dict:
        return {"run": run, "psnr": psnr, "flops": 1e9, "seconds": seconds, "load": load, "config": config}

    rows = [row("single:100", 30.0, 100.0, quiet), row("ffms:100", 29.8, 5.0, quiet),
            row("ffms:200", 30.0, 10.0, quiet), row("pr:100", 29.95, 1.0, loaded)]  # fmt: skip
    text = fms_report.report(rows)
    times = "\N{MULTIPLICATION SIGN}"
    assert f"| ffms | 7.5 | 13.33{times} |" in text  # 29.9 dB is half way from 29.8 (5 s) to 30.0 (10 s)
    assert f"| single | 100.0 | 1.00{times} |" in text and "| pr |" not in text.split("Seconds to reach")[1]


def test_the_coarse_operator_block_is_what_the_committed_runs_give() -> None:
    spec = importlib.util.spec_from_file_location("refresh_readme", ROOT / "scripts" / "refresh_readme.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    document = (ROOT / "BENCHMARKS.md").read_text()
    block = document.split("<!-- mge-train-operator -->\n", 1)[1].split("<!-- /mge-train-operator -->", 1)[0]
    assert block == module.operator_table(), "stale: python scripts/refresh_readme.py --operator-table BENCHMARKS.md"


def test_the_default_budget_block_equals_its_saved_runs() -> None:
    module = script_module("budget_seeds")
    document = (ROOT / "BENCHMARKS.md").read_text()
    (text,) = re.findall(r"<!-- budget-seeds -->\n(.*?)<!-- /budget-seeds -->", document, re.S)
    rows = [json.loads(line) for line in (ROOT / "docs" / "figures" / "budget_seeds.jsonl").read_text().splitlines()]
    assert {(r["task"], r["seed"]) for r in rows if r["strategy"] == "single"} >= {
        (task, seed) for task in module.TASKS for seed in range(5)
    }
    assert text == module.markdown(rows), (
        "stale: python scripts/budget_seeds.py --render docs/figures/budget_seeds.jsonl --into BENCHMARKS.md"
    )


def test_the_default_budget_table_pairs_each_run_with_its_own_seeds_single_scale_run() -> None:
    def row(seed: int, strategy: str, psnr: float, budget: str = "0.33") -> dict:
        flops = 3.0 if strategy == "single" else 1.0
        return {"task": "sr", "seed": seed, "budget": budget, "strategy": strategy, "psnr": psnr, "flops": flops}

    rows = [row(0, "single", 30.0), row(0, "full-multiscale", 30.5), row(1, "single", 28.0)]
    rows += [row(1, "full-multiscale", 27.9), row(2, "full-multiscale", 40.0)]  # seed 2: no single run, left out
    rows += [row(1, "full-multiscale", 28.2)]  # measured again: the last row counts
    (line,) = [x for x in script_module("budget_seeds").markdown(rows).splitlines() if x.startswith("| sr ")]
    assert line == "| sr | 0.33 | 2 | 29.00 | 29.35 | +0.50, +0.20 | +0.35 | 3.00\N{MULTIPLICATION SIGN} |"
