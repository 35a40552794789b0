"""``mge-train``: train a bundled task with a multiscale strategy next to the single-scale baseline.

Prints fine-level PSNR/SSIM on held-out crops, FLOPs, work units, wall-clock and the saving of
each strategy, and writes ``summary.csv``, ``history.csv``, ``figure.png`` and the best checkpoints
under ``--out/TASK/``.
"""

from __future__ import annotations

import argparse
import csv
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from mge_plugins import available_strategies

from .data import TEST_IMAGES, TRAIN_IMAGES, ImageCrops, bundled_images, folder_images
from .evaluation import held_out_crops, quality_metrics, reconstruct, score
from .plots import COST_AXES, plot_quality_against_cost, pyplot, save_figure, show_image
from .tasks import TASKS, make_model
from .training import MultiscaleTrainer

__all__ = ["build_parser", "main", "run_task"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    tasks = "\n".join(f"  {name:<8} {task.description}" for name, task in TASKS.items())
    parser = argparse.ArgumentParser(
        prog="mge-train",
        description=__doc__ + "\ntasks:\n" + tasks,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--strategy", default="full-multiscale", help=f"one of {', '.join(available_strategies())}")
    parser.add_argument("--no-baseline", action="store_true", help="skip the single-scale baseline")
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument(
        "--mge-levels", type=int, default=None, help="cap on MGE levels inside Full-Multiscale stages (0 = none)"
    )
    parser.add_argument("--growth", type=float, default=None, help="batch growth per coarser MGE level")
    parser.add_argument("--coarse-mode", default="auto", choices=("auto", "physics", "restrict"))
    parser.add_argument("--coarse-noise", default="keep", choices=("keep", "restrict"))
    parser.add_argument("--size", type=int, default=64, help="crop side, divisible by 2**levels")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per strategy")
    parser.add_argument("--evals", type=int, default=4, help="evaluations during training (one per epoch)")
    parser.add_argument("--batch-size", type=int, default=16, help="loaded batch; MGE terms are cut from it")
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", type=Path, help="folder of training images (default: scikit-image photographs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results"))
    return parser


def _train_one(strategy: str, args: argparse.Namespace, train_set, eval_set, test_clean, out: Path) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    physics = TASKS[args.task].physics(args.size, args.channels, args.device)
    model = make_model(args.channels, device=args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.evals)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*progress bar frequency.*")
        trainer = MultiscaleTrainer(
            model=model, physics=physics, optimizer=optimizer, scheduler=scheduler, train_dataloader=loader,
            eval_dataloader=torch.utils.data.DataLoader(eval_set, batch_size=args.batch_size),
            epochs=args.evals, online_measurements=True, metrics=quality_metrics(),
            save_path=str(out / strategy), device=args.device, verbose=False, show_progress_bar=True,
            freq_update_progress_bar=10, compute_train_metrics=False,
            non_blocking_transfers=torch.device(args.device).type == "cuda",
            strategy=strategy, levels=args.levels, mge_levels=args.mge_levels, growth=args.growth,
            coarse_mode=args.coarse_mode, coarse_noise=args.coarse_noise,
        )  # fmt: skip
        print(f"\n== {args.task}: {strategy} ==")
        trainer.train()
    clean = test_clean.to(args.device)
    y, x_net = reconstruct(model, physics, clean, seed=args.seed + 1)
    row = {"strategy": strategy, **score(x_net, clean), "seconds": trainer.train_seconds}
    row.update(trainer.cost.summary())
    return {"row": row, "history": trainer.history, "y": y.cpu(), "x_net": x_net.cpu()}


def _write_figure(task: str, results: dict[str, dict], test_clean: torch.Tensor, path: Path) -> None:
    plt = pyplot()
    show = int(test_clean.flatten(1).std(dim=1).argmax())  # the test crop with the most structure
    first = next(iter(results.values()))
    images = [("measurement", first["y"][show])]
    images += [(name, result["x_net"][show]) for name, result in results.items()]
    images += [("ground truth", test_clean[show])]
    fig = plt.figure(figsize=(3.2 * (2 + len(images)), 3.4))
    grid = fig.add_gridspec(1, 2 + len(images))
    curves = {name: result["history"] for name, result in results.items()}
    for column, axis in enumerate(COST_AXES):
        ax = fig.add_subplot(grid[0, column])
        plot_quality_against_cost(ax, curves, axis, quality_key="PSNR", ylabel="eval PSNR (dB)")
        ax.legend()
    for offset, (title, image) in enumerate(images):
        if image.shape[-1] != test_clean.shape[-1]:  # low-resolution measurement: show it at its size
            title += f" ({image.shape[-1]} px)"
        show_image(fig.add_subplot(grid[0, 2 + offset]), image, title)
    save_figure(fig, path, f"mge-train {task}")


def run_task(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train the requested strategies one after another; return the summary rows."""
    if args.strategy not in available_strategies():
        raise SystemExit(f"unknown strategy {args.strategy!r}; use one of {', '.join(available_strategies())}")
    if args.size % 2**args.levels:
        raise SystemExit(f"--size {args.size} is not divisible by 2**levels = {2**args.levels}; pick another size")
    out = args.out / args.task
    out.mkdir(parents=True, exist_ok=True)
    images = folder_images(args.data, args.channels) if args.data else bundled_images(TRAIN_IMAGES, args.channels)
    per_epoch = math.ceil(args.steps / args.evals) * args.batch_size
    train_set = ImageCrops(images, args.size, per_epoch, seed=args.seed)
    eval_set = ImageCrops(bundled_images(TEST_IMAGES, args.channels), args.size, 2 * args.batch_size, seed=1)
    test_clean = held_out_crops(args.size, 32, seed=2, channels=args.channels)

    strategies = [args.strategy] + ([] if args.no_baseline or args.strategy == "single" else ["single"])
    results = {s: _train_one(s, args, train_set, eval_set, test_clean, out) for s in strategies}
    rows = [r["row"] for r in results.values()]
    base = results.get("single", next(iter(results.values())))["row"]
    for row in rows:
        row["flop_saving"] = base["flops"] / row["flops"]
        row["time_saving"] = base["seconds"] / row["seconds"]

    header = (
        f"{'strategy':<16}{'PSNR':>8}{'SSIM':>8}{'GFLOPs':>10}{'work':>9}{'seconds':>9}"
        f"{'FLOP saving':>13}{'time saving':>13}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(
            f"{r['strategy']:<16}{r['psnr']:>8.2f}{r['ssim']:>8.3f}{r['flops'] / 1e9:>10.1f}{r['work_units']:>9.0f}"
            f"{r['seconds']:>9.1f}{r['flop_saving']:>12.2f}x{r['time_saving']:>12.2f}x"
        )
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
    _write_figure(args.task, results, test_clean, out / "figure.png")
    print(f"\nwrote {out / 'summary.csv'}, {out / 'history.csv'}, {out / 'figure.png'} and checkpoints under {out}/")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``mge-train``."""
    run_task(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
