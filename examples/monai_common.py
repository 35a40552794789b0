"""Training, evaluation and reporting shared by the MONAI examples."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar
from mge_monai import MultiscaleSupervisedTrainer
from monai.data import DataLoader
from monai.metrics import PSNRMetric, SSIMMetric
from monai.utils import set_determinism


def parse_args(
    description: str, tasks: tuple[str, ...], size: int, batch_size: int, iterations_per_epoch: int = 25
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--task", choices=tasks, default=tasks[0])
    parser.add_argument("--strategy", default="full-multiscale", help="full-multiscale, mge or single")
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--size", type=int, default=size, help="crop side, divisible by 2**(levels + 2)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations-per-epoch", type=int, default=iterations_per_epoch)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--data", type=Path, help="folder of input files (default: bundled or synthetic data)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    set_determinism(seed=args.seed)  # same crops and noise for every strategy
    return args


def train_and_report(args, name: str, network, train_set, test_batch: dict, loss=None) -> dict:
    """Train with the chosen strategy, show progress, evaluate at the fine level, write a summary."""
    device = torch.device(args.device)
    network = network.to(device)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=0)
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
    )
    ProgressBar(persist=True).attach(
        trainer, output_transform=lambda out: {"loss": float(out[0]["loss"]), "level": out[0].get("mge_level", 0)}
    )
    seconds = {"train": 0.0}
    trainer.add_event_handler(Events.STARTED, lambda e: seconds.update(start=time.perf_counter()))
    trainer.add_event_handler(Events.COMPLETED, lambda e: seconds.update(train=time.perf_counter() - seconds["start"]))
    trainer.run()

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
    summary = {"example": name, "task": args.task, "strategy": args.strategy, "seconds": seconds["train"]}
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
        f"{saving:.2f}x less work than single-scale for the same iterations; {seconds['train']:.1f} s\n"
        f"wrote {out}/"
    )
    return summary
