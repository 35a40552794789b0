"""``mge-train``: train a bundled task with a multiscale strategy next to the single-scale baseline.

Prints fine-level PSNR/SSIM on held-out crops, FLOPs, work units, wall-clock and the saving of
each strategy, and writes ``summary.csv``, ``history.csv``, ``figure.png``, ``report.md`` and the checkpoints
to a new run folder ``--out/TASK/YYYYMMDD-HHMMSS/``, one per run (``--naming paper``:
``--out/{task}_{dataset}_{network}_{mode}_run{seed}/``, the paper's names). :func:`load_network`
loads a trained network back.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mge_plugins import available_strategies, build_strategy
from mge_plugins.cli_args import (
    HelpFormatter,
    budget_value,
    device_problem,
    nonnegative_int,
    positive_float,
    positive_int,
)
from mge_plugins.cost import step_work_units
from mge_plugins.diagnostics import LoadMonitor
from mge_plugins.host_step import DEFAULT_BUDGET

from .data import (
    IMAGE_SUFFIXES,
    TEST_IMAGES,
    TRAIN_IMAGES,
    DictSamples,
    ImageCrops,
    bundled_images,
    read_folder,
    to_channels,
)
from .datasets import PAPER_DATASETS, paper_dataset, take_images
from .evaluation import held_out_crops, quality_metrics, reconstruct, score
from .networks import NETWORKS as NETWORK_SPECS
from .networks import detect_network, network_problem
from .paper import PAPER_MODES, paper_run_name
from .plots import COST_AXES, plot_quality_against_cost, pyplot, save_figure, show_image
from .progress import Progress, step_fields
from .report import write_report
from .tasks import NETWORKS, TASKS, make_model
from .training import MultiscaleTrainer

__all__ = [
    "HelpFormatter",
    "Inputs",
    "UsageError",
    "build_parser",
    "check_args",
    "device_problem",
    "load_network",
    "main",
    "new_run_folder",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "run_task",
]

DESCRIPTION = """\
Train a bundled task with a multiscale strategy next to the single-scale baseline.

