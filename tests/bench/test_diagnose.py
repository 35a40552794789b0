"""``mge-bench diagnose``: the three kinds of input, the verdict on a useless coarse level, the JSON, the errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from mge_bench.cli import main
from mge_bench.diagnose import DIAGNOSIS_SCHEMA, run_diagnosis, validate_diagnosis
from mge_bench.probes import probe_of
from torch import nn

from mge_plugins import restrict


def smooth(n: int = 16, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Piecewise-constant images: area restriction is exact on them down to 4x4 blocks."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size // 4, size // 4, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)


class _Reconstructor(nn.Module):
    """``model(y, physics)`` for deepinv around a small CNN."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, y: torch.Tensor, physics: Any = None, **kwargs: Any) -> torch.Tensor:
        return self.net(y)


class _Clean(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def deepinv_trainer(cls: Any = None, **options: Any) -> Any:
    """A plain ``deepinv.Trainer`` (or ``cls``) denoising 16 px images with online measurements."""
    import deepinv as dinv

    cls = cls or dinv.Trainer
    model = _Reconstructor()
    loader = torch.utils.data.DataLoader(_Clean(smooth()), batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(
            model=model, physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01), train_dataloader=loader, epochs=1,
            online_measurements=True, save_path=None, verbose=False, show_progress_bar=False, device="cpu",
            **options,
        )  # fmt: skip


def monai_trainer(multiscale: bool = False, **options: Any) -> Any:
    """A MONAI ``SupervisedTrainer`` (or ``MultiscaleSupervisedTrainer``) on noisy/clean 16 px pairs."""
    from mge_monai import MultiscaleSupervisedTrainer
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedTrainer

    images = smooth()
    g = torch.Generator().manual_seed(1)
    data = [{"image": x + 0.1 * torch.randn(x.shape, generator=g), "label": x} for x in images]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    cls = MultiscaleSupervisedTrainer if multiscale else SupervisedTrainer
    return cls(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(Dataset(data), batch_size=8), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=nn.MSELoss(), **options,
    )  # fmt: skip


def build_deepinv() -> Any:
    """``--from`` target: a deepinv trainer."""
    return deepinv_trainer()


def build_monai() -> Any:
    """``--from`` target: a MONAI trainer."""
    return monai_trainer()


TRIPLE = """
import torch
from torch import nn
from mge_plugins import restrict

torch.manual_seed(0)
model = nn.Conv2d(1, 1, 3, padding=1)
g = torch.Generator().manual_seed(0)
clean = torch.rand(16, 1, 4, 4, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3)
USELESS = {useless}


def level_loss(batch, level):
    x = restrict(batch, level)
    if level > 0 and USELESS:  # the coarse problem has nothing to do with the fine one
        x = 3 * torch.randn(x.shape)
    return (model(x) - 0.5 * x).pow(2).mean()


def build():
    return model, level_loss, clean
"""


def write_triple(folder: Path, name: str = "triple_case", useless: bool = False) -> Path:
    path = folder / f"{name}.py"
    path.write_text(TRIPLE.format(useless=useless))
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    torch.set_num_threads(1)
    main(["diagnose", *args])
    return capsys.readouterr().out


def table_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("level")) + 2
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


# --- the three kinds of input -------------------------------------------------------------------


def test_a_deepinv_trainer_is_posed_as_multiscale_trainer_poses_it(capsys) -> None:
    out = run_cli(["--from", "tests.bench.test_diagnose:build_deepinv", "--samples", "4", "--repeats", "1"], capsys)
    assert "probe: Trainer with _Reconstructor on Denoising, coarse levels posed by physics" in out
    assert "loaded batch 8, 4 probe samples (200 bootstrap resamples), levels 0..2" in out
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["0", "1", "2"]
    units = {"k": 1e3, "M": 1e6}
    flops = [float(r[-5]) * units[r[-4][0]] for r in rows]  # "123 kFLOP": the FLOPs fall 4x per level
    assert flops[0] / flops[1] == pytest.approx(4, rel=0.01) and flops[1] / flops[2] == pytest.approx(4, rel=0.01)
    assert out.strip().splitlines()[-1].startswith(("MGE pays", "MGE does not pay here"))


