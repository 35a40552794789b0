"""The networks of ``mge-train --network``, the paper's ``--mode`` names and its run naming."""

from __future__ import annotations

import csv
import io
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepinv")
pytest.importorskip("skimage")

from mge_deepinv import MultiscaleTrainer, coarsen_physics
from mge_deepinv.cli import build_parser, load_network, main
from mge_deepinv.networks import (
    ESPCN,
    NETWORKS,
    TimeResNet,
    TimestepInput,
    TimeUNet,
    detect_network,
    network_problem,
)
from mge_deepinv.paper import PAPER_MODES, paper_mode, paper_run_name
from mge_deepinv.tasks import TASKS, make_model

from mge_plugins import available_strategies, mge_backward, restrict
from mge_plugins.meshfree import at_level

from .conftest import make_trainer, smooth_images

TINY = ["--steps", "4", "--evals", "1", "--size", "32", "--batch-size", "8", "--no-baseline"]


def _task(network: str) -> str:
    return "sr" if network == "espcn" else "denoise"


def _model(network: str) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_model(1, network=network)


def _run(argv: list[str], out: Path) -> str:
    stdout = io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(io.StringIO()):
        main([*argv, "--out", str(out)])
    return stdout.getvalue()


@pytest.mark.parametrize("network", list(NETWORKS))
def test_every_network_runs_at_levels_0_to_2_in_train_mode_and_every_weight_gets_a_gradient(network: str) -> None:
    model = _model(network).train()
    physics = TASKS[_task(network)].physics(32, 1, "cpu")
    x = smooth_images(4, 32)
    total = 0.0
    for level in range(3):
        physics_k, x_k = coarsen_physics(physics, level), restrict(x, level)
        with at_level(level):
            out = model(physics_k(x_k), physics_k)
        assert out.shape == x_k.shape, level
        total = total + (out - x_k).pow(2).mean()
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_the_new_networks_have_no_batchnorm() -> None:
    for network in NETWORKS:
        kinds = {type(m) for m in _model(network).modules()}
        assert not any(issubclass(k, torch.nn.modules.batchnorm._BatchNorm) for k in kinds), network


def _record(module: torch.nn.Module, calls: list) -> None:
    """Record the timesteps ``module`` (a network's timestep embedding) is called with, in train mode only."""
    module.register_forward_hook(lambda m, args, out: calls.append(args[0].detach().clone()) if m.training else None)


@pytest.mark.parametrize("cls", [TimeUNet, TimeResNet])
def test_both_levels_of_a_term_see_the_same_timestep_and_the_same_fine_noise(cls) -> None:
    torch.manual_seed(0)
    net = cls(1).train()
    timesteps: list[torch.Tensor] = []
    inputs: list[torch.Tensor] = []
    _record(net.embed, timesteps)
    first = net.inc if cls is TimeUNet else net.open
    first.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach().clone()))
    zeros = torch.zeros(8, 1, 32, 32)  # the input x_t is then t * noise: its coupling is visible

    def level_loss(batch: torch.Tensor, level: int) -> torch.Tensor:
        batch = restrict(batch, level)
        return (net(batch) - batch).pow(2).mean()

    mge_backward(level_loss, [zeros[:2], zeros[:4], zeros[:8]])  # passes (term, level): 00 01 11 12 22
    assert len(timesteps) == 5
    assert torch.equal(timesteps[0], timesteps[1]) and torch.equal(timesteps[2], timesteps[3])
    assert not torch.equal(timesteps[1], timesteps[2][:2])  # each term its own draw
    assert all(((t >= 0) & (t <= 0.1)).all() for t in timesteps) and timesteps[4].unique().numel() == 8
    for fine, coarse in ((inputs[0], inputs[1]), (inputs[2], inputs[3])):  # restricted fine noise, unit std
        torch.testing.assert_close(2 * restrict(fine, 1), coarse, rtol=0, atol=1e-6)

    timesteps.clear()
    mge_backward(level_loss, [zeros[:2], zeros[:8]], coupling=False)  # negative control
    assert not torch.equal(timesteps[0], timesteps[1])


