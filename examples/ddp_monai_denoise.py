"""2D denoising of retina crops with MONAI on several processes: ``MultiscaleSupervisedTrainer`` on DDP.

    torchrun --standalone --nproc_per_node 2 examples/ddp_monai_denoise.py
    torchrun --standalone --nproc_per_node 2 examples/ddp_monai_denoise.py --epochs 1 --crops 64 --size 32

Each rank loads ``--batch`` crops per iteration from its ``DistributedSampler`` shard (MONAI's
workflow sets the sampler's epoch). The logging and checkpoint handlers are attached on rank 0
only, the MONAI idiom for distributed training.
"""

from __future__ import annotations

import logging
from pathlib import Path

import ignite.distributed as idist
import torch
import torch.distributed as dist
from example_args import make_parser, positive_int
from mge_monai import MultiscaleSupervisedTrainer
from mge_monai.data import retina_image
from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointSaver, StatsHandler, from_engine
from monai.networks.layers import SkipConnection
from monai.networks.nets import SegResNet
from monai.transforms import CopyItemsd, RandSpatialCropd
from torch.utils.data import DistributedSampler

from mge_plugins.distributed import is_main_process, world_size

parser = make_parser(__doc__)
parser.add_argument("--epochs", type=positive_int, default=4, help="epochs")
parser.add_argument("--batch", type=positive_int, default=8, help="crops loaded per rank per iteration")
parser.add_argument("--crops", type=positive_int, default=256, help="training crops per epoch (shared by all ranks)")
parser.add_argument("--size", type=positive_int, default=64, help="crop side in pixels")
parser.add_argument("--out", type=Path, default=Path("results/ddp_monai_denoise"), help="checkpoint folder")
args = parser.parse_args()

dist.init_process_group("gloo")  # torchrun sets the rank, the world size and the address
idist.sync()  # on every rank: ignite's first rank query creates a group, a collective (rank-0 handlers hang without it)
logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING)
crop = RandSpatialCropd(keys="label", roi_size=(args.size,) * 2, random_size=False)
train = Dataset([{"label": retina_image()}] * args.crops, [crop, CopyItemsd(keys="label", names="image")])
loader = DataLoader(train, batch_size=args.batch, sampler=DistributedSampler(train, shuffle=True, seed=0))

torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
network = SkipConnection(  # a residual SegResNet: group norm, no BatchNorm
    SegResNet(2, init_filters=8, in_channels=1, out_channels=1, blocks_down=(1, 1, 1), blocks_up=(1, 1)), mode="add"
)
network = torch.nn.parallel.DistributedDataParallel(network)
optimizer = torch.optim.Adam(network.parameters(), 1e-3)
handlers = []
if is_main_process():  # one process logs and writes checkpoints
    handlers = [
        StatsHandler(name="train", output_transform=from_engine(["loss"], first=True), tag_name="fine loss"),
        CheckpointSaver(str(args.out), {"network": network, "optimizer": optimizer}, save_final=True),
    ]
trainer = MultiscaleSupervisedTrainer(
    device="cpu",
    max_epochs=args.epochs,
    train_data_loader=loader,
    network=network,
    optimizer=optimizer,
    loss_function=torch.nn.MSELoss(),
    train_handlers=handlers,
    strategy="full-multiscale",
    levels=2,
    noise_sigma=0.1,  # input = label + noise drawn at the fine grid, restricted per level
)
trainer.run()
if is_main_process():
    print(f"ranks {world_size()}: cost of all ranks {trainer.cost.summary()}")
dist.barrier()  # every rank waits for rank 0's report: ranks that exit early can abort gloo
dist.destroy_process_group()