def test_a_multiscale_trainer_brings_its_levels_and_the_weights_are_shared() -> None:
    from mge_deepinv import MultiscaleTrainer

    trainer = deepinv_trainer(MultiscaleTrainer, strategy="mge", levels=1, coarse_mode="restrict", fused=True)
    probe = probe_of(trainer)
    assert probe.level_loss(slice(0, 4), 1).dim() == 0 and trainer.fused  # the probe takes unfused scalar losses
    assert probe.levels == 1 and probe.kind == "deepinv" and probe.loaded == 8
    assert probe.model is trainer.model and "posed by restrict" in probe.description
    assert trainer.multiscale is None  # the trainer itself was not set up
    result = run_diagnosis(probe, samples=4, repeats=1)
    assert result.levels == 1 and len(result.diagnosis.candidates) == 2


def test_a_monai_supervised_trainer(capsys, tmp_path: Path) -> None:
    module = tmp_path / "monai_case.py"
    module.write_text(
        "from tests.bench.test_diagnose import monai_trainer\n\n\ndef build():\n    return monai_trainer()\n"
    )
    out = run_cli(["--from", f"{module}:build", "--samples", "4", "--repeats", "1", "--levels", "1"], capsys)
    assert "probe: SupervisedTrainer with Sequential and MSELoss, label posed by area" in out
    assert "levels 0..1" in out and len(table_rows(out)) == 2


