"""Full-Multiscale against a converged single-scale run in 3D, through MONAI's trainer.

Every run trains the same residual SegResNet from the same weights with
:class:`~mge_monai.MultiscaleSupervisedTrainer` on random crops of smoothed synthetic phantoms,
with its own cosine learning-rate schedule over its own length (MONAI's ``LrScheduleHandler``),
and is evaluated at full resolution on fixed noisy crops of held-out phantoms. The trainer builds
each level's input from the clean crop plus Gaussian noise of ``--sigma`` (``noise_sigma``). A
run is ``name:steps`` where ``name`` is one of:

- ``single``: fine-level training, batch ``--batch-size``;
- ``fms``: Full-Multiscale as shipped (halving split, terms cut from the loaded batch);
- ``ffms``: ``fms`` with fused passes (``fused=True``: one weighted pass per level, the noise
  drawn once per loaded batch at the fine grid).

    python scripts/monai_study.py --size 64 --levels 2 --runs single:200,single:400,ffms:400,ffms:800

Writes ``results.jsonl`` under ``--out`` in the format of ``scripts/fms_convergence.py``, so
``scripts/fms_report.py`` makes its tables (``--block t3d`` for BENCHMARKS.md). With
``--diagnose N``, every run is also diagnosed as ``mge-bench diagnose`` does (per-level gradient
variances and costs, the allocation, the verdict) on one loaded batch of ``N`` training crops,
at its initial and at its trained weights: ``diagnose/NAME_STEPS_initial.json`` and
``..._trained.json`` under ``--out``, in ``mge-bench diagnose --json``'s format.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from mge_monai import MultiscaleSupervisedTrainer
from mge_monai.data import write_synthetic_volumes
from monai.data import CacheDataset, DataLoader
from monai.handlers import LrScheduleHandler
from monai.metrics import PSNRMetric
from monai.networks.layers import SkipConnection
from monai.networks.nets import SegResNet
from monai.transforms import Compose, CopyItemsd, EnsureChannelFirstd, LoadImaged, RandSpatialCropd, ScaleIntensityd
from monai.utils import set_determinism

from mge_plugins.cli_args import positive_int
from mge_plugins.diagnostics import LoadMonitor

RUN_NAMES = ("single", "fms", "ffms")


def network(width: int) -> torch.nn.Module:
    """A residual SegResNet with two downsamplings, one channel per norm group (as the example at width 8)."""
    segresnet = SegResNet(
        3, init_filters=width, in_channels=1, out_channels=1, blocks_down=(1, 1, 1), blocks_up=(1, 1),
        norm=("group", {"num_groups": width}),
    )  # fmt: skip
    return SkipConnection(segresnet, mode="add")


def volumes(out: Path, size: int, count: int) -> tuple[list[Path], list[Path]]:
    """Synthetic phantoms of side ``size + size // 4`` (written once), all but the last two for training."""
    folder = out / f"volumes{size}"
    files = sorted(folder.glob("phantom_*.nii.gz"))
    if len(files) != count:
        files = write_synthetic_volumes(folder, count=count, size=size + size // 4)
    return files[:-2], files[-2:]


def test_batch(files: list[Path], size: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Four fixed crops (two corners of each held-out phantom) and their fixed noisy versions."""
    load = Compose([LoadImaged(keys="label"), EnsureChannelFirstd(keys="label"), ScaleIntensityd(keys="label")])
    clean = []
    for path in files:
        volume = load({"label": str(path)})["label"].as_tensor()
        clean.append(volume[:, :size, :size, :size])
        clean.append(volume[:, -size:, -size:, -size:])
    label = torch.stack(clean)
    noisy = label + sigma * torch.randn(label.shape, generator=torch.Generator().manual_seed(7))
    return label, noisy


def psnr(model: torch.nn.Module, label: torch.Tensor, noisy: torch.Tensor) -> float:
    """Mean PSNR (data range 1) of the model's output on the test crops."""
    model.eval()
    with torch.no_grad():
        value = PSNRMetric(1.0)(model(noisy).clamp(0, 1), label).mean().item()
    model.train()
    return value


def diagnose(model: torch.nn.Module, train_set: CacheDataset, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """``mge-bench diagnose`` of ``model`` on one loaded batch of ``--diagnose`` training crops, saved to ``path``.

    The probe trainer poses the levels as the study's trainers do (``noise_sigma``), on copies of
    the network and the dataset, and PyTorch's random stream is restored afterwards, so the run
    trains on the same crops and noise as without it.
    """
    from mge_bench.diagnose import diagnosis_json, run_diagnosis
    from mge_bench.probes import probe_of

    state = torch.random.get_rng_state()
    model, train_set = copy.deepcopy(model), copy.deepcopy(train_set)  # the run's crop streams stay as they are
    loader = DataLoader(train_set, batch_size=args.diagnose, shuffle=False, num_workers=0)
    probe_trainer = MultiscaleSupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0), loss_function=torch.nn.MSELoss(),
        strategy="mge", levels=args.levels, noise_sigma=args.sigma,
    )  # fmt: skip
    result = run_diagnosis(probe_of(probe_trainer, args.levels), samples=args.diagnose, progress_after=float("inf"))
    torch.random.set_rng_state(state)
    data = diagnosis_json(result, shlex.join(sys.argv))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return {"ratio": result.diagnosis.best.variance_ratio, "levels": result.diagnosis.best.levels}


def run(name: str, steps: int, args: argparse.Namespace, train_files: list[Path], test: tuple) -> dict[str, Any]:
    """Train one run from the shared initial weights; its row for ``results.jsonl``."""
    set_determinism(seed=args.seed)  # the same weights, crops and noise for every run
    model = network(args.width)
    transform = Compose(
        [
            LoadImaged(keys="label"),
            EnsureChannelFirstd(keys="label"),
            ScaleIntensityd(keys="label"),
            RandSpatialCropd(keys="label", roi_size=(args.size,) * 3, random_size=False),
            CopyItemsd(keys="label", names="image"),  # the trainer adds the noise per level (noise_sigma)
        ]
    )
    train_set = CacheDataset([{"label": str(f)} for f in train_files], transform, progress=False)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    trainer = MultiscaleSupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        epoch_length=steps,
        train_data_loader=loader,
        network=model,
        optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        strategy="single" if name == "single" else "full-multiscale",
        levels=args.levels,
        noise_sigma=args.sigma,
        fused=name == "ffms",
    )
    LrScheduleHandler(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps), epoch_level=False).attach(trainer)
    diagnosed = {}
    if args.diagnose:
        diagnosed["initial"] = diagnose(model, train_set, args, args.out / "diagnose" / f"{name}_{steps}_initial.json")
    curve: list[tuple[int, float]] = []
    plans: set[str] = set()
    timer = {"seconds": 0.0, "start": 0.0}
    quarter = max(1, steps // 4)

    @trainer.on(Events.GET_BATCH_STARTED)
    def _start(engine) -> None:
        timer["start"] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _stop(engine) -> None:
        timer["seconds"] += time.perf_counter() - timer["start"]  # loading, the step and the schedule
        plan = trainer.multiscale.multiscale.plan(engine.state.iteration - 1, args.batch_size)
        plans.add(f"{tuple(plan.batch_sizes)}@L{plan.level}")
        if engine.state.iteration % quarter == 0:
            curve.append((engine.state.iteration, round(psnr(model, *test), 3)))

    with LoadMonitor(interval=10.0) as monitor:
        trainer.run()
    summary = trainer.cost.summary()
    if args.diagnose:
        diagnosed["trained"] = diagnose(model, train_set, args, args.out / "diagnose" / f"{name}_{steps}_trained.json")
    return {
        **({"diagnosis": diagnosed} if diagnosed else {}),
        "network": f"segresnet{args.width}",
        "load": monitor.report().to_dict(),
        "run": f"{name}:{steps}",
        "psnr": psnr(model, *test),
        "flops": summary["flops"],
        "work_units": summary["work_units"],
        "seconds": timer["seconds"],
        "curve": curve,
        "plans": sorted(plans),
    }


def parse_runs(text: str) -> list[tuple[str, int]]:
    """``name:steps,...`` checked against :data:`RUN_NAMES`."""
    runs = []
    for item in text.split(","):
        name, _, steps = item.partition(":")
        if name not in RUN_NAMES or not steps.isdigit() or int(steps) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: expected NAME:STEPS with NAME in {', '.join(RUN_NAMES)}")
        runs.append((name, int(steps)))
    return runs


def main() -> None:
    """Parse the runs, train each in turn, append its row to ``results.jsonl``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=parse_runs, required=True, help="comma-separated name:steps (see above)")
    parser.add_argument("--size", type=positive_int, default=64, help="crop side (default: %(default)s)")
    parser.add_argument("--levels", type=positive_int, default=2, help="coarser levels (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="loaded batch (default: %(default)s)")
    parser.add_argument("--width", type=positive_int, default=4, help="SegResNet init_filters (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=0.1, help="noise level (default: %(default)s)")
    parser.add_argument("--volumes", type=positive_int, default=14, help="phantoms, 2 held out (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument(
        "--diagnose",
        type=positive_int,
        metavar="N",
        help="also diagnose each run at its initial and trained weights on N training crops (see above)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/monai_study"), help="(default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train_files, test_files = volumes(args.out, args.size, args.volumes)
    test = test_batch(test_files, args.size, args.sigma)
    config = {k: str(v) for k, v in vars(args).items() if k != "runs"}
    config["runs"] = ",".join(f"{n}:{s}" for n, s in args.runs)
    config["description"] = (
        f"Crops {args.size}³ of synthetic phantoms, {args.levels} levels, loaded batch {args.batch_size}, residual "
        f"SegResNet init_filters {args.width}, MONAI's trainer, Adam peak lr {args.lr} with a cosine schedule over "
        f"each run, noise σ = {args.sigma}."
    )
    for name, steps in args.runs:
        row = {**run(name, steps, args, train_files, test), "config": config}
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{row['run']:>14}  {row['psnr']:6.2f} dB  {row['flops'] / 1e9:9.1f} GFLOPs  {row['seconds']:7.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
