"""deepinv's "Training a reconstruction model" demo, offline, with the trainer class swapped.

The demo (``examples/models/demo_training.py`` in deepinv) as written there: inpainting with one
fixed random pixel mask keeping 80 %, 50 grayscale 64x64 images split 40 / 10, measurements
generated once into an HDF5 file (``generate_dataset``, offline), a UNet with 2 scales, batch 1,
5 epochs, Adam at 1e-3, ``SupLoss``. Only the images differ: crops of scikit-image's bundled
photographs instead of a download of Urban100.

``--trainer stock`` runs ``dinv.Trainer``; ``--trainer multiscale`` (default) swaps in
``MultiscaleTrainer`` with ``--strategy``, ``--budget`` and ``--fused`` passed through.

    python examples/deepinv_demo_training.py --trainer stock
    python examples/deepinv_demo_training.py --trainer multiscale --budget compute
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import deepinv as dinv
import torch
from example_args import make_parser, positive_int
from mge_deepinv.data import ImageCrops, bundled_images
from stock_common import add_swap_options, build_trainer, fine_flops, swap_summary

parser = make_parser(__doc__)
add_swap_options(parser)
parser.add_argument("--epochs", type=positive_int, default=5, metavar="N", help="epochs (the demo's 5)")
args = parser.parse_args()
torch.manual_seed(args.seed)
device = "cpu"
rng = torch.Generator(device=device).manual_seed(0)

physics = dinv.physics.Inpainting((1, 64, 64), mask=0.8, device=device, rng=rng)

dataset = ImageCrops(bundled_images(), 64, 50, seed=args.seed)  # was: Urban100HR, Resize(256), CenterCrop(64)
train_dataset, test_dataset = torch.utils.data.random_split(
    dataset, (0.8, 0.2), generator=torch.Generator().manual_seed(0)
)
with tempfile.TemporaryDirectory() as folder:
    dataset_path = dinv.datasets.generate_dataset(
        train_dataset=train_dataset,
        test_dataset=test_dataset,
        physics=physics,
        device=device,
        save_dir=folder,
        batch_size=1,
        verbose=False,
        show_progress_bar=False,
    )
    train_dataloader = torch.utils.data.DataLoader(
        dinv.datasets.HDF5Dataset(dataset_path, train=True),
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    test_dataloader = torch.utils.data.DataLoader(dinv.datasets.HDF5Dataset(dataset_path, train=False), shuffle=False)

    model = dinv.models.ArtifactRemoval(dinv.models.UNet(1, 1, scales=2, batch_norm=False).to(device))
    options = dict(
        model=model,
        physics=physics,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        train_dataloader=train_dataloader,
        eval_dataloader=test_dataloader,
        epochs=args.epochs,
        losses=dinv.loss.SupLoss(metric=dinv.metric.MSE()),
        metrics=dinv.metric.PSNR(),
        device=device,
        plot_images=False,
        show_progress_bar=False,
        verbose=False,
        save_path=None,
    )
    trainer = build_trainer(args, **options)
    flops = fine_flops(model, physics, next(iter(train_dataloader))) if args.trainer == "stock" else None
    trainer.train()
    metrics = trainer.test(test_dataloader)

summary = swap_summary(args, "demo_training", trainer, metrics["PSNR"], flops, len(train_dataloader) * args.epochs)
print(json.dumps(summary))
if args.json:
    Path(args.json).write_text(json.dumps(summary, indent=2))