def test_a_monai_multiscale_trainer_brings_its_levels() -> None:
    trainer = monai_trainer(multiscale=True, strategy="mge", levels=1)
    probe = probe_of(trainer)
    assert probe.kind == "monai" and probe.levels == 1 and probe.model is trainer.network
    # the probe's level 0 is the engine's own loss on the loaded batch
    batch = next(iter(trainer.data_loader))
    expected = nn.functional.mse_loss(trainer.network(batch["image"]), batch["label"])
    assert probe.level_loss(slice(0, 8), 0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_plain_triple_from_a_file(capsys, tmp_path: Path) -> None:
    path = write_triple(tmp_path)
    out = run_cli(["--from", f"{path}:build", "--samples", "8", "--repeats", "1"], capsys)
    assert "probe: Conv2d on a batch of 16" in out
    assert out.strip().splitlines()[-1].startswith("MGE pays: variance x cost")
    assert "x in 80 % of resamples of the 8 probe samples" in out


# --- the verdict --------------------------------------------------------------------------------


def _triple(useless: bool) -> tuple[nn.Module, Any, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Conv2d(1, 1, 3, padding=1)
    clean = smooth()

    def level_loss(batch: torch.Tensor, level: int) -> torch.Tensor:
        x = restrict(batch, level)
        if level > 0 and useless:
            x = 3 * torch.randn(x.shape)
        return (model(x) - 0.5 * x).pow(2).mean()

    return model, level_loss, clean


def test_the_verdict_flips_when_the_coarse_level_is_unrelated_noise() -> None:
    torch.set_num_threads(1)
    good = run_diagnosis(probe_of(_triple(useless=False), levels=2), samples=8, repeats=1)
    bad = run_diagnosis(probe_of(_triple(useless=True), levels=2), samples=8, repeats=1)
    assert good.diagnosis.pays and good.diagnosis.best.levels >= 1 and good.diagnosis.best.variance_ratio < 0.8
    assert not bad.diagnosis.pays and bad.diagnosis.best.levels == 0  # K = 0: plain SGD
    assert bad.diagnosis.best.batch_sizes == (16,) and bad.diagnosis.best.variance_ratio == pytest.approx(1.0)
    # the difference to an unrelated level varies more than the fine gradient itself
    assert bad.diagnosis.measured.difference[0] > bad.diagnosis.measured.plain[0]
    assert bad.diagnosis.best_multiscale.variance_ratio > 1
    from mge_bench.diagnose import verdict

    assert verdict(good).startswith("MGE pays") and "allocation='adaptive'" in verdict(good)
    assert verdict(bad).startswith("MGE does not pay here (") and "strategy='single'" in verdict(bad)


def test_the_negative_control_on_the_command_line(capsys, tmp_path: Path) -> None:
    path = write_triple(tmp_path, "useless_case", useless=True)
    out = run_cli(["--from", f"{path}:build", "--repeats", "1", "--json", str(tmp_path / "d.json")], capsys)
    assert out.strip().splitlines()[-3].startswith("MGE does not pay here (")
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["pays"] is False and data["allocation"]["levels"] == 0 and data["allocation"]["batch_sizes"] == [16]
    assert [row["batch_size"] for row in data["per_level"]] == [16, None, None]


# --- the JSON and the bundled tasks -------------------------------------------------------------


def test_json_follows_the_schema_and_the_validator_can_fail(capsys, tmp_path: Path) -> None:
    path = tmp_path / "out" / "diagnosis.json"
    out = run_cli(
        ["--task", "denoise", "--size", "32", "--batch-size", "4", "--samples", "2", "--repeats", "1",
         "--json", str(path)],
        capsys,
    )  # fmt: skip
    assert f"wrote {path}" in out
    data = json.loads(path.read_text())
    validate_diagnosis(data)
    assert set(data) == set(DIAGNOSIS_SCHEMA)
    assert data["source"]["kind"] == "task" and data["loaded"] == 4 and data["samples"] == 2
    assert data["command"].startswith("mge-bench diagnose --task denoise")
    assert data["cost_basis"] == "flops" and data["other_basis"]["cost_basis"] == "seconds"
    assert data["verdict"] == out.strip().splitlines()[-3]  # then a blank line and "wrote ..."
    assert len(data["per_level"]) == data["levels"] + 1 == 3
    assert data["per_level"][-1]["difference_variance"] is None
    assert data["machine"]["load"]["cores"] >= 1 and isinstance(data["machine"]["load"]["quiet"], bool)
    best = data["allocation"]
    assert min(data["candidates"], key=lambda a: a["variance"] * a["cost"]) == best
    broken = dict(data)
    del broken["verdict"]
    with pytest.raises(ValueError, match="missing key 'verdict'"):
        validate_diagnosis(broken)
    with pytest.raises(ValueError, match=r"per_level\[0\].flops: expected"):
        validate_diagnosis({**data, "per_level": [{**data["per_level"][0], "flops": "many"}, *data["per_level"][1:]]})


def test_a_bundled_task_reduces_the_levels_the_images_cannot_take(capsys) -> None:
    out = run_cli(
        ["--task", "denoise", "--size", "20", "--batch-size", "4", "--samples", "2", "--repeats", "1", "--levels", "3"],
        capsys,
    )
    assert "levels 0..2 (not 3: spatial size 20 (axis H) is not divisible by" in out and len(table_rows(out)) == 3


def test_a_checkpoint_of_mge_train_is_loaded(capsys, tmp_path: Path) -> None:
    from mge_deepinv.cli import main as train

    train(["denoise", "--steps", "2", "--evals", "1", "--size", "32", "--no-baseline", "--strategy", "single",
           "--out", str(tmp_path)])  # fmt: skip
    capsys.readouterr()
    args = ["--task", "denoise", "--checkpoint", str(tmp_path / "denoise"), "--checkpoint-strategy", "single",
            "--size", "32", "--batch-size", "4", "--samples", "2", "--repeats", "1"]  # fmt: skip
    out = run_cli(args, capsys)
    assert f"trained weights of {tmp_path / 'denoise'}" in out
    with pytest.raises(SystemExit):
        run_cli([*args, "--network", "meshfree"], capsys)
    assert "but the checkpoint holds a dncnn network; drop --network" in capsys.readouterr().err


# --- errors -------------------------------------------------------------------------------------


def _error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        run_cli(args, capsys)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0].split("error: ", 1)[1]


def test_a_bad_from_gives_one_clear_line(capsys, tmp_path: Path) -> None:
    assert "expected module:function or path/to/file.py:function" in _error(["--from", "nocolon"], capsys)
    assert "no module named 'no_such_module_xyz'" in _error(["--from", "no_such_module_xyz:build"], capsys)
    assert "no such file" in _error(["--from", str(tmp_path / "missing.py") + ":build"], capsys)
    path = write_triple(tmp_path, "errors_case")
    line = _error(["--from", f"{path}:biuld"], capsys)
    assert line.endswith("has no 'biuld' (it defines: build, level_loss)")
    (tmp_path / "wrong.py").write_text("def build():\n    return [1, 2]\n\n\ndef boom():\n    return 1 / 0\n")
    line = _error(["--from", f"{tmp_path / 'wrong.py'}:build"], capsys)
    assert "got a 2-item list; return a deepinv.Trainer, a MONAI SupervisedTrainer or a (model, level_loss" in line
    line = _error(["--from", f"{tmp_path / 'wrong.py'}:boom"], capsys)
    assert "boom() raised ZeroDivisionError: division by zero (at wrong.py:6)" in line
    (tmp_path / "broken.py").write_text("import no_such_dependency_xyz\n")
    line = _error(["--from", f"{tmp_path / 'broken.py'}:build"], capsys)
    assert "importing" in line and "No module named 'no_such_dependency_xyz'" in line and "(at broken.py:1)" in line


def test_errors_of_the_inputs_are_one_line(capsys, tmp_path: Path) -> None:
    (tmp_path / "scalar.py").write_text(
        "import torch\nmodel = torch.nn.Conv2d(1, 1, 1)\nx = torch.rand(4, 1, 8, 8)\n\n\n"
        "def build():\n    return model, lambda b, k: model(b), x\n"
    )
    line = _error(["--from", f"{tmp_path / 'scalar.py'}:build", "--levels", "0"], capsys)
    assert "returned a tensor of shape (1, 1, 8, 8); it must return the batch's mean loss" in line
    line = _error(["--from", "tests.bench.test_diagnose:build_deepinv", "--size", "32"], capsys)
    assert line == "--size applies to --task only; with --from, your function builds the model"
    line = _error(["--from", "tests.bench.test_diagnose:build_deepinv", "--size", "32", "--channels", "3"], capsys)
    assert line.startswith("--channels, --size apply to --task only")


def test_help_says_that_from_runs_the_code(capsys) -> None:
    with pytest.raises(SystemExit):
        run_cli(["--help"], capsys)
    text = capsys.readouterr().out
    assert "IMPORTS AND RUNS" in text and "only at code you trust" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "mge-bench diagnose" in capsys.readouterr().out


def test_progress_shows_when_it_takes_long(capsys) -> None:
    probe = probe_of(_triple(useless=False), levels=1)
    run_diagnosis(probe, samples=4, repeats=1, progress_after=0.0)
    err = capsys.readouterr().err
    assert "mge-bench diagnose: step" in err and "phase" in err
    run_diagnosis(probe, samples=4, repeats=1)  # a second or so: no progress
    assert capsys.readouterr().err == ""


def test_the_coarse_problem_options_change_the_coarse_levels_only(capsys, tmp_path: Path) -> None:
    common = ["--task", "denoise", "--size", "32", "--batch-size", "4", "--samples", "4", "--repeats", "1",
              "--levels", "1"]  # fmt: skip
    results = {}
    for name, extra in (("default", []), ("restrict", ["--coarse-noise", "restrict"]),
                        ("nearest", ["--restriction", "nearest"])):  # fmt: skip
        path = tmp_path / f"{name}.json"
        run_cli([*common, *extra, "--json", str(path)], capsys)
        results[name] = json.loads(path.read_text())["per_level"]
    for name in ("restrict", "nearest"):
        assert results[name][0]["variance"] == pytest.approx(results["default"][0]["variance"], rel=1e-9)
        assert results[name][1]["variance"] != pytest.approx(results["default"][1]["variance"], rel=1e-3)
