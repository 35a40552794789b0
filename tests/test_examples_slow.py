from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_main_job_defaults_save_flops_at_a_bounded_quality_cost(tmp_path: Path) -> None:
    """The README's main job: Full-Multiscale spends > 5x fewer FLOPs within 1.5 dB of single-scale."""
    pytest.importorskip("skimage")
    cmd = [sys.executable, str(ROOT / "examples" / "plain_pytorch_denoise.py"), "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["strategy"]: r for r in json.loads((tmp_path / "summary.json").read_text())["results"]}
    single, fms = rows["single"], rows["full-multiscale"]
    assert single["psnr"] > 29.0  # the baseline learns: noisy input is 20 dB
    assert fms["flop_ratio_vs_single"] > 5
    assert fms["psnr"] > single["psnr"] - 1.5