def test_the_trainer_gives_both_levels_of_every_term_the_same_timestep() -> None:
    model = _model("resnet")
    timesteps: list[torch.Tensor] = []
    _record(model.backbone_net.embed, timesteps)
    trainer = make_trainer(MultiscaleTrainer, model=model, images=smooth_images(32, 32), epochs=1,
                           strategy="mge", levels=2)  # fmt: skip
    trainer.train()  # 2 steps of 16: terms of 4, 8 and 16 samples
    last = timesteps[-5:]  # the second step's passes: (term, level) 00 01 11 12 22
    assert [len(t) for t in last] == [4, 4, 8, 8, 16]
    assert torch.equal(last[0], last[1]) and torch.equal(last[2], last[3])
    assert not torch.equal(last[1], last[2][:4])


def test_evaluation_uses_t_0_and_the_input_as_it_is() -> None:
    net = TimeResNet(1)
    x = torch.rand(3, 1, 16, 16)
    inputs: list[torch.Tensor] = []
    net.open.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    net.eval()
    assert torch.equal(net(x), net(x)) and torch.equal(inputs[0], x)
    assert torch.equal(TimestepInput().eval()(x)[1], torch.zeros(3))
    net.train()
    assert not torch.equal(net(x), net(x))
    assert torch.equal(net(x, t=torch.zeros(3)), net.eval()(x))  # an explicit t: the input is not touched
    with pytest.raises(ValueError, match=r"t_max must lie in \[0, 1\], got 2"):
        TimestepInput(2)


def test_the_unet_says_which_level_breaks() -> None:
    net = TimeUNet(1, depth=2)
    with at_level(2), pytest.raises(ValueError, match=r"input at level 2 is 6x6 px; use fine sides divisible by 16"):
        net(torch.rand(1, 1, 6, 6))
    trainer = make_trainer(MultiscaleTrainer, model=_model("unet"), images=smooth_images(16, 24), epochs=1,
                           strategy="mge", levels=2)  # fmt: skip
    with pytest.raises(ValueError, match=r"fails at level 2 \(input \(6, 6\), fine \(24, 24\)\).*TimeUNet's 2 down"):
        trainer.train()


def test_espcn_upsamples_by_its_factor() -> None:
    y = torch.rand(2, 3, 8, 12)
    assert ESPCN(3, factor=2)(y).shape == (2, 3, 16, 24) and ESPCN(3, factor=3, depth=2)(y).shape == (2, 3, 24, 36)
    net = ESPCN(1)  # with the last convolution at zero it is the bilinear upsampling
    torch.nn.init.zeros_(net.features[-2].weight)
    torch.nn.init.zeros_(net.features[-2].bias)
    up = torch.nn.functional.interpolate(y[:, :1], scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(net(y[:, :1]), up)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_load_network_reads_every_network_back(network: str, tmp_path: Path) -> None:
    model = make_model(3, network=network)
    keys = [spec.key for spec in NETWORKS.values() if f"backbone_net.{spec.key}" in model.state_dict()]
    assert keys == [NETWORKS[network].key]  # recognised by a key no other network has
    assert detect_network(model.state_dict()) == (network, 3)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckp_best.pth.tar")
    loaded = load_network(tmp_path / "ckp_best.pth.tar")
    assert type(loaded.backbone_net) is type(model.backbone_net) and loaded.mode == model.mode
    assert not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_weights_of_another_network_are_refused() -> None:
    with pytest.raises(ValueError, match="none of mge-train's networks"):
        detect_network({"backbone_net.conv.weight": torch.zeros(1, 1, 3, 3)})


@pytest.mark.parametrize(("mode", "strategy"), [("single", "single"), ("multiscale", "mge"),
                                                ("fullmultiscale", "full-multiscale")])  # fmt: skip
def test_the_papers_mode_names_are_strategies(mode: str, strategy: str) -> None:
    args = build_parser().parse_args(["denoise", "--mode", mode])
    assert args.strategy == strategy and args.mode == mode and strategy in available_strategies()
    assert PAPER_MODES[mode] == strategy and paper_mode(strategy) == mode
    assert build_parser().parse_args(["denoise"]).strategy == "full-multiscale"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["denoise", "--network", "espcn"], "--network espcn maps a low-resolution measurement to a larger image, so "
         "it trains only sr; use one of dncnn, meshfree, unet, resnet, drunet, dinv-unet for denoise"),
        (["denoise", "--network", "unet", "--size", "40"], "--network unet needs sides divisible by 4 at every level, "
         "but --size 40 gives 10 px at level 2; use --size 32 or fewer --levels"),
        (["denoise", "--mode", "single", "--strategy", "mge"], "argument --strategy: not allowed with argument --mode"),
        (["denoise", "--mode", "mge"], "argument --mode: invalid choice: 'mge'"),
        (["denoise", "--network", "vgg"], "argument --network: invalid choice: 'vgg'"),
        (["denoise", "--naming", "time"], "argument --naming: invalid choice: 'time'"),
    ],
)  # fmt: skip
def test_refused_combinations_end_with_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mge-train: error: ") and message in last
    assert not (tmp_path / "results").exists()


