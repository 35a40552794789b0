"""Training, evaluation and reporting shared by the MONAI examples."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from example_args import check_device, make_parser, nonnegative_int, positive_int
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from mge_monai import MultiscaleSupervisedTrainer
from monai.data import DataLoader, get_track_meta, set_track_meta
from monai.metrics import PSNRMetric, SSIMMetric
from monai.utils import set_determinism

from mge_plugins import build_strategy
from mge_plugins.cli_args import budget_value
from mge_plugins.cost import step_work_units
from mge_plugins.host_step import DEFAULT_BUDGET


def parse_args(
    description: str, tasks: tuple[str, ...], size: int, batch_size: int, iterations_per_epoch: int = 25
) -> argparse.Namespace:
    """The MONAI examples' options, checked: a bad value ends the script with one line (exit status 2)."""
    parser = make_parser(description)
    parser.add_argument("--task", choices=tasks, default=tasks[0], help="what to train")
    parser.add_argument("--strategy", default="full-multiscale", help="full-multiscale, mge or single")
    parser.add_argument("--levels", type=nonnegative_int, default=2, metavar="N", help="coarser levels")
    parser.add_argument(
        "--size", type=positive_int, default=size, metavar="PX", help="crop side, divisible by 2**(levels + 2)"
    )
    parser.add_argument("--epochs", type=positive_int, default=4, metavar="N", help="epochs")
    parser.add_argument(
        "--iterations-per-epoch",
        type=positive_int,
        default=iterations_per_epoch,
        metavar="N",
        help="optimizer steps per epoch",
    )
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="N", help="loaded batch")
    parser.add_argument(
        "--data", type=Path, metavar="DIR", help="folder of input files (default: bundled or synthetic data)"
    )
    parser.add_argument(
        "--budget",
        type=budget_value,
        default=DEFAULT_BUDGET,
        metavar="B",
        help="what a coarse-to-fine run spends: steps (the iterations above, each cheaper), compute (the "
        "single-scale run's compute: more iterations) or a fraction of that compute, e.g. 0.33",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--workers", type=nonnegative_int, default=0, metavar="N", help="DataLoader worker processes (default: 0)"
    )
    parser.add_argument(
        "--track-meta",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep MONAI's metadata through the random transforms during training; by default they run on plain "
        "tensors once the cache is built (MONAI's set_track_meta(False)), which halves the wait for data",
    )
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR", help="results folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, crops and noise")
    args = parser.parse_args()
    check_device(parser, args.device)
    multiple = 2 ** (args.levels + 2)
    if args.size % multiple:
        valid = max(multiple, args.size // multiple * multiple)
        parser.error(f"--size {args.size} is not divisible by 2**(levels + 2) = {multiple}; use e.g. --size {valid}")
    try:
        build_strategy(
            args.strategy,
            loaded_batch_size=args.batch_size,
            levels=args.levels,
            iterations=args.epochs * args.iterations_per_epoch,
        )
    except ValueError as error:
        parser.error(f"--strategy {args.strategy} with these settings: {error}")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder")
    set_determinism(seed=args.seed)  # same crops and noise for every strategy
    return args


def attach_progress(trainer: MultiscaleSupervisedTrainer, name: str, interval: float = 10.0) -> None:
    """Show training progress: ignite's bar on a terminal, a plain line every ``interval`` seconds otherwise.

    In a log file (stderr not a terminal) a bar would leave carriage-return fragments. The lines name the
    iteration, the Full-Multiscale stage and level, the saving so far and the time left, estimated from the
    work done (a coarse step costs a fraction of a fine one).
    """
    if sys.stderr.isatty():

        def shown(out: list[dict]) -> dict[str, float]:  # the stage counted from 1 (0 without stages)
            item = out[0]
            stage = int(item.get("mge_stage", -1)) + 1
            return {"loss": float(item["loss"]), "stage": stage, "level": item.get("mge_level", 0),
                    "saving": float(item.get("mge_saving", 1.0))}  # fmt: skip

        ProgressBar(persist=True).attach(trainer, output_transform=shown)
        return
    state = {"start": 0.0, "last": -float("inf"), "stage": None, "work": None}

    def started(engine: Engine) -> None:
        state["start"] = time.perf_counter()

    def iteration(engine: Engine) -> None:
        total = engine.state.max_epochs * engine.state.epoch_length
        done = engine.state.iteration
        output = engine.state.output[0] if isinstance(engine.state.output, list) else engine.state.output
        stage, level = output.get("mge_stage", -1), output.get("mge_level", 0)
        strategy = trainer.multiscale.built_strategy
        if state["work"] is None and strategy is not None:
            dims = trainer.cost.spatial_dims
            state["work"] = sum(
                step_work_units(p.batch_sizes, base_level=p.level, spatial_dims=dims)
                for p in map(strategy.plan, range(total))
            )
        now = time.perf_counter()
        if stage == state["stage"] and done < total and now - state["last"] < interval:
            return
        state["last"], state["stage"] = now, stage
        fraction = trainer.cost.work_units / state["work"] if state["work"] else done / total
        elapsed = now - state["start"]
        left = f"about {elapsed * (1 - fraction) / fraction:.0f} s left" if 0 < fraction < 1 else "done"
        stages = getattr(getattr(strategy, "schedule", None), "stages", None)
        where = f"stage {int(stage) + 1}/{len(stages)}, " if stages and stage is not None and stage >= 0 else ""
        saving = trainer.cost.saving
        print(
            f"{name}: iteration {done}/{total} ({100 * done / total:.0f}%), {where}level {level}, "
            f"loss {float(output['loss']):.3g}, saving so far {saving or 1:.2f}x, {elapsed:.0f} s elapsed, {left}",
            file=sys.stderr,
            flush=True,
        )

    trainer.add_event_handler(Events.STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration)


def train_and_report(args, name: str, network, train_set, test_batch: dict, loss=None) -> dict:
    """Train with the chosen strategy, show progress, evaluate at the fine level, write a summary."""
    device = torch.device(args.device)
    network = network.to(device)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    trainer = MultiscaleSupervisedTrainer(
        device=device,
        max_epochs=args.epochs,
        epoch_length=args.iterations_per_epoch,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=1e-3),
        loss_function=loss or torch.nn.MSELoss(),
        strategy=args.strategy,
        levels=args.levels,
        budget=args.budget,
    )
    attach_progress(trainer, f"{name} {args.task} {args.strategy}")
    tracking = get_track_meta()
    if not args.track_meta:  # the cached part of the pipeline already ran with metadata; the random part runs without
        set_track_meta(False)
    seconds = {"train": 0.0, "data": 0.0}
    trainer.add_event_handler(Events.STARTED, lambda e: seconds.update(start=time.perf_counter()))
    trainer.add_event_handler(Events.COMPLETED, lambda e: seconds.update(train=time.perf_counter() - seconds["start"]))

    # the time the training loop waits for each batch: loading, transforms and collation
    def fetched(engine) -> None:
        seconds["data"] += time.perf_counter() - seconds["fetch"]

    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: seconds.update(fetch=time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, fetched)
    try:
        trainer.run()
    finally:
        set_track_meta(tracking)

    network.eval()
    image, label = test_batch["image"].to(device), test_batch["label"].to(device)
    with torch.no_grad():
        pred = network(image).clamp(0, 1)
    spatial_dims = label.dim() - 2
    window = min(7, min(label.shape[2:]))
    metrics = {
        "psnr_input": PSNRMetric(1.0)(image.clamp(0, 1), label).mean().item(),
        "psnr": PSNRMetric(1.0)(pred, label).mean().item(),
        "ssim": SSIMMetric(spatial_dims, data_range=1.0, win_size=window)(pred, label).mean().item(),
    }
    summary = {
        "example": name,
        "task": args.task,
        "strategy": args.strategy,
        "seconds": seconds["train"],
        "data_seconds": seconds["data"],
    }
    summary.update(metrics)
    summary.update(trainer.cost.summary())
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    (out / f"summary_{args.task}_{args.strategy}.json").write_text(json.dumps(summary, indent=2))
    torch.save(network.state_dict(), out / f"network_{args.task}_{args.strategy}.pt")
    saving = summary["saving"] or 1.0
    print(
        f"\n{name} {args.task} ({args.strategy}): fine-level PSNR {metrics['psnr']:.2f} dB (input "
        f"{metrics['psnr_input']:.2f} dB), SSIM {metrics['ssim']:.3f}; {summary['flops'] / 1e9:.1f} GFLOPs, "
        f"{saving:.2f}x less work than single-scale for the same iterations; {seconds['train']:.1f} s "
        f"({seconds['data']:.1f} s waiting for data)\n"
        f"wrote {out}/"
    )
    return summary