Prints fine-level PSNR/SSIM on 32 held-out crops, FLOPs, work units, wall-clock and the saving of
each strategy. Every run writes a new folder OUT/TASK/YYYYMMDD-HHMMSS/ (with --naming paper:
OUT/{task}_{dataset}_{network}_{mode}_run{seed}/) with summary.csv, history.csv, figure.png,
report.md and one checkpoint folder per strategy (STRATEGY/ckp_best.pth.tar);
mge_deepinv.cli.load_network(folder) loads a trained network back.
"""

NAMINGS = ("date", "paper")
"""``--naming``: run folders ``OUT/TASK/YYYYMMDD-HHMMSS/`` or ``OUT/{task}_{dataset}_{network}_{mode}_run{seed}/``."""

EVAL_CROPS = 32
"""The number of fixed held-out crops every run is evaluated on."""

CHECKPOINT = "ckp_best.pth.tar"
"""The file name of the best checkpoint in a strategy's folder of a run (deepinv's name)."""


class UsageError(ValueError):
    """A setting or an input that cannot run; the message names the option and the fix."""


class _ModeAction(argparse.Action):
    """``--mode NAME``: the paper's name of a training mode; sets ``strategy`` to the strategy it is."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.strategy = PAPER_MODES[values]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    tasks = "\n".join(f"  {name:<8} {task.description}" for name, task in TASKS.items())
    networks = "\n".join(f"  {name:<10} {spec.description}" for name, spec in NETWORK_SPECS.items())
    parser = argparse.ArgumentParser(
        prog="mge-train",
        description=DESCRIPTION + "\ntasks:\n" + tasks + "\n\nnetworks (--network):\n" + networks,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("task", choices=sorted(TASKS), help="the task to train (see above)")
    strategy = parser.add_mutually_exclusive_group()
    strategy.add_argument(
        "--strategy", default="full-multiscale", help=f"training strategy: {', '.join(available_strategies())}"
    )
    strategy.add_argument(
        "--mode",
        choices=tuple(PAPER_MODES),
        action=_ModeAction,
        help="the strategy by the paper's name: "
        + ", ".join(f"{mode} = {name}" for mode, name in PAPER_MODES.items())
        + " (instead of --strategy)",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the single-scale run (the saving is then estimated)"
    )
    parser.add_argument(
        "--levels", type=nonnegative_int, default=2, metavar="N", help="coarser levels below the full resolution"
    )
    parser.add_argument(
        "--mge-levels",
        type=nonnegative_int,
        metavar="N",
        help="cap on MGE levels inside Full-Multiscale stages (0 = none; default: all)",
    )
    parser.add_argument(
        "--growth",
        type=positive_float,
        metavar="X",
        help="batch growth per coarser MGE level (default: up to the loaded batch)",
    )
    parser.add_argument(
        "--coarse-mode", default="auto", choices=("auto", "physics", "restrict"), help="how coarse problems are posed"
    )
    parser.add_argument(
        "--coarse-noise", default="keep", choices=("keep", "restrict"), help="noise level on coarse levels"
    )
    parser.add_argument(
        "--coarse-operator",
        default="keep",
        choices=("keep", "restrict"),
        help="blur kernel and anti-alias filter on coarse levels: restricted with the image, or kept per pixel",
    )
    parser.add_argument(
        "--size", type=positive_int, default=64, metavar="PX", help="crop side in pixels, divisible by 2**levels"
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=400,
        metavar="N",
        help="optimizer steps per strategy, rounded up to a multiple of --evals",
    )
    parser.add_argument(
        "--evals", type=positive_int, default=4, metavar="N", help="evaluations during training, one per epoch"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, metavar="N", help="loaded batch; MGE terms are cut from it"
    )
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3), help="1 (grayscale) or 3 (colour)")
    parser.add_argument("--network", choices=NETWORKS, default="dncnn", help="the network to train (see above)")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate, cosine-annealed")
    parser.add_argument(
        "--data", type=Path, metavar="DIR", help="folder of training images (default: the scikit-image photographs)"
    )
    parser.add_argument(
        "--dataset",
        choices=sorted(PAPER_DATASETS),
        help="train on a data set of the paper, read from --data-root (never downloaded), and evaluate on its test "
        "split; the README lists the layouts",
    )
    parser.add_argument(
        "--data-root", type=Path, metavar="DIR", help="the folder holding --dataset in its standard on-disk layout"
    )
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="train on the first N training images of --dataset only"
    )
    parser.add_argument(
        "--budget",
        type=budget_value,
        default=DEFAULT_BUDGET,
        metavar="B",
        help="what the multiscale run spends: a fraction of the single-scale run's compute (more, cheaper "
        "steps), 'compute' (all of it) or 'steps' (as many steps as --steps, each cheaper)",
    )
    parser.add_argument(
        "--fused",
        action="store_true",
        help="fused passes, one per level (fewer FLOPs, the same gradient); poses coarse levels by restriction",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, crops and noise")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        metavar="DIR",
        help="results folder; each run writes OUT/TASK/DATE-TIME/",
    )
    parser.add_argument(
        "--naming",
        choices=NAMINGS,
        default="date",
        help="run folders OUT/TASK/DATE-TIME/, or the paper's OUT/{task}_{dataset}_{network}_{mode}_run{seed}/ "
        "(a rerun adds -2, -3...)",
    )
    return parser


@dataclass
class Inputs:
    """What :func:`check_args` loaded and checked, ready to train.

    :param list[torch.Tensor] images: the training images, at the requested channels.
    :param ImageCrops train_set: one epoch of training crops.
    :param torch.Tensor test_clean: the held-out crops of the table, the curves and the figure.
    :param int steps: optimizer steps per strategy (``--steps`` rounded up to a multiple of ``--evals``).
    :param list[str] loaded: what was loaded and what is evaluated on, one line each, to print.
    """

    images: list[torch.Tensor]
    train_set: ImageCrops
    test_clean: torch.Tensor
    steps: int
    loaded: list[str]


