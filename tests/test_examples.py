from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

pytest.importorskip("skimage")
pytest.importorskip("torchmetrics")


def test_plain_pytorch_example_runs_and_reports_costs(tmp_path: Path) -> None:
    cmd = [
        sys.executable, str(ROOT / "examples" / "plain_pytorch_denoise.py"),
        "--steps", "7", "--size", "32", "--eval-every", "7", "--width", "8", "--depth", "3", "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "full-multiscale" in result.stdout and "FLOP saving" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["strategy"]: r for r in summary["results"]}
    assert set(rows) == {"single", "mge", "full-multiscale"}
    # 7 steps of 8 fine samples for single-scale; MGE terms (2, 8, 32) cost 2*1.25 + 8*0.3125 + 2 = 7.
    assert rows["single"]["work_units"] == pytest.approx(56)
    assert rows["mge"]["work_units"] == pytest.approx(49)
    # Full-Multiscale splits 7 steps as 4/2/1 over levels 2, 1, 0.
    assert rows["full-multiscale"]["work_units"] == pytest.approx(4 * 2 / 16 + 2 * (2 * 0.3125 + 8 / 16) + 7)
    assert rows["full-multiscale"]["flop_ratio_vs_single"] > 3
    assert all(r["psnr"] > 10 for r in rows.values())
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("strategy,step,level") and len(log) == 1 + 3
    # Not a terminal: progress as plain lines, no bar fragments.
    assert "\r" not in result.stderr and "full-multiscale: step 7/7, level 0" in result.stderr


@pytest.mark.parametrize("meta", [[], ["--track-meta"]])  # by default the random transforms run on plain tensors
def test_monai_example_records_its_data_wait_with_or_without_metadata(meta: list[str], tmp_path: Path) -> None:
    pytest.importorskip("monai")
    pytest.importorskip("nibabel")
    cmd = [
        sys.executable, str(ROOT / "examples" / "monai_3d.py"), "--size", "16", "--batch-size", "4", "--epochs", "1",
        "--iterations-per-epoch", "6", *meta, "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT / "examples")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "monai_3d" / "summary_denoise_full-multiscale.json").read_text())
    assert 0 < summary["data_seconds"] < summary["seconds"]
    assert "s waiting for data)" in result.stdout


def test_example_rejects_an_empty_data_folder(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "examples" / "plain_pytorch_denoise.py"), "--data", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no .png/.jpg images in" in result.stderr
    assert "Traceback" not in result.stderr


def _run_example(name: str, argv: list[str], monkeypatch) -> int:
    """Run ``examples/NAME ARGV`` in this process (its imports are already loaded); return its exit status."""
    pytest.importorskip("monai" if name.startswith("monai") else "deepinv" if name.startswith("deepinv") else "torch")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return exit_info.value.code


@pytest.mark.parametrize(
    "name", ["deepinv_denoise.py", "monai_3d.py", "monai_retina_2d.py", "plain_pytorch_denoise.py"]
)
def test_example_help_shows_defaults_in_plain_text(name: str, monkeypatch, capsys) -> None:
    assert _run_example(name, ["--help"], monkeypatch) == 0
    text = capsys.readouterr().out
    assert "``" not in text and "`" not in text
    entry = text.split("\n  --size PX", 1)[1].split("\n  -", 1)[0]
    assert "(default: " in entry
    assert f"\n\n    python examples/{name}" in text or f"\n\npython examples/{name}" in text  # usage on its own


@pytest.mark.parametrize(
    ("name", "argv", "message"),
    [
        ("deepinv_denoise.py", ["--device", "cuda"], "--device cuda: PyTorch sees no CUDA GPU on this machine"),
        ("deepinv_denoise.py", ["--data", "{tmp}/empty"], "--data: no image files"),
        ("deepinv_denoise.py", ["--data", "{tmp}/missing"], "missing: no such folder"),
        ("deepinv_denoise.py", ["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        ("deepinv_denoise.py", ["--size", "2000"], "--size 2000: crop size 2000 is larger than images"),
        ("deepinv_denoise.py", ["--epochs", "1", "--steps-per-epoch", "2"], "too few to give each of 3 stages"),
        ("monai_3d.py", ["--data", "{tmp}/empty"], "--data: no NIfTI files"),
        ("monai_3d.py", ["--size", "20"], "--size 20 is not divisible by 2**(levels + 2) = 16"),
        ("monai_3d.py", ["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        ("monai_3d.py", ["--device", "cuda"], "--device cuda: PyTorch sees no CUDA GPU on this machine"),
        ("monai_retina_2d.py", ["--data", "{tmp}/missing"], "missing: no such folder"),
        ("monai_retina_2d.py", ["--data", "{tmp}/empty"], "no image files"),
        ("monai_retina_2d.py", ["--size", "4096"], "--size 4096 is larger than the images allow"),
        ("plain_pytorch_denoise.py", ["--data", "{tmp}/missing"], "missing: no such folder"),
        ("plain_pytorch_denoise.py", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        ("plain_pytorch_denoise.py", ["--size", "2048"], "--size 2048 is larger than the smallest training image"),
    ],
)
def test_example_mistakes_end_with_one_line_and_status_2(
    name: str, argv: list[str], message: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert _run_example(name, [*argv, "--out", str(tmp_path / "out")], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{name}: error: ") and message in err[-1], err[-1]
    assert not (tmp_path / "out").exists()


def _run_demo(name: str, argv: list[str], monkeypatch) -> dict:
    """Run one of deepinv's stock demos (``examples/NAME``) in this process; its JSON summary."""
    pytest.importorskip("deepinv")
    pytest.importorskip("h5py")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return json.loads(Path(argv[argv.index("--json") + 1]).read_text())


def test_deepinv_demo_with_the_class_swapped_counts_the_stock_trainers_flops(tmp_path: Path, monkeypatch) -> None:
    stock = _run_demo(
        "deepinv_demo_training.py", ["--trainer", "stock", "--epochs", "1", "--json", str(tmp_path / "s.json")],
        monkeypatch,
    )  # fmt: skip
    swapped = _run_demo(
        "deepinv_demo_training.py", ["--epochs", "1", "--budget", "steps", "--json", str(tmp_path / "m.json")],
        monkeypatch,
    )  # fmt: skip
    assert stock["steps"] == swapped["steps"] == 40  # 40 training images, batch 1, one epoch
    assert swapped["baseline_flops"] == pytest.approx(stock["flops"], rel=1e-9)  # one way of counting
    # Batches of 1: every stage takes one sample at its level (no equal coarse terms), 23/11/6 steps.
    f0 = stock["flops"] / 40
    assert swapped["flops"] == pytest.approx(6 * f0 + 11 * f0 / 4 + 23 * f0 / 16, rel=0.02)
    assert stock["psnr"] > 15 and swapped["psnr"] > 10
