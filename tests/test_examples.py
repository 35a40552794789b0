from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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


def test_example_rejects_an_empty_data_folder(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "examples" / "plain_pytorch_denoise.py"), "--data", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no .png/.jpg images in" in result.stderr
