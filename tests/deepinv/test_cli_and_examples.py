from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepinv")
pytest.importorskip("skimage")

from mge_deepinv.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("task", ["denoise", "sr"])
def test_mge_train_writes_table_logs_figure_and_checkpoints(tmp_path: Path, task: str, capsys) -> None:
    main([task, "--steps", "8", "--evals", "2", "--size", "32", "--batch-size", "16", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "FLOP saving" in printed and "full-multiscale" in printed and "single" in printed
    out = tmp_path / task
    rows = {r["strategy"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert set(rows) == {"full-multiscale", "single"}
    # 8 steps of 16 fine crops for single-scale; Full-Multiscale (16 | 8, 16 | 4, 8, 16 over 5/2/1 steps).
    assert float(rows["single"]["work_units"]) == pytest.approx(128)
    assert float(rows["full-multiscale"]["work_units"]) == pytest.approx(5 + 2 * (8 * 0.3125 + 1) + 8.5)
    assert float(rows["full-multiscale"]["flop_saving"]) > 4
    history = list(csv.DictReader(open(out / "history.csv")))
    assert [h["strategy"] for h in history] == ["full-multiscale"] * 2 + ["single"] * 2
    assert all(float(h["PSNR"]) > 5 for h in history)
    assert (out / "figure.png").stat().st_size > 10_000
    assert list((out / "single").rglob("ckp_best.pth.tar"))


def test_mge_train_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--size 34 is not divisible by 2\\*\\*levels = 4"):
        main(["denoise", "--size", "34", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown strategy 'fms'"):
        main(["denoise", "--strategy", "fms", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no image files"):
        main(["denoise", "--data", str(tmp_path), "--out", str(tmp_path)])


@pytest.mark.parametrize("name", ["denoise", "deblur", "inpaint", "sr"])
def test_deepinv_examples_run(tmp_path: Path, name: str) -> None:
    cmd = [
        sys.executable, str(ROOT / "examples" / f"deepinv_{name}.py"), "--epochs", "1", "--steps-per-epoch", "4",
        "--size", "32", "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval PSNR per epoch" in result.stdout and "'saving'" in result.stdout