def check_args(args: argparse.Namespace) -> Inputs:
    """Check the settings, the device and the data before anything is written; load the data.

    :param argparse.Namespace args: parsed arguments of :func:`build_parser`.
    :raises UsageError: for settings or inputs that cannot run, naming the option and the fix.
    :return: the loaded inputs.
    """
    if args.strategy not in available_strategies():
        raise UsageError(f"--strategy {args.strategy}: unknown; use one of {', '.join(available_strategies())}")
    for name in ("size", "steps", "evals", "batch_size"):  # the types check the command line; run_task callers too
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.size % 2**args.levels:
        valid = max(2**args.levels, args.size // 2**args.levels * 2**args.levels)
        raise UsageError(
            f"--size {args.size} is not divisible by 2**levels = {2**args.levels}; use e.g. --size {valid}"
        )
    task = TASKS[args.task]
    if args.size % task.size_multiple:
        valid = max(task.size_multiple, args.size // task.size_multiple * task.size_multiple)
        raise UsageError(
            f"--size {args.size} is not divisible by {task.size_multiple}, which {args.task} needs "
            f"({task.size_reason}); use e.g. --size {valid}"
        )
    problem = network_problem(args.network, args.task, args.size, args.levels)
    if problem:
        raise UsageError(problem)
    if getattr(args, "fused", False):
        if args.coarse_mode == "physics":
            raise UsageError(
                "--fused needs every level posed from one fine measurement per sample: use --coarse-mode restrict "
                "(or auto, which --fused turns into restrict)"
            )
        args.coarse_mode = "restrict"
    if args.evals > args.steps:
        raise UsageError(f"--evals {args.evals} is more than --steps {args.steps}; use --evals {args.steps} or fewer")
    problem = device_problem(args.device)
    if problem:
        raise UsageError(problem)
    per_epoch = math.ceil(args.steps / args.evals)
    steps = per_epoch * args.evals
    try:
        build_strategy(
            args.strategy, loaded_batch_size=args.batch_size, levels=args.levels, mge_levels=args.mge_levels,
            growth=args.growth, iterations=steps,
        )  # fmt: skip
    except ValueError as error:
        raise UsageError(f"--strategy {args.strategy} with these settings: {error}") from None

    colour = "grayscale" if args.channels == 1 else "colour (RGB)"
    _check_data_options(args)
    if args.dataset:
        images, source, test_clean, evaluated = _read_dataset(args, colour)
    elif args.data:
        stored = _read_data(args.data)
        images = [to_channels(image, args.channels) for image in stored]
        kinds = sorted({_kind(image.shape[0]) for image in stored})
        converted = "" if kinds == [_kind(args.channels)] else f", converted to {colour}"
        hint = "; --channels 3 keeps the colour" if args.channels == 1 and "RGB" in kinds else ""
        source = (
            f"{len(images)} images from {args.data} ({_sizes(images)}, stored as {', '.join(kinds)}{converted}{hint})"
        )
        _check_crop_size(args, images, f"--data {args.data}")
        evaluated = "the bundled held-out photographs camera and moon, not --data"
    else:
        images = bundled_images(TRAIN_IMAGES, args.channels)
        source = f"{len(images)} scikit-image photographs ({', '.join(TRAIN_IMAGES)}; {_sizes(images)}, {colour})"
        _check_crop_size(args, images, "the bundled photographs")
        evaluated = "camera and moon from scikit-image, never trained on"
    if not args.dataset:
        test_images = bundled_images(TEST_IMAGES, args.channels)
        _check_crop_size(args, test_images, "the held-out photographs")
        test_clean = held_out_crops(args.size, EVAL_CROPS, seed=2, channels=args.channels)
    train_set = ImageCrops(images, args.size, per_epoch * args.batch_size, seed=args.seed)
    loaded = [
        f"training on random {args.size}x{args.size} crops of {source}: {steps} steps of {args.batch_size} crops",
        f"evaluating on {len(test_clean)} fixed {args.size}x{args.size} crops of {evaluated}",
    ]
    return Inputs(images, train_set, test_clean, steps, loaded)


def _check_data_options(args: argparse.Namespace) -> None:
    names = "|".join(sorted(PAPER_DATASETS))
    if args.dataset and args.data:
        raise UsageError(
            f"--data and --dataset both name training data; use --data DIR for a folder of images, or --dataset "
            f"{args.dataset} --data-root DIR"
        )
    if args.dataset and not args.data_root:
        folder = PAPER_DATASETS[args.dataset].folder
        holding = f"the folder holding {folder}/" if folder else "the folder holding Urban100_HR/ or its PNGs"
        raise UsageError(f"--dataset {args.dataset} needs --data-root DIR, {holding} (nothing is downloaded)")
    if args.data_root and not args.dataset:
        raise UsageError(f"--data-root is where --dataset is read from; add --dataset {names}, or use --data DIR")
    if args.limit and not args.dataset:
        raise UsageError(f"--limit caps the images of --dataset; add --dataset {names} --data-root DIR, or drop it")


def _read_dataset(args: argparse.Namespace, colour: str) -> tuple[list[torch.Tensor], str, torch.Tensor, str]:
    """``--dataset``: the training images, their description, the evaluation crops and theirs."""
    spec = PAPER_DATASETS[args.dataset]
    try:
        train = paper_dataset(args.dataset, args.data_root, "train")
        test = paper_dataset(args.dataset, args.data_root, spec.test_split)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(f"--data-root {error}") from None
    count = len(train) if args.limit is None else min(args.limit, len(train))
    try:
        _check_memory(args, train, count)
        images = take_images(train, args.channels, count)
        test_images = take_images(test, args.channels, EVAL_CROPS)
    except ValueError as error:
        raise UsageError(f"--data-root {args.data_root}: {error}") from None
    what = f"the {spec.title} images"
    _check_crop_size(args, images, what)
    _check_crop_size(args, test_images, f"{what} of its {spec.test_split} split")
    # crop j from test image j (mod their number), at a position fixed by its index
    test_clean = torch.stack(
        [ImageCrops([test_images[j % len(test_images)]], args.size, 1, seed=2 + j)[0] for j in range(EVAL_CROPS)]
    )
    subset = f"the first {count} of {len(train)}" if count < len(train) else f"all {count}"
    source = (
        f"{subset} {spec.title} training images in {args.data_root} ({_sizes(images)}, stored as RGB"
        f"{'' if args.channels == 3 else f', converted to {colour}; --channels 3 keeps the colour'})"
    )
    first = f"the first {len(test_images)}" if len(test_images) < len(test) else f"all {len(test_images)}"
    evaluated = f"{first} {spec.title} {spec.test_split} images, never trained on"
    return images, source, test_clean, evaluated


def _physical_memory() -> int | None:
    """This machine's memory in bytes, or ``None`` where the system does not say (``os.sysconf``)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(args: argparse.Namespace, train: torch.utils.data.Dataset, count: int) -> None:
    """Refuse to load more training images than half this machine's memory holds as float32 (the first one's size)."""
    memory = _physical_memory()
    if memory is None:
        return
    per_image = 4 * args.channels * math.prod(train[0].shape[-2:])
    if count * per_image > memory / 2:
        fits = max(1, int(memory / 2 // per_image))
        raise UsageError(
            f"--dataset {args.dataset}: {count} training images take about {count * per_image / 1e9:.1f} GB as "
            f"float32, more than half this machine's {memory / 1e9:.1f} GB; use --limit {fits} or fewer"
        )


def _read_data(folder: Path) -> list[torch.Tensor]:
    if not folder.is_dir():
        raise UsageError(f"--data {folder}: no such folder; point --data at a folder of images")
    try:
        return read_folder(folder)
    except FileNotFoundError:
        raise UsageError(
            f"--data {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it; point --data at a folder of images"
        ) from None
    except ValueError as error:
        raise UsageError(f"--data: {error}") from None


def _kind(channels: int) -> str:
    return {1: "grayscale", 2: "grayscale", 3: "RGB", 4: "RGB"}.get(channels, f"{channels} channels")


def _sizes(images: list[torch.Tensor]) -> str:
    sizes = sorted({(int(im.shape[-2]), int(im.shape[-1])) for im in images}, key=lambda s: (min(s), s))
    first, last = sizes[0], max(sizes, key=lambda s: (s[0] * s[1], s))
    if len(sizes) == 1:
        return f"{first[0]}x{first[1]} px"
    return f"{first[0]}x{first[1]} to {last[0]}x{last[1]} px"


def _check_crop_size(args: argparse.Namespace, images: list[torch.Tensor], what: str) -> None:
    smallest = min(images, key=lambda im: min(im.shape[-2:]))
    side = int(min(smallest.shape[-2:]))
    if side < args.size:
        unit = 2**args.levels
        valid = side // unit * unit
        fix = f"use --size {valid} or less" if valid else "use larger images"
        raise UsageError(
            f"--size {args.size} is larger than {what}: the smallest is {smallest.shape[-2]}x{smallest.shape[-1]} px; "
            f"{fix}"
        )


def new_run_folder(parent: Path, name: str | None = None) -> Path:
    """A new, empty folder ``parent/NAME`` (``-2``, ``-3``... if that name is taken).

    The default name ``YYYYMMDD-HHMMSS`` has no colons (valid on every file system) and sorts by time.

    :param pathlib.Path parent: the results folder, created if missing.
    :param str, None name: the folder's name; ``None``: the date and time.
    :return: the created folder.
    """
    stamp = name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free run folder name for {stamp} under {parent}")


def _run_folder(args: argparse.Namespace) -> Path:
    """The new run folder of ``--naming``: ``OUT/TASK/DATE-TIME`` or the paper's ``OUT/{task}_..._run{seed}``."""
    if getattr(args, "naming", "date") != "paper":
        return new_run_folder(args.out / args.task)
    dataset = getattr(args, "dataset", None) or (Path(args.data).name if args.data else "skimage")
    return new_run_folder(args.out, paper_run_name(args.task, dataset, args.network, args.strategy, args.seed))


class _CliTrainer(MultiscaleTrainer):
    """``MultiscaleTrainer`` as ``mge-train`` runs it.

    Evaluates on fixed noise (``eval_seed``), so the curves end on the table's figures; writes the
    checkpoints straight into ``save_path`` (deepinv would add a timestamped sub-folder); reports
    every step and evaluation to ``progress``.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.eval_seed = 0
        self.progress: Progress | None = None

    def setup_train(self, train: bool = True, **kwargs: Any) -> None:
        """Deepinv's setup with the run folder kept as given, then the progress totals."""
        folder = self.save_path
        self.save_path = None
        super().setup_train(train=train, **kwargs)
        self.save_path = folder
        if train and self.progress is not None and self.built_strategy is not None:
            total = self._total_iterations()
            work = sum(
                step_work_units(p.batch_sizes, base_level=p.level, spatial_dims=self.cost.spatial_dims)
                for p in map(self.built_strategy.plan, range(total))
            )
            self.progress.start(total, work)

    def step(self, epoch, progress_bar, train_ite: int | None = None, train: bool = True, **kwargs: Any) -> None:
        """Training steps report to the progress; evaluation steps draw their noise from ``eval_seed``."""
        if not train:
            super().step(epoch, progress_bar, train_ite=train_ite, train=train, **kwargs)
            return
        work = self.cost.work_units
        super().step(epoch, progress_bar, train_ite=train_ite, train=train, **kwargs)
        if self.progress is not None and self.built_strategy is not None and train_ite is not None:
            fields = step_fields(self.last_step_scalars, self.built_strategy)
            self.progress.update(1, self.cost.work_units - work, **fields)

    def save_best_model(self, epoch, train_ite, **kwargs: Any) -> None:
        """Deepinv's save, then the evaluation's result as a progress line."""
        super().save_best_model(epoch, train_ite, **kwargs)
        if self.progress is not None and self.history:
            last = self.history[-1]
            quality = ", ".join(f"{k} {last[k]:.3f}" for k in ("PSNR", "SSIM") if k in last)
            self.progress.note(f"evaluation {len(self.history)}/{self.epochs} after step {last['step']}: {quality}")


def _train_one(strategy: str, args: argparse.Namespace, inputs: Inputs, out: Path) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    task = TASKS[args.task]
    physics = task.physics(args.size, args.channels, args.device)
    # Fresh random parameters (inpainting masks) per training sample; the same stream for every strategy.
    generator = None if task.generator is None else task.generator(args.size, args.channels, args.device, args.seed)
    model = make_model(args.channels, device=args.device, network=args.network)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.evals)
    loader = torch.utils.data.DataLoader(
        DictSamples(inputs.train_set), batch_size=args.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    test_clean = inputs.test_clean
    eval_loader = torch.utils.data.DataLoader(DictSamples(list(test_clean)), batch_size=len(test_clean))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*progress bar frequency.*")
        trainer = _CliTrainer(
            model=model, physics=physics, optimizer=optimizer, scheduler=scheduler, train_dataloader=loader,
            eval_dataloader=eval_loader, epochs=args.evals, online_measurements=True, metrics=quality_metrics(),
            save_path=str(out / strategy), device=args.device, verbose=False, show_progress_bar=False,
            compute_train_metrics=False, non_blocking_transfers=torch.device(args.device).type == "cuda",
            strategy=strategy, levels=args.levels, mge_levels=args.mge_levels, growth=args.growth,
            coarse_mode=args.coarse_mode, coarse_noise=args.coarse_noise,
            coarse_operator=args.coarse_operator, budget=args.budget, fused=args.fused,
            physics_generator=generator,
        )  # fmt: skip
        trainer.eval_seed = args.seed + 1  # evaluation noise, and evaluation masks from the generator's own stream
        print(f"\n== {args.task}: {strategy} ==", flush=True)
        with Progress(f"{args.task} {strategy}") as progress:
            trainer.progress = progress
            trainer.train()
    clean = test_clean.to(args.device)
    if task.generator is not None:  # the held-out masks of the evaluations during training (eval_seed)
        held_out = task.generator(args.size, args.channels, args.device, args.seed + 1)
        physics.update(**held_out.step(batch_size=len(clean)))
    y, x_net = reconstruct(model, physics, clean, seed=args.seed + 1)
    row = {"strategy": strategy, **score(x_net, clean), "seconds": trainer.train_seconds}
    row.update(trainer.cost.summary())
    row.pop("saving", None)  # a work-unit ratio; the table's savings are flop_saving and time_saving
    return {"row": row, "history": trainer.history, "y": y.cpu(), "x_net": x_net.cpu()}


def _psnr(image: torch.Tensor, clean: torch.Tensor) -> float | None:
    if image.shape != clean.shape:
        return None
    return score(image[None].clamp(0, 1), clean[None])["psnr"]


def _write_figure(task: str, results: dict[str, dict], test_clean: torch.Tensor, path: Path) -> None:
    plt = pyplot()
    show = int(test_clean.flatten(1).std(dim=1).argmax())  # the test crop with the most structure
    first = next(iter(results.values()))
    images = [("measurement", first["y"][show])]
    images += [(name, result["x_net"][show]) for name, result in results.items()]
    images += [("ground truth", test_clean[show])]
    fig = plt.figure(figsize=(3.2 * (2 + len(images)), 4.0))
    grid = fig.add_gridspec(1, 2 + len(images))
    curves = {name: result["history"] for name, result in results.items()}
    for column, axis in enumerate(COST_AXES):
        ax = fig.add_subplot(grid[0, column])
        plot_quality_against_cost(ax, curves, axis, quality_key="PSNR", ylabel="PSNR (dB)")
        ax.set_title(f"{len(test_clean)} held-out crops")
        ax.legend()
    for offset, (title, image) in enumerate(images):
        if image.shape[-1] != test_clean.shape[-1]:  # low-resolution measurement: show it at its size
            title += f" ({image.shape[-1]} px)"
        elif title != "ground truth":
            title += f"\n{_psnr(image, test_clean[show]):.2f} dB"
        show_image(fig.add_subplot(grid[0, 2 + offset]), image, title)
    save_figure(fig, path, f"mge-train {task}: quality during training, and the held-out crop with the most detail")


def _savings(rows: list[dict[str, Any]], measured: bool) -> None:
    """FLOP and time savings against the single-scale run, or the FLOP saving's estimate without one."""
    base = next((r for r in rows if r["strategy"] == "single"), None)
    for row in rows:
        if measured and base is not None:
            row["flop_saving"] = base["flops"] / row["flops"]
            row["time_saving"] = base["seconds"] / row["seconds"]
            row["saving_basis"] = "measured against the single-scale run"
        else:
            baseline = row.get("baseline_flops")
            row["flop_saving"] = (
                baseline / row["flops"]
                if baseline and row.get("flops")
                else row["baseline_work_units"] / row["work_units"]
            )
            row["time_saving"] = None
            row["saving_basis"] = "estimated: single-scale FLOPs for the same steps (no single-scale run)"


def _print_table(rows: list[dict[str, Any]], measured: bool) -> None:
    header = (
        f"{'strategy':<16}{'PSNR':>8}{'SSIM':>8}{'GFLOPs':>10}{'work':>9}{'seconds':>9}"
        f"{'FLOP saving':>13}{'time saving':>13}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        flop = f"{r['flop_saving']:.2f}x" + ("" if measured else "*")
        time_saving = f"{r['time_saving']:.2f}x" if r["time_saving"] is not None else "n/a"
        print(
            f"{r['strategy']:<16}{r['psnr']:>8.2f}{r['ssim']:>8.3f}{r['flops'] / 1e9:>10.1f}{r['work_units']:>9.0f}"
            f"{r['seconds']:>9.1f}{flop:>13}{time_saving:>13}"
        )
    if not measured:
        print(
            "* estimated: no single-scale run (--no-baseline), so the saving is single-scale's FLOPs for the same "
            "steps over these; there is no measured time saving"
        )


def run_task(args: argparse.Namespace, inputs: Inputs | None = None) -> list[dict[str, Any]]:
    """Train the requested strategies one after another; return the summary rows.

    :param argparse.Namespace args: parsed arguments of :func:`build_parser`.
    :param Inputs inputs: what :func:`check_args` returned (checked and loaded here when ``None``).
    :raises UsageError: for settings or inputs that cannot run (before anything is written).
    :return: one row per strategy, as written to ``summary.csv``.
    """
    inputs = inputs if inputs is not None else check_args(args)
    for line in inputs.loaded:
        print(line)
    out = _run_folder(args)
    print(f"writing to {out}/", flush=True)
    strategies = [args.strategy] + ([] if args.no_baseline or args.strategy == "single" else ["single"])
    with LoadMonitor(interval=5.0) as monitor:
        results = {s: _train_one(s, args, inputs, out) for s in strategies}
    rows = [r["row"] for r in results.values()]
    measured = "single" in results
    _savings(rows, measured)
    _print_table(rows, measured)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    history = [{"strategy": s, **h} for s, r in results.items() for h in r["history"]]
    with open(out / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=sorted({k for h in history for k in h}, key=lambda k: (k != "strategy", k))
        )
        writer.writeheader()
        writer.writerows(history)
    _write_figure(args.task, results, inputs.test_clean, out / "figure.png")
    write_report(out / "report.md", args.task, args, rows, measured, monitor.report())
    checkpoints = ", ".join(f"{s}/{CHECKPOINT}" for s in results)
    print(f"\nwrote {out}/: summary.csv, history.csv, figure.png, report.md, {checkpoints}")
    return rows


def _find_checkpoint(path: Path, strategy: str) -> Path:
    if path.is_file():
        return path
    if (path / strategy / CHECKPOINT).is_file():
        return path / strategy / CHECKPOINT
    runs = sorted(p.parent.parent for p in path.glob(f"*/{strategy}/{CHECKPOINT}"))
    if runs:
        return runs[-1] / strategy / CHECKPOINT
    raise FileNotFoundError(
        f"no {strategy}/{CHECKPOINT} in {path} or in a run folder under it; pass a checkpoint file, a run folder "
        "(results/TASK/YYYYMMDD-HHMMSS) or a task folder (results/TASK), and the strategy that was trained"
    )


def load_network(path: str | Path, strategy: str = "full-multiscale", device: str = "cpu") -> torch.nn.Module:
    """The network an ``mge-train`` run trained, with the weights of its best evaluation, in eval mode.

    Call it as ``model(y, physics)`` with the task's operator (``mge_deepinv.tasks.TASKS[task].physics``).

    :param str, pathlib.Path path: a checkpoint file, a run folder (``results/denoise/20261201-115824``,
        or ``results/denoising_skimage_unet_fullmultiscale_run0`` with ``--naming paper``) or a task
        folder (``results/denoise``: its latest run).
    :param str strategy: which of the run's networks (the name of its checkpoint folder).
    :param str device: where to put the network.
    :raises FileNotFoundError: when no such checkpoint exists, naming what was looked for.
    :raises ValueError: when the weights are none of :data:`mge_deepinv.tasks.NETWORKS`.
    :return: the network (:func:`mge_deepinv.tasks.make_model`; which one, and its channels, read from the weights).
    """
    checkpoint = _find_checkpoint(Path(path), strategy)
    state = torch.load(checkpoint, map_location=device, weights_only=True)["state_dict"]
    network, channels = detect_network(state)
    model = make_model(channels, device=device, network=network)
    model.load_state_dict(state)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``mge-train``.

    :param list[str] argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        inputs = check_args(args)
    except UsageError as error:
        parser.error(str(error))
    run_task(args, inputs)


if __name__ == "__main__":
    main()
