"""``mge-bench``: settings, run planning, augmentation, and end-to-end runs on tiny settings."""

from __future__ import annotations

import json

import pytest
import torch
from mge_bench import PRESETS, STRATEGIES, BenchSettings, main, plan_runs, validate_report
from mge_deepinv.data import ImageCrops, bundled_images

from mge_plugins import build_strategy
from mge_plugins.cost import step_flops
from mge_plugins.diagnostics import run_cost

TINY = ["--size", "16", "--size3d", "16", "--steps", "8", "--evals", "2", "--budgets", "2", "--batch-size", "8",
        "--variance-draws", "2"]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": 40}, r"size=40 must be divisible by 2\*\*levels x 4 = 16 .* try size=32"),
        ({"steps": 30, "evals": 16}, "steps=30 must be a positive multiple of evals=16"),
        ({"strategies": ("mge",)}, "must include 'single'"),
        ({"strategies": ("single", "sgd")}, r"unknown strategies \['sgd'\]"),
        ({"steps": 16, "evals": 4, "budgets": 4}, "fewer than 4 single-scale steps"),
    ],
)
def test_settings_errors_name_the_fix(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchSettings(**changes)


def test_presets_are_valid_and_gpu_splits_stages_as_the_paper() -> None:
    assert set(PRESETS) == {"quick", "cpu", "gpu"}
    gpu = PRESETS["gpu"]
    fms = build_strategy("full-multiscale", loaded_batch_size=gpu.batch_size, levels=gpu.levels, iterations=3750)
    assert [s.iterations for s in fms.schedule.stages] == [2000, 1000, 500, 250]


def test_runs_fit_their_budgets_and_single_scale_sets_them() -> None:
    settings = BenchSettings(steps=64, evals=8, budgets=3)
    flops = (16.0, 4.0, 1.0)
    budget, budgets, runs = plan_runs(settings, 2, flops)
    assert budget == 64 * 16 * 16.0
    assert budgets == [budget / 4, budget / 2, budget]
    assert {r["strategy"] for r in runs} == set(STRATEGIES)
    for run in runs:
        name = "single" if run["strategy"] == "single+rrc" else run["strategy"]
        strategy = build_strategy(name, loaded_batch_size=16, levels=2, iterations=run["steps"])
        cost = run_cost(strategy, run["steps"], lambda p: step_flops(p.batch_sizes, flops, base_level=p.level))
        assert cost <= (run["budget"] or budget)
        assert run["steps"] % run["evals"] == 0
    singles = [r for r in runs if r["strategy"] == "single"]
    assert singles == [{"strategy": "single", "steps": 64, "evals": 8, "budget": None}]
    fms = [r for r in runs if r["strategy"] == "full-multiscale"]
    assert [r["budget"] for r in fms] == budgets
    assert fms[-1]["steps"] > 4 * 64  # Full-Multiscale fits over 4x more steps in the same FLOPs
    assert not [r for r in plan_runs(settings, 3, (64.0, 8.0, 1.0))[2] if r["strategy"] == "single+rrc"]


def test_random_resized_crops_are_fixed_per_index_and_sized() -> None:
    images = bundled_images(("camera",))
    crops = ImageCrops(images, 32, 8, seed=3, zoom=(1.0, 4.0))
    assert crops[5].shape == (1, 32, 32)
    assert torch.equal(crops[5], crops[5])
    assert not torch.equal(crops[5], ImageCrops(images, 32, 8, seed=3)[5])
    with pytest.raises(ValueError, match="1 <= low <= high"):
        ImageCrops(images, 32, 8, zoom=(0.5, 2.0))


def test_quick_mode_end_to_end_on_tiny_settings(tmp_path, capsys) -> None:
    main(["--quick", *TINY, "--out", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    validate_report(report)
    task = report["tasks"]["denoise"]
    assert list(task["strategies"]) == list(STRATEGIES)
    single = task["strategies"]["single"]
    assert single["at_budget"][-1] == single["final"]["psnr"]
    assert task["target_psnr"] == pytest.approx(single["final"]["psnr"] - 0.1)
    assert single["final"]["flops"] == pytest.approx(task["budget_flops"], rel=1e-6)
    for name in ("full-multiscale", "progressive-resizing"):
        runs = task["strategies"][name]["runs"]
        assert [r["budget"] for r in runs] == task["budgets"]
        finals = task["strategies"][name]["points"][1:]
        for run, point in zip(runs, finals, strict=True):
            assert point["flops"] <= run["budget"] * 1.05  # the trainer's own FLOP count agrees with the plan
    assert task["memory"]["mge_step_vs_fine_pass"]["saved_ratio"] == pytest.approx(1.0, abs=0.05)
    assert set(task["diagnostics"]) == {"area", "nearest"}
    assert (tmp_path / "report.md").read_text().startswith("Measured ")
    assert (tmp_path / "denoise.png").stat().st_size > 10_000
    assert "| full-multiscale |" in capsys.readouterr().out


@pytest.mark.slow
def test_3d_phantoms_end_to_end(tmp_path) -> None:
    main(["--quick", "denoise3d", *TINY, "--strategies", "single,mge,full-multiscale", "--out", str(tmp_path)])
    task = json.loads((tmp_path / "report.json").read_text())["tasks"]["denoise3d"]
    assert task["spatial_dims"] == 3
    assert task["flops_per_sample"][0] > 7 * task["flops_per_sample"][1]  # a coarse voxel grid has 1/8 the voxels


def test_unknown_task_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown task"):
        main(["--quick", "denoise4d"])
