"""``mge-bench``: settings, run planning, augmentation, and end-to-end runs on tiny settings."""

from __future__ import annotations

import io
import json
import re
import warnings
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch
from mge_bench import PRESETS, STRATEGIES, BenchSettings, main, plan_runs, validate_report
from mge_bench.cli import build_parser
from mge_bench.suite import baseline_check, to_target
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


def test_quick_mode_end_to_end_on_tiny_settings(tmp_path) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(stdout), redirect_stderr(stderr):
        warnings.simplefilter("always")
        main(["--quick", *TINY, "--out", str(tmp_path)])
    assert not [w for w in caught if "non_blocking_transfers" in str(w.message)]  # CPU runs ask for none
    assert not [w for w in caught if "tuple format for dataset outputs" in str(w.message)]  # samples are dicts
    log = stderr.getvalue()
    assert "\r" not in log  # not a terminal: plain lines, no bar fragments
    assert re.search(
        r"mge-bench denoise: step 1/\d+ \(\d+%\), run 1/7 single, level 0, saving so far 1.00x, \d+ s elapsed", log
    )
    assert re.search(r"run 4/7 full-multiscale at F, stage 1/\d, level 2, saving so far \d+\.\d\dx", log)
    assert "measuring peak memory" in log
    assert re.search(r"step (\d+)/\1 \(100%\), run 7/7 single\+rrc, level 0, .* done", log)
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
    assert "| full-multiscale |" in stdout.getvalue()
    assert task["strategies"]["single"]["to_target"]["flop_saving"] == 1.0  # single-scale over itself
    assert task["strategies"]["single"]["to_target"]["time_saving"] == 1.0
    assert "| single | " in stdout.getvalue() and "| 1.00x |" in stdout.getvalue()
    check = task["baseline_check"]
    assert check["input_psnr"] == pytest.approx(20.0, abs=0.5)  # sigma 0.1: about 20 dB
    assert check["gain_db"] == pytest.approx(check["single_psnr"] - check["input_psnr"])
    warned = "has not learned the task" in log
    assert warned == (not check["ok"]) == ("**Warning" in stdout.getvalue())


def test_saving_to_target_reads_both_costs_the_same_way() -> None:
    """Single-scale reaches its own target before its end: its saving over itself is still exactly 1."""
    single = [{"flops": 0.0, "seconds": 0.0, "psnr": 20.0}, {"flops": 10.0, "seconds": 4.0, "psnr": 28.0},
              {"flops": 20.0, "seconds": 8.0, "psnr": 28.2}]  # fmt: skip
    target = single[-1]["psnr"] - 0.1
    own = to_target(single, single, target)
    assert own["flop_saving"] == 1.0 and own["time_saving"] == 1.0
    assert own["flops"] < single[-1]["flops"]  # dividing the final cost by it would claim a saving of 1.x
    faster = [{"flops": 0.0, "seconds": 0.0, "psnr": 20.0}, {"flops": 5.0, "seconds": 1.0, "psnr": 29.0}]
    result = to_target(faster, single, target)
    assert result["flop_saving"] == pytest.approx(own["flops"] / result["flops"])
    assert to_target(single[:1], single, target)["flop_saving"] is None  # never reached


def test_baseline_check_marks_a_baseline_that_did_not_learn() -> None:
    assert baseline_check(20.0, 27.0)["ok"] and baseline_check(20.0, 21.0)["ok"]
    assert not baseline_check(20.0, 20.5)["ok"] and not baseline_check(20.0, 19.0)["ok"]
    assert baseline_check(20.0, 20.5)["gain_db"] == pytest.approx(0.5)


@pytest.mark.slow
def test_the_quick_presets_baseline_learns_the_task() -> None:
    """Single-scale at the quick preset ends well above the noisy input (64 steps at lr 1e-3 ended 0.04 dB above)."""
    from mge_bench.problems import make_problem
    from mge_bench.runs import train_run
    from mge_deepinv.evaluation import input_quality

    settings = PRESETS["quick"]
    problem = make_problem("denoise", settings)
    measured = input_quality(problem.make_physics(), problem.eval_clean, settings.seed + 1)["psnr"]
    run = train_run(problem, settings, "single", settings.steps, evals=settings.evals)
    assert baseline_check(measured, run.final["psnr"])["ok"]
    assert run.final["psnr"] > measured + 3.0


@pytest.mark.slow
def test_3d_phantoms_end_to_end(tmp_path) -> None:
    main(["--quick", "denoise3d", *TINY, "--strategies", "single,mge,full-multiscale", "--out", str(tmp_path)])
    task = json.loads((tmp_path / "report.json").read_text())["tasks"]["denoise3d"]
    assert task["spatial_dims"] == 3
    assert task["flops_per_sample"][0] > 7 * task["flops_per_sample"][1]  # a coarse voxel grid has 1/8 the voxels


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["denoise4d"], "unknown task(s) denoise4d; choose from"),
        (["--device", "cuda"], "--device cuda: PyTorch sees no CUDA GPU on this machine"),
        (["--preset", "gpu"], "the gpu preset runs on cuda: --device cuda: PyTorch sees no CUDA GPU"),
        (["--preset", "gpu", "--quick"], "--quick and --preset gpu name two presets"),
        (["--evals", "0"], "argument --evals: must be at least 1, got 0"),
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--size", "0"], "argument --size: must be at least 1, got 0"),
        (["--size", "40"], "size=40 must be divisible by 2**levels x 4 = 16"),
        (["--strategies", "mge"], "must include 'single'"),
        (["--steps", "30"], "steps=30 must be a positive multiple of evals=8"),
    ],
)
def test_mistakes_end_with_one_line_and_status_2_before_anything_is_written(
    argv: list[str], message: str, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        main([*(["--quick"] if "--preset" not in argv else []), *argv, "--out", str(tmp_path / "bench")])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mge-bench: error: ") and message in last
    assert not (tmp_path / "bench").exists()


def test_settings_refuse_zero_counts() -> None:
    for field in ("evals", "steps", "batch_size", "size", "budgets", "repeats"):
        with pytest.raises(ValueError, match=f"{field} must be at least 1, got 0"):
            BenchSettings(**{field: 0})


def test_help_shows_the_defaults_in_plain_text() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "``" not in text and "`" not in text
    assert "--out DIR where the report goes (default: results/bench)" in text
    assert "(default: the preset's: quick 128, cpu 400, gpu 2000)" in text  # --steps
    assert "--preset {cpu,gpu,quick} the settings to start from (default: cpu)" in text
