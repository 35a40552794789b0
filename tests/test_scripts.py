"""The study scripts behind the published figures, and the prepared GPU check, run as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def test_the_gpu_check_is_valid_bash_and_its_bench_options_exist() -> None:
    script = SCRIPTS / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    pytest.importorskip("deepinv")
    from mge_bench.cli import build_parser

    (line,) = [ln for ln in script.read_text().splitlines() if ln.lstrip().startswith("timeout 240 mge-bench")]
    words = shlex.split(line.split("|")[0])[2:]
    words = [w.replace('"$out/bench"', "x").replace("$out/bench", "x") for w in words]
    args = build_parser().parse_args(words[1:])
    assert args.preset == "gpu" and args.steps == 400 and args.device == "cuda"


def test_the_convergence_study_and_its_report_run_on_tiny_settings(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    cmd = [sys.executable, str(SCRIPTS / "fms_convergence.py"), "--size", "16", "--width", "4", "--out", str(tmp_path)]
    runs = "single:4,single:8,fms:6,fms25r:8,cw25:8,ffms:6,pffms:6"
    subprocess.run([*cmd, "--runs", runs], check=True, capture_output=True)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["run"] for r in rows] == runs.split(",")
    single, fms, fused = rows[0], rows[2], rows[5]
    assert fms["flops"] < single["flops"] and {"quiet", "peak_load"} <= set(fms["load"])
    assert fused["plans"] == fms["plans"] and fused["flops"] < fms["flops"]  # same schedule, fewer passes
    assert rows[6]["plans"] == fused["plans"] and rows[6]["flops"] == fused["flops"]  # the pyramid: same passes
    assert any("@L2" in plan for plan in fms["plans"]) and "(8,)@L0" in rows[3]["plans"]
    report = subprocess.run(
        [sys.executable, str(SCRIPTS / "fms_report.py"), str(tmp_path / "results.jsonl")],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert re.search(r"\| fms:6 \| [\d.]+ \| \d+ \|", report) and (tmp_path / "report.png").stat().st_size > 0


def test_the_step_profile_times_every_stage_and_refuses_loaded_timings(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    cmd = [sys.executable, str(SCRIPTS / "step_profile.py"), "--size", "16", "--levels", "2", "--width", "4"]
    subprocess.run([*cmd, "--steps", "2", "--repeats", "1", "--fused", "--out", str(tmp_path)], check=True,
                   capture_output=True)  # fmt: skip
    result = json.loads((tmp_path / "profile.json").read_text())
    assert [s["level"] for s in result["stages"]] == [2, 1, 0]
    assert [s["passes"] for s in result["stages"]] == [1, 2, 3]  # fused: one pass per level
    assert result["valid"] == result["load"]["quiet"]
    markdown = (tmp_path / "profile.md").read_text()
    assert ("Invalid timing" in markdown) != result["valid"]
    finest = result["stages"][-1]
    assert set(finest["levels"]) == {"0", "1", "2"} and all(v > 0 for v in finest["parts"].values())
    # the whole run weighs every stage by its steps in a 1000-step Full-Multiscale split
    run, stages = result["run"], result["stages"]
    assert run["steps"] == 1000 and [s["run_steps"] for s in stages] == [571, 286, 143]
    assert run["hand_seconds"] == pytest.approx(sum(s["run_steps"] * s["hand_seconds"] for s in stages))
    assert run["overhead"] == pytest.approx(run["plugin_seconds"] / run["hand_seconds"] - 1)


def test_the_3d_study_runs_through_monais_trainer_on_tiny_settings(tmp_path: Path) -> None:
    pytest.importorskip("monai")
    pytest.importorskip("nibabel")
    cmd = [sys.executable, str(SCRIPTS / "monai_study.py"), "--size", "16", "--width", "2", "--volumes", "6"]
    subprocess.run([*cmd, "--runs", "single:4,ffms:8", "--out", str(tmp_path)], check=True, capture_output=True)
    single, fused = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert (single["run"], fused["run"]) == ("single:4", "ffms:8")
    assert single["plans"] == ["(4,)@L0"] and "(1, 2, 4)@L0" in fused["plans"]
    assert fused["flops"] < single["flops"] and single["config"]["description"].startswith("Crops 16³")
    bad = subprocess.run([*cmd, "--runs", "fms8", "--out", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected NAME:STEPS" in bad.stderr


def test_the_3d_study_diagnoses_each_run_without_changing_what_it_trains_on(tmp_path: Path) -> None:
    pytest.importorskip("monai")
    pytest.importorskip("nibabel")
    from mge_bench.diagnose import validate_diagnosis

    cmd = [sys.executable, str(SCRIPTS / "monai_study.py"), "--size", "16", "--width", "2", "--volumes", "6"]
    plain, diagnosed = tmp_path / "plain", tmp_path / "diagnosed"
    subprocess.run([*cmd, "--runs", "single:4", "--out", str(plain)], check=True, capture_output=True)
    subprocess.run([*cmd, "--runs", "single:4", "--diagnose", "3", "--out", str(diagnosed)], check=True,
                   capture_output=True)  # fmt: skip
    without = json.loads((plain / "results.jsonl").read_text())
    with_diagnosis = json.loads((diagnosed / "results.jsonl").read_text())
    assert with_diagnosis["psnr"] == without["psnr"] and with_diagnosis["curve"] == without["curve"]
    for when in ("initial", "trained"):
        data = json.loads((diagnosed / "diagnose" / f"single_4_{when}.json").read_text())
        validate_diagnosis(data)
        assert data["samples"] == 3 and data["levels"] == 2 and data["per_level"][0]["relative_difference"] > 0
        assert with_diagnosis["diagnosis"][when]["ratio"] == data["allocation"]["variance_ratio"]
    assert "diagnosis" not in without


def test_the_step_options_time_each_variant_on_the_same_step_and_refuse_unknown_ones(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    cmd = [sys.executable, str(SCRIPTS / "step_options.py"), "--size", "16", "--levels", "1", "--width", "4"]
    subprocess.run([*cmd, "--steps", "2", "--repeats", "1", "--variants", "channels_last", "--out", str(tmp_path)],
                   check=True, capture_output=True)  # fmt: skip
    result = json.loads((tmp_path / "options.json").read_text())
    assert result["variants"] == ["eager", "channels_last"] and [r["side"] for r in result["levels"]] == [16, 8]
    assert all(r["losses_agree"] and r["relative"]["eager"] == 1.0 for r in result["levels"])
    assert result["valid"] == result["load"]["quiet"]
    assert ("Invalid timing" in (tmp_path / "options.md").read_text()) != result["valid"]
    bad = subprocess.run([*cmd, "--variants", "jit", "--out", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown jit" in bad.stderr


def test_the_conv_backend_check_names_the_kernel_each_batch_size_runs(tmp_path: Path) -> None:
    pytest.importorskip("monai")
    cmd = [sys.executable, str(SCRIPTS / "conv_backend.py"), "--sides", "16", "--batches", "1,2", "--repeats", "1"]
    subprocess.run([*cmd, "--out", str(tmp_path)], check=True, capture_output=True)
    result = json.loads((tmp_path / "conv_backend.json").read_text())
    one, two = result["cases"]
    assert (one["batch"], two["batch"]) == (1, 2) and two["per_sample"] == pytest.approx(two["seconds"] / 2)
    # PyTorch's CPU heuristic: a one-sample 3D convolution with 4 channels runs the native kernel,
    # the same convolution on two samples runs oneDNN (what BENCHMARKS.md's 3D timings rest on)
    assert "native slow_conv3d" in one["kernels"] and "oneDNN" not in one["kernels"] and "oneDNN" in two["kernels"]
    assert ("Invalid timing" in (tmp_path / "conv_backend.md").read_text()) != result["valid"]
