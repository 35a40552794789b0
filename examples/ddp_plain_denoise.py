"""Full-Multiscale denoising in a plain PyTorch loop on several processes (DistributedDataParallel).

Every rank loads its own shard of each batch (``DistributedSampler``), cuts it into the step's
per-term batches and runs the MGE backward passes; DDP averages the ranks' gradients once per
optimizer step. Rank 0 prints progress, evaluates and writes the checkpoint.

    torchrun --standalone --nproc_per_node 2 examples/ddp_plain_denoise.py              # CPU, gloo
    torchrun --standalone --nproc_per_node 4 examples/ddp_plain_denoise.py --device cuda  # one GPU per rank
    python examples/ddp_plain_denoise.py                                                # one process
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from example_args import check_device, make_parser, nonnegative_int, positive_float, positive_int
from plain_common import TEST_IMAGES, TRAIN_IMAGES, bundled_images, make_pose, residual_denoiser
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mge_plugins import CostMeter, build_strategy, mge_step
from mge_plugins.cost import measure_level_flops
from mge_plugins.distributed import is_main_process, rank, set_loader_epoch, world_size


class Crops(Dataset):
    """``length`` fixed random crops of scikit-image's bundled photographs (grayscale, in [0, 1])."""

    def __init__(self, names: tuple[str, ...], size: int, length: int, seed: int) -> None:
        self.images = bundled_images(names)
        self.size, self.length, self.seed = size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)  # the same crop on every rank
        image = self.images[int(torch.randint(len(self.images), (1,), generator=gen))]
        top = int(torch.randint(image.shape[1] - self.size + 1, (1,), generator=gen))
        left = int(torch.randint(image.shape[2] - self.size + 1, (1,), generator=gen))
        return image[:, top : top + self.size, left : left + self.size]


def main() -> None:
    """Parse the options, train on every rank, report and save on rank 0."""
    parser = make_parser(__doc__)
    parser.add_argument("--steps", type=positive_int, default=300, help="optimizer steps, the same on every rank")
    parser.add_argument("--batch", type=positive_int, default=16, help="samples loaded per rank per step")
    parser.add_argument("--size", type=positive_int, default=64, help="crop side in pixels")
    parser.add_argument("--levels", type=nonnegative_int, default=2, help="coarser levels (stages minus one)")
    parser.add_argument("--width", type=positive_int, default=32, help="channels of the network")
    parser.add_argument("--sigma", type=positive_float, default=0.1, help="Gaussian noise level")
    parser.add_argument("--samples", type=positive_int, default=1024, help="training crops in the dataset")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, one GPU per rank)")
    parser.add_argument("--out", type=Path, default=Path("results/ddp_plain_denoise"), help="checkpoint folder")
    args = parser.parse_args()
    check_device(parser, args.device)

    distributed = "WORLD_SIZE" in os.environ  # set by torchrun
    if distributed:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.device == "cuda" else torch.device("cpu")
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)

    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    model = residual_denoiser(args.width).to(device)
    ddp = nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    strategy = build_strategy(
        "full-multiscale", loaded_batch_size=args.batch, levels=args.levels, iterations=args.steps
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)

    data = Crops(TRAIN_IMAGES, args.size, args.samples, seed=0)
    sampler = DistributedSampler(data, num_replicas=world_size(), rank=rank(), shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=args.batch, sampler=sampler, drop_last=True)
    torch.manual_seed(1 + rank())  # each rank draws its own noise

    pose = make_pose(args.sigma)

    def level_loss(clean: torch.Tensor, level: int) -> torch.Tensor:
        noisy, target = pose(clean, level)
        return nn.functional.mse_loss(model(noisy), target)

    probe = data[0][None].to(device)
    meter = CostMeter(baseline_batch_size=args.batch)  # counts the work of all ranks
    meter.flops_per_sample = measure_level_flops(level_loss, probe, strategy.coarsest_level, model.parameters())

    step, epoch = 0, 0
    while step < args.steps:
        set_loader_epoch([loader], epoch)  # a new shuffle per epoch, the same on every rank
        for clean in loader:
            if step == args.steps:
                break
            plan = strategy.plan(step)
            stats = mge_step(ddp, optimizer, nn.MSELoss(), clean.to(device), plan, pose=pose, meter=meter, step=step)
            scheduler.step()
            if is_main_process() and (step % 50 == 0 or step == args.steps - 1):
                print(
                    f"step {step} level {plan.level} terms {plan.batch_sizes} x {world_size()} ranks "
                    f"fine loss {stats.fine_loss:.5f} work units {meter.work_units:.1f}"
                )
            step += 1
        epoch += 1

    if is_main_process():
        test = torch.stack([Crops(TEST_IMAGES, args.size, 16, seed=1)[i] for i in range(16)]).to(device)
        gen = torch.Generator(device=device).manual_seed(2)
        noisy = test + args.sigma * torch.randn(test.shape, generator=gen, device=device)
        with torch.no_grad():
            mse = nn.functional.mse_loss(model(noisy).clamp(0, 1), test).item()
        summary = meter.summary()
        print(
            f"ranks {world_size()}: PSNR {10 * np.log10(1 / mse):.2f} dB (input "
            f"{10 * np.log10(1 / nn.functional.mse_loss(noisy, test).item()):.2f} dB), "
            f"GFLOPs {summary['flops'] / 1e9:.1f}, work units {summary['work_units']:.0f}, "
            f"saving {summary['saving']:.2f}x"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "cost": meter.state_dict(),
            },
            args.out / "checkpoint.pt",
        )
        print(f"checkpoint: {args.out / 'checkpoint.pt'}")
    if distributed:
        dist.barrier()  # every rank waits for rank 0's evaluation: ranks that exit early can abort gloo
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