def test_network_problem_passes_what_works() -> None:
    assert network_problem("espcn", "sr", 32, 2) is None and network_problem("unet", "deblur", 48, 2) is None
    assert network_problem("drunet", "inpaint", 36, 2) is None  # it pads


def test_the_papers_run_names() -> None:
    assert paper_run_name("denoise", "cifar10", "unet", "mge", 1) == "denoising_cifar10_unet_multiscale_run1"
    name = paper_run_name("sr", "my data", "espcn", "full-multiscale", 0)
    assert name == "superresolution_my-data_espcn_fullmultiscale_run0"
    assert paper_run_name("inpaint", "celeba", "resnet", "progressive-resizing", 2) == (
        "inpainting_celeba_resnet_progressive-resizing_run2"
    )


def _tiny_run(network: str, tmp_path: Path) -> Path:
    printed = _run([_task(network), *TINY, "--network", network], tmp_path)
    (run,) = (tmp_path / _task(network)).iterdir()
    assert f"wrote {run}/" in printed
    return run


def _check_loaded(run: Path, network: str, strategy: str = "full-multiscale") -> None:
    model = load_network(run, strategy)
    assert type(model.backbone_net) is type(_model(network).backbone_net) and not model.training
    physics = TASKS[_task(network)].physics(32, 1, "cpu")
    x = smooth_images(2, 32)
    with torch.no_grad():
        assert model(physics(x), physics).shape == x.shape


@pytest.mark.parametrize("network", ["unet", "espcn", "drunet", "dinv-unet"])
def test_mge_train_trains_a_new_network_and_loads_it_back(network: str, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pads or resizes internally")  # DRUNet pads coarse levels
        run = _tiny_run(network, tmp_path)
    row = next(csv.DictReader(open(run / "summary.csv")))
    assert row["strategy"] == "full-multiscale" and float(row["psnr"]) > 5
    _check_loaded(run, network)


def test_mge_train_names_runs_as_the_paper_does(tmp_path: Path) -> None:
    argv = ["denoise", *TINY, "--network", "resnet", "--mode", "multiscale", "--naming", "paper"]
    _run(argv, tmp_path)
    _run(argv, tmp_path)  # a rerun keeps the first
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["denoising_skimage_resnet_multiscale_run0", "denoising_skimage_resnet_multiscale_run0-2"]
    run = tmp_path / names[0]
    assert (run / "mge" / "ckp_best.pth.tar").is_file() and (run / "summary.csv").is_file()
    _check_loaded(run, "resnet", "mge")
