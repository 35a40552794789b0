"""Gaussian denoising with deepinv's trainer on several processes: ``MultiscaleTrainer`` on a DDP model.

    torchrun --standalone --nproc_per_node 2 examples/ddp_deepinv_denoise.py
    torchrun --standalone --nproc_per_node 2 examples/ddp_deepinv_denoise.py --epochs 1 --crops 64 --size 32

Each rank loads ``--batch`` crops per step from its ``DistributedSampler`` shard (the trainer sets
the sampler's epoch); rank 0 prints, evaluates into the history and writes the checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import deepinv as dinv
import torch
import torch.distributed as dist
from example_args import make_parser, positive_int
from mge_deepinv import MultiscaleTrainer
from mge_deepinv.data import TEST_IMAGES, ImageCrops, bundled_images
from torch.utils.data import DataLoader, DistributedSampler

from mge_plugins.distributed import is_main_process, rank, world_size

parser = make_parser(__doc__)
parser.add_argument("--epochs", type=positive_int, default=4, help="epochs")
parser.add_argument("--batch", type=positive_int, default=8, help="crops loaded per rank per step")
parser.add_argument("--crops", type=positive_int, default=256, help="training crops (shared by all ranks)")
parser.add_argument("--size", type=positive_int, default=64, help="crop side in pixels")
parser.add_argument("--out", type=Path, default=Path("results/ddp_deepinv_denoise"), help="checkpoint folder")
args = parser.parse_args()

dist.init_process_group("gloo")  # torchrun sets the rank, the world size and the address
torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
backbone = dinv.models.DnCNN(1, 1, depth=5, nf=32, pretrained=None)  # no BatchNorm, no download
model = torch.nn.parallel.DistributedDataParallel(dinv.models.ArtifactRemoval(backbone))
torch.manual_seed(1 + rank())  # each rank draws its own measurement noise

train = ImageCrops(bundled_images(), size=args.size, length=args.crops)
train_loader = DataLoader(train, batch_size=args.batch, sampler=DistributedSampler(train, shuffle=True, seed=0))
evaluation = ImageCrops(bundled_images(TEST_IMAGES), size=args.size, length=16, seed=1)
eval_loader = DataLoader(evaluation, batch_size=16)  # every rank evaluates the same crops

trainer = MultiscaleTrainer(
    model=model,
    physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
    optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
    train_dataloader=train_loader,
    eval_dataloader=eval_loader,
    epochs=args.epochs,
    online_measurements=True,
    metrics=[dinv.metric.PSNR()],
    save_path=str(args.out),  # cleared on ranks other than 0
    device="cpu",
    strategy="full-multiscale",
    levels=2,
)
trainer.train()
if is_main_process():
    print(f"ranks {world_size()}: eval PSNR per epoch {trainer.eval_metrics_history['PSNR']}")
    print(f"cost of all ranks: {trainer.cost.summary()}")
dist.barrier()  # every rank waits for rank 0's report: ranks that exit early can abort gloo
dist.destroy_process_group()
