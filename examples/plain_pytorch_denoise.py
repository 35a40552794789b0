"""Train a denoiser three ways in a plain PyTorch loop and compare what each spends.

Runs single-scale training (the baseline), Multiscale Gradient Estimation and Full-Multiscale on
random crops of the real photographs that ship inside scikit-image (or any folder of images with
``--data DIR``), then prints fine-level PSNR/SSIM on held-out images next to FLOPs, fine-equivalent
work units and wall-clock. Outputs go to ``results/plain_denoise/``.

    python examples/plain_pytorch_denoise.py                 # about a minute on a 2-core CPU
    python examples/plain_pytorch_denoise.py --size 256 --steps 4000 --device cuda
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch
from example_args import check_device, fail, make_parser, nonnegative_int, positive_float, positive_int
from plain_common import TEST_IMAGES, TRAIN_IMAGES, RandomCrops, bundled_images, make_pose, residual_denoiser
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchvision.io import ImageReadMode, decode_image
from tqdm.auto import tqdm

from mge_plugins import CostMeter, build_strategy, mge_step, required_batch_size
from mge_plugins.cost import measure_level_flops


def folder_images(folder: Path) -> list[torch.Tensor]:
    """Grayscale ``(1, H, W)`` float images from every PNG/JPEG in ``folder``; a problem ends the script."""
    if not folder.is_dir():
        fail(f"--data {folder}: no such folder; point --data at a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not paths:
        fail(f"--data: no .png/.jpg images in {folder}; point --data at a folder of images")
    images = []
    for path in paths:
        try:
            images.append(decode_image(str(path), mode=ImageReadMode.GRAY).float() / 255.0)
        except (RuntimeError, OSError):
            fail(f"--data: cannot decode {path}; replace or remove the file")
    return images


@torch.no_grad()
def evaluate(model: nn.Module, clean: torch.Tensor, noisy: torch.Tensor) -> tuple[float, float]:
    """Fine-level PSNR and SSIM on the held-out crops."""
    model.eval()
    out = model(noisy).clamp(0, 1)
    model.train()
    psnr = peak_signal_noise_ratio(out, clean, data_range=1.0).item()
    ssim = structural_similarity_index_measure(out, clean, data_range=1.0).item()
    return psnr, ssim


def train(name: str, args: argparse.Namespace, train_crops: RandomCrops, test, log_rows: list) -> dict:
    """Train one strategy from the same initial weights; return its summary row."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = residual_denoiser(args.width, args.depth).to(device)
    strategy = build_strategy(
        name,
        levels=args.levels,
        batch_size=args.batch_size if name == "single" else args.fine_batch,
        iterations=args.steps,
        mge_levels=args.mge_levels,
        restriction=args.restriction,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    pose = make_pose(args.sigma, keep_std=args.coarse_noise == "keep")

    def level_loss(clean: torch.Tensor, level: int) -> torch.Tensor:
        noisy, target = pose(clean, level)
        return nn.functional.mse_loss(model(noisy), target)

    flops = measure_level_flops(level_loss, train_crops(1).to(device), args.levels, model.parameters())
    meter = CostMeter(spatial_dims=2, baseline_batch_size=args.batch_size, flops_per_sample=flops)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    elapsed = 0.0
    terminal = sys.stderr.isatty()  # in a log, plain lines instead of a bar's carriage returns
    bar = tqdm(range(args.steps), desc=f"{name:>15}", unit="step", leave=True, disable=not terminal)
    for step in bar:
        plan = strategy.plan(step)
        clean = train_crops(required_batch_size(plan.batch_sizes)).to(device)
        sync()
        start = time.perf_counter()
        stats = mge_step(model, optimizer, nn.MSELoss(), clean, plan, pose=pose, meter=meter)
        scheduler.step()
        sync()
        elapsed += time.perf_counter() - start
        bar.set_postfix(level=plan.level, loss=f"{stats.fine_loss:.2e}", saved=f"{meter.saving:.1f}x")
        if not terminal and ((step + 1) % max(1, args.steps // 10) == 0 or step + 1 == args.steps):
            print(
                f"{name}: step {step + 1}/{args.steps}, level {plan.level}, loss {stats.fine_loss:.2e}, "
                f"saving so far {meter.saving:.1f}x, {elapsed:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            psnr, ssim = evaluate(model, *test)
            log_rows.append(
                dict(
                    strategy=name,
                    step=step + 1,
                    level=plan.level,
                    fine_loss=stats.fine_loss,
                    psnr=psnr,
                    ssim=ssim,
                    flops=meter.flops,
                    work_units=meter.work_units,
                    seconds=elapsed,
                )
            )
    psnr, ssim = evaluate(model, *test)
    return dict(strategy=name, psnr=psnr, ssim=ssim, seconds=elapsed, **meter.summary())


def main() -> None:
    """Parse arguments, train every strategy, print and save the comparison."""
    parser = make_parser(__doc__)
    parser.add_argument(
        "--data", type=Path, metavar="DIR", help="folder of training images (default: scikit-image's photographs)"
    )
    parser.add_argument("--strategies", default="single,mge,full-multiscale", help="comma-separated strategies")
    parser.add_argument("--size", type=positive_int, default=64, metavar="PX", help="crop side, divisible by 2**levels")
    parser.add_argument("--steps", type=positive_int, default=600, metavar="N", help="optimizer steps per strategy")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="single-scale batch size")
    parser.add_argument(
        "--fine-batch",
        type=positive_int,
        default=2,
        metavar="N",
        help="finest MGE batch; coarser terms grow 4x per level (2, 8, 32)",
    )
    parser.add_argument(
        "--mge-levels",
        type=nonnegative_int,
        default=None,
        metavar="N",
        help="cap on MGE levels inside Full-Multiscale stages (0 = none)",
    )
    parser.add_argument("--levels", type=nonnegative_int, default=2, metavar="N", help="coarser levels")
    parser.add_argument("--restriction", default="area", help="area, nearest or antialias")
    parser.add_argument("--sigma", type=positive_float, default=0.1, help="noise level")
    parser.add_argument(
        "--coarse-noise",
        choices=("keep", "restrict"),
        default="keep",
        help="noise std on coarse levels: 'keep' sigma (default) or 'restrict' it (sigma / 2**level)",
    )
    parser.add_argument("--width", type=positive_int, default=32, metavar="N", help="channels of the network")
    parser.add_argument("--depth", type=positive_int, default=5, metavar="N", help="convolutions of the network")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate, cosine-annealed")
    parser.add_argument("--eval-every", type=positive_int, default=50, metavar="N", help="steps between evaluations")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, crops and noise")
    parser.add_argument("--out", type=Path, default=Path("results/plain_denoise"), metavar="DIR", help="results folder")
    args = parser.parse_args()
    check_device(parser, args.device)
    if args.size % 2**args.levels:
        parser.error(f"--size {args.size} is not divisible by 2**levels = {2**args.levels}")

    images = folder_images(args.data) if args.data else bundled_images(TRAIN_IMAGES)
    small = min(min(im.shape[-2:]) for im in images)
    if small < args.size:
        fail(f"--size {args.size} is larger than the smallest training image ({small} px on a side); lower --size")
    train_crops = RandomCrops(images, args.size, args.seed)
    test_clean = RandomCrops(bundled_images(TEST_IMAGES), args.size, seed=12345)(32)
    test_noisy = test_clean + args.sigma * torch.randn(test_clean.shape, generator=torch.Generator().manual_seed(7))
    test = (test_clean.to(args.device), test_noisy.to(args.device))

    log_rows: list[dict] = []
    rows = [train(name, args, train_crops, test, log_rows) for name in args.strategies.split(",")]
    base = next((r for r in rows if r["strategy"] == "single"), rows[0])
    header = f"{'strategy':<16}{'PSNR':>8}{'SSIM':>8}{'GFLOPs':>10}{'work':>9}{'seconds':>9}{'FLOP saving':>13}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        r["flop_ratio_vs_single"] = base["flops"] / r["flops"]
        r["time_ratio_vs_single"] = base["seconds"] / r["seconds"]
        print(
            f"{r['strategy']:<16}{r['psnr']:>8.2f}{r['ssim']:>8.3f}{r['flops'] / 1e9:>10.1f}"
            f"{r['work_units']:>9.0f}{r['seconds']:>9.1f}{r['flop_ratio_vs_single']:>12.2f}x"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log_rows[0]))
        writer.writeheader()
        writer.writerows(log_rows)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "summary.json").write_text(json.dumps({"config": config, "results": rows}, indent=2))
    print(f"\nwrote {args.out / 'log.csv'} and {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
