from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("deepinv")
pytest.importorskip("skimage")

from mge_deepinv import cli
from mge_deepinv.cli import build_parser, check_args, load_network, main, new_run_folder
from mge_deepinv.tasks import TASKS
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--steps", "8", "--evals", "2", "--size", "32", "--batch-size", "16", "--budget", "steps"]  # counted steps


def _run(argv: list[str], out: Path) -> tuple[str, str]:
    """``mge-train ARGV --out OUT``; returns what it printed on stdout and on stderr (not a terminal)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        main([*argv, "--out", str(out)])
    return stdout.getvalue(), stderr.getvalue()


def _rows(run: Path) -> dict[str, dict[str, str]]:
    return {r["strategy"]: r for r in csv.DictReader(open(run / "summary.csv"))}


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("mge-train")
    printed, progress = _run(["denoise", *TINY], out)
    (run,) = (out / "denoise").iterdir()
    return SimpleNamespace(out=out, run=run, printed=printed, progress=progress)


def _write_images(folder: Path, shapes: list[tuple[int, int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (channels, height, width) in enumerate(shapes):
        pixels = torch.randint(0, 255, (height, width, channels), dtype=torch.uint8, generator=torch.Generator())
        Image.fromarray(pixels.squeeze(-1).numpy()).save(folder / f"image_{i}.png")
    return folder


def test_mge_train_writes_table_logs_figure_and_checkpoints(denoise_run) -> None:
    assert "FLOP saving" in denoise_run.printed and "full-multiscale" in denoise_run.printed
    run = denoise_run.run
    rows = _rows(run)
    assert set(rows) == {"full-multiscale", "single"}
    # 8 steps of 16 fine crops for single-scale; Full-Multiscale (16 | 8, 16 | 4, 8, 16 over 5/2/1 steps).
    assert float(rows["single"]["work_units"]) == pytest.approx(128)
    assert float(rows["full-multiscale"]["work_units"]) == pytest.approx(5 + 2 * (8 * 0.3125 + 1) + 8.5)
    assert float(rows["full-multiscale"]["flop_saving"]) > 4
    history = list(csv.DictReader(open(run / "history.csv")))
    assert [h["strategy"] for h in history] == ["full-multiscale"] * 2 + ["single"] * 2
    assert all(float(h["PSNR"]) > 5 for h in history)
    assert (run / "figure.png").stat().st_size > 10_000
    report = (run / "report.md").read_text()  # the table users open, with the same figures as summary.csv
    saving = f"{float(rows['full-multiscale']['flop_saving']):.2f}x"
    assert (
        report.startswith("# mge-train denoise")
        and f"| full-multiscale | {float(rows['full-multiscale']['psnr']):.2f} |" in report
    )
    assert saving in report and "![quality against FLOPs and seconds" in report
    assert ("do not measure the method" in report) != ("the seconds are a measurement" in report)
    assert (run / "single" / "ckp_best.pth.tar").is_file() and (run / "full-multiscale" / "ckp_best.pth.tar").is_file()
    assert f"wrote {run}/" in denoise_run.printed


def test_the_default_budget_spends_a_third_of_the_single_scale_compute_and_evaluates_the_last_step(
    tmp_path: Path,
) -> None:
    from mge_plugins.host_step import DEFAULT_BUDGET

    printed, _ = _run(["denoise", *TINY[:-2], "--steps", "40"], tmp_path)  # no --budget: the default
    (run,) = (tmp_path / "denoise").iterdir()
    rows = _rows(run)
    fms, single = rows["full-multiscale"], rows["single"]
    assert int(single["steps"]) == 40 and int(fms["steps"]) > 40  # more, cheaper steps
    assert float(fms["flops"]) / float(single["flops"]) == pytest.approx(DEFAULT_BUDGET, rel=0.05)
    assert f"budget={DEFAULT_BUDGET!r}: full-multiscale runs {fms['steps']} steps" in printed
    history = [h for h in csv.DictReader(open(run / "history.csv")) if h["strategy"] == "full-multiscale"]
    assert int(history[-1]["step"]) == int(fms["steps"])  # the budget ends inside an epoch: evaluated there too
    assert float(history[-1]["PSNR"]) == pytest.approx(float(fms["psnr"]), abs=1e-3)


def test_super_resolution_runs(tmp_path: Path) -> None:
    _run(["sr", *TINY, "--no-baseline"], tmp_path)
    (run,) = (tmp_path / "sr").iterdir()
    assert set(_rows(run)) == {"full-multiscale"}


def test_the_curves_end_on_the_tables_figures(denoise_run) -> None:
    """History and table are measured on the same held-out crops with the same noise."""
    rows = _rows(denoise_run.run)
    history = list(csv.DictReader(open(denoise_run.run / "history.csv")))
    for strategy, row in rows.items():
        last = [h for h in history if h["strategy"] == strategy][-1]
        assert float(last["PSNR"]) == pytest.approx(float(row["psnr"]), abs=1e-3)
        assert float(last["SSIM"]) == pytest.approx(float(row["ssim"]), abs=1e-4)


def test_progress_is_printed_as_plain_lines_in_a_log(denoise_run) -> None:
    log = denoise_run.progress
    assert "\r" not in log
    assert "denoise full-multiscale: step 1/8 (12%), stage 1/3, level 2" in log
    assert "stage 3/3, level 0" in log and "saving so far" in log and "left" in log
    assert re.search(r"denoise single: step 8/8 \(100%\), level 0, .* elapsed, done", log)
    assert "denoise full-multiscale: evaluation 2/2 after step 8: PSNR" in log


def test_run_folders_have_no_colons_and_a_rerun_gets_its_own(denoise_run, tmp_path: Path) -> None:
    assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", denoise_run.run.name)
    first, second = new_run_folder(tmp_path / "denoise"), new_run_folder(tmp_path / "denoise")
    assert first != second and first.is_dir() and second.is_dir()
    assert not any(":" in p.name for p in (first, second, *denoise_run.run.rglob("*")))
    assert sorted(p.name for p in (tmp_path / "denoise").iterdir()) == [first.name, second.name]


def test_what_was_loaded_and_what_is_evaluated_is_printed(denoise_run, tmp_path: Path) -> None:
    assert "training on random 32x32 crops of 7 scikit-image photographs" in denoise_run.printed
    assert "evaluating on 32 fixed 32x32 crops of camera and moon" in denoise_run.printed
    data = _write_images(tmp_path / "rgb", [(3, 40, 48), (3, 64, 40), (3, 50, 50)])
    loaded = check_args(build_parser().parse_args(["denoise", "--size", "32", "--data", str(data)])).loaded
    assert f"3 images from {data} (40x48 to 64x40 px" in loaded[0]
    assert "stored as RGB, converted to grayscale; --channels 3 keeps the colour" in loaded[0]
    assert "not --data" in loaded[1]
    colour = check_args(build_parser().parse_args(["denoise", "--size", "32", "--channels", "3", "--data", str(data)]))
    assert "stored as RGB)" in colour.loaded[0] and "converted" not in colour.loaded[0]


def test_without_a_baseline_the_printed_and_written_saving_agree(tmp_path: Path) -> None:
    printed, _ = _run(["denoise", *TINY, "--no-baseline"], tmp_path)
    (run,) = (tmp_path / "denoise").iterdir()
    row = _rows(run)["full-multiscale"]
    line = next(line for line in printed.splitlines() if line.startswith("full-multiscale "))
    assert f"{float(row['flop_saving']):.2f}x*" in line and line.endswith("n/a")
    assert float(row["flop_saving"]) > 4  # the estimate, not 1.00x
    assert row["time_saving"] == "" and row["saving_basis"].startswith("estimated")
    assert "saving" not in row  # the work-unit ratio that disagreed with the table is not written
    assert "* estimated: no single-scale run" in printed


def test_with_a_baseline_the_savings_are_measured(denoise_run) -> None:
    rows = _rows(denoise_run.run)
    single = next(line for line in denoise_run.printed.splitlines() if line.startswith("single "))
    assert single.endswith("1.00x        1.00x") and "*" not in single
    assert float(rows["single"]["flop_saving"]) == 1.0 and rows["single"]["saving_basis"].startswith("measured")
    fms = next(line for line in denoise_run.printed.splitlines() if line.startswith("full-multiscale "))
    assert f"{float(rows['full-multiscale']['flop_saving']):.2f}x" in fms


def test_the_figure_puts_psnr_on_the_image_panels(monkeypatch, tmp_path: Path) -> None:
    titles: list[str] = []
    monkeypatch.setattr(cli, "show_image", lambda ax, image, title: titles.append(title))
    clean = torch.rand(2, 1, 16, 16)
    history = [{"flops": 1.0, "seconds": 1.0, "PSNR": 20.0}]
    results = {s: {"history": history, "y": clean + 0.1, "x_net": clean * 0.9} for s in ("full-multiscale", "single")}
    cli._write_figure("denoise", results, clean, tmp_path / "figure.png")
    assert [t.split("\n")[0] for t in titles] == ["measurement", "full-multiscale", "single", "ground truth"]
    assert all(re.fullmatch(r".+\n\d+\.\d\d dB", t) for t in titles[:3]), titles
    assert (tmp_path / "figure.png").is_file()


def test_a_trained_network_loads_back(denoise_run, tmp_path: Path) -> None:
    model = load_network(denoise_run.out / "denoise")  # the task folder: its latest run
    saved = torch.load(denoise_run.run / "full-multiscale" / "ckp_best.pth.tar", weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert not model.training
    by_file = load_network(denoise_run.run / "single" / "ckp_best.pth.tar").state_dict()
    by_run = load_network(denoise_run.run, "single").state_dict()
    assert all(torch.equal(by_file[k], v) for k, v in by_run.items())
    assert not torch.equal(by_run["backbone_net.in_conv.weight"], model.state_dict()["backbone_net.in_conv.weight"])
    physics = TASKS["denoise"].physics(32, 1, "cpu")
    x = torch.rand(1, 1, 32, 32)
    assert model(physics(x), physics).shape == x.shape
    with pytest.raises(FileNotFoundError, match=r"no full-multiscale/ckp_best\.pth\.tar"):
        load_network(tmp_path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cuda"], "--device cuda: PyTorch sees no CUDA GPU on this machine"),
        (["--device", "gpu"], "--device 'gpu' is not a PyTorch device"),
        (["--data", "{tmp}/missing"], "missing: no such folder"),
        (["--data", "{tmp}/empty"], "no image files (.png"),
        (["--data", "{tmp}/small", "--size", "64"], "--size 64 is larger than --data"),
        (["--evals", "0"], "argument --evals: must be at least 1, got 0"),
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--size", "0"], "argument --size: must be at least 1, got 0"),
        (["--size", "34"], "--size 34 is not divisible by 2**levels = 4; use e.g. --size 32"),
        (["--size", "1024"], "--size 1024 is larger than the bundled photographs"),
        (["--strategy", "fms"], "--strategy fms: unknown; use one of"),
        (["--evals", "9", "--steps", "8"], "--evals 9 is more than --steps 8"),
        (["--steps", "2", "--evals", "1"], "too few to give each of 3 stages"),
        (["--budget", "half"], "'half' is not a budget: use steps, compute, or a fraction"),
        (["--budget", "0"], "'0' is not a budget"),
        (["--fused", "--coarse-mode", "physics"], "--fused needs every level posed from one fine measurement"),
    ],
)
def test_mistakes_end_with_one_line_and_status_2_before_anything_is_written(
    argv: list[str], message: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "empty").mkdir()
    _write_images(tmp_path / "small", [(3, 40, 50)])
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(["denoise", *argv, "--out", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("mge-train: error: ")
    assert message in err.strip().splitlines()[-1]
    assert not (tmp_path / "results").exists()


def test_a_valid_device_passes_the_check(monkeypatch) -> None:
    assert cli.device_problem("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli.device_problem("cuda") is None
    assert "has 1 CUDA device(s)" in cli.device_problem("cuda:1")


def _help(parser) -> str:
    return parser.format_help()


def test_help_shows_the_defaults_in_plain_text() -> None:
    text = _help(build_parser())
    assert "``" not in text and "`" not in text
    for option, default in [("--steps", "400"), ("--evals", "4"), ("--size", "64"), ("--batch-size", "16"),
                            ("--lr", "0.001"), ("--out", "results"), ("--device", "cpu"), ("--seed", "0"),
                            ("--strategy", "full-multiscale")]:  # fmt: skip
        entry = re.search(rf"\n  {option}\b.*?(?=\n  -|\Z)", text, flags=re.S)
        assert entry and f"(default: {default})" in " ".join(entry.group().split()), option


@pytest.mark.parametrize("name", ["denoise", "deblur", "inpaint", "sr"])
def test_deepinv_examples_run(tmp_path: Path, name: str) -> None:
    cmd = [
        sys.executable, str(ROOT / "examples" / f"deepinv_{name}.py"), "--epochs", "1", "--steps-per-epoch", "4",
        "--size", "32", "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval PSNR per epoch" in result.stdout and "'saving'" in result.stdout


def test_mge_train_trains_a_mesh_free_network_and_loads_it_back(tmp_path: Path) -> None:
    from mge_plugins.meshfree import MeshFreeDenoiser

    _run(["denoise", *TINY, "--network", "meshfree", "--no-baseline"], tmp_path)
    model = load_network(tmp_path / "denoise")
    assert isinstance(model.backbone_net, MeshFreeDenoiser) and not model.training
    physics = TASKS["denoise"].physics(32, 1, "cpu")
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert model(physics(x), physics).shape == x.shape
    with pytest.raises(SystemExit):
        build_parser().parse_args(["denoise", "--network", "vgg"])
