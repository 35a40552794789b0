from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

monai = pytest.importorskip("monai")
pytest.importorskip("ignite")
pytest.importorskip("nibabel")

import mge_monai  # noqa: E402
from mge_monai.data import nifti_files, write_synthetic_volumes  # noqa: E402
from monai.bundle import ConfigWorkflow  # noqa: E402
from monai.transforms import LoadImage  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = Path(mge_monai.__file__).parent / "bundles" / "multiscale_reconstruction"
FAST = {"max_epochs": 1, "epoch_length": 4, "levels": 1}


def test_synthetic_volumes_load_through_load_image(tmp_path: Path) -> None:
    paths = write_synthetic_volumes(tmp_path, count=3, size=16)
    assert nifti_files(tmp_path) == paths
    volume = LoadImage(image_only=True)(str(paths[0]))
    assert volume.shape == (16, 16, 16) and 0 <= float(volume.min()) and float(volume.max()) <= 1
    images = write_synthetic_volumes(tmp_path / "2d", count=1, size=16, dims=2)
    assert LoadImage(image_only=True)(str(images[0])).shape == (16, 16)


def test_nifti_files_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        nifti_files(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=f"no NIfTI files .* in {tmp_path}"):
        nifti_files(tmp_path)


@pytest.mark.parametrize("configs", [["train.json"], ["train.json", "train_2d.json"]])
def test_bundle_passes_train_property_checks_and_trains(tmp_path: Path, configs: list[str]) -> None:
    workflow = ConfigWorkflow(
        config_file=[str(BUNDLE / "configs" / c) for c in configs], workflow_type="train",
        bundle_root=str(BUNDLE), dataset_dir=str(tmp_path / "data"), **FAST,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workflow.initialize()
        assert workflow.check_properties() == []
        workflow.run()
    trainer = workflow.trainer
    assert isinstance(trainer, mge_monai.MultiscaleSupervisedTrainer)
    assert trainer.cost.steps == 4 and trainer.cost.saving > 1
    assert len(nifti_files(tmp_path / "data")) == 12
    assert torch.isfinite(torch.tensor(trainer.state.output[0]["loss"]))


def test_bundle_runs_with_monais_bundle_runner(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "train.json"),
        "--bundle_root", str(BUNDLE), "--dataset_dir", str(tmp_path / "data"), "--max_epochs", "1",
        "--epoch_length", "4", "--strategy", "mge", "--levels", "1",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "multiscale cost:" in result.stdout and "'steps': 4" in result.stdout


@pytest.mark.parametrize(
    "script, task", [("monai_3d.py", "denoise"), ("monai_3d.py", "sr"), ("monai_retina_2d.py", "deblur")]
)
def test_monai_examples_run(tmp_path: Path, script: str, task: str) -> None:
    cmd = [
        sys.executable, str(ROOT / "examples" / script), "--task", task, "--epochs", "1",
        "--iterations-per-epoch", "4", "--levels", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    if script == "monai_retina_2d.py":
        cmd += ["--size", "64"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fine-level PSNR" in result.stdout
    assert "iteration 4/4 (100%), stage 2/2, level 0" in result.stderr  # progress, as plain lines: not a terminal
    assert "\r" not in result.stderr
    summary = json.loads(next(tmp_path.rglob(f"summary_{task}_full-multiscale.json")).read_text())
    assert summary["steps"] == 4 and summary["saving"] > 1 and summary["psnr"] > 0


def test_monai_3d_example_rejects_an_empty_data_folder(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "examples" / "monai_3d.py"), "--data", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no NIfTI files" in result.stderr
    assert "Traceback" not in result.stderr
