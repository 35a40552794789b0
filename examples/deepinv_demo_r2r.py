"""deepinv's "Self-supervised denoising with the Generalized R2R loss" demo, offline, trainer swapped.

The demo (``examples/self-supervised-learning/demo_r2r_denoising.py`` in deepinv) as written there:
Poisson noise of gain 0.5, measurements generated once into an HDF5 file, a UNet with 2 scales
(``residual=False``) adapted by ``R2RLoss(noise_model=None)``, Adam at 1e-4 with weight decay
1e-4 and a ``StepLR``, batch 1 (the demo's CPU setting), early stopping on the self-supervised
evaluation loss, PSNR measured at the end by ``trainer.test``. What differs, so it runs offline
and trains from scratch: 100 crops of 64x64 from scikit-image's bundled photographs (the demo's GPU
count) instead of MNIST, 10 epochs, and no pretrained checkpoint (the demo downloads one trained
for 10 epochs).

``--trainer stock`` runs ``dinv.Trainer``; ``--trainer multiscale`` (default) swaps in
``MultiscaleTrainer`` with ``--strategy``, ``--budget`` and ``--fused`` passed through.

    python examples/deepinv_demo_r2r.py --trainer stock
    python examples/deepinv_demo_r2r.py --trainer multiscale
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import deepinv as dinv
import torch
from example_args import make_parser, positive_int
from mge_deepinv.data import TEST_IMAGES, ImageCrops, bundled_images
from stock_common import add_swap_options, build_trainer, fine_flops, swap_summary

parser = make_parser(__doc__)
add_swap_options(parser)
parser.add_argument("--epochs", type=positive_int, default=10, metavar="N", help="epochs")
parser.add_argument("--images", type=positive_int, default=100, metavar="N", help="training crops")
args = parser.parse_args()
torch.manual_seed(args.seed)
device = "cpu"

physics = dinv.physics.Denoising(dinv.physics.PoissonNoise(gain=0.5))
train_dataset = ImageCrops(bundled_images(), 64, args.images, seed=args.seed)  # was: MNIST, 28x28
test_dataset = ImageCrops(bundled_images(TEST_IMAGES), 64, 20, seed=1)
with tempfile.TemporaryDirectory() as folder:
    torch.manual_seed(0)  # the same noisy measurements for both trainers
    dataset_path = dinv.datasets.generate_dataset(
        train_dataset=train_dataset,
        test_dataset=test_dataset,
        physics=physics,
        device=device,
        save_dir=folder,
        dataset_filename="demo_r2r",
        verbose=False,
    )
    train_dataset = dinv.datasets.HDF5Dataset(path=dataset_path, train=True)
    test_dataset = dinv.datasets.HDF5Dataset(path=dataset_path, train=False)

    torch.manual_seed(args.seed)
    model = dinv.models.ArtifactRemoval(
        dinv.models.UNet(in_channels=1, out_channels=1, scales=2, residual=False).to(device)
    )
    loss = dinv.loss.R2RLoss(noise_model=None)
    model = loss.adapt_model(model)  # important step!
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(args.epochs * 0.8) + 1)
    train_dataloader = torch.utils.data.DataLoader(train_dataset, batch_size=1, shuffle=False)
    test_dataloader = torch.utils.data.DataLoader(test_dataset, batch_size=1, shuffle=False)
    options = dict(
        model=model,
        physics=physics,
        epochs=args.epochs,
        scheduler=scheduler,
        losses=loss,
        optimizer=optimizer,
        device=device,
        metrics=None,  # no supervised metrics
        train_dataloader=train_dataloader,
        eval_dataloader=test_dataloader,
        early_stop=2,  # early stop using the self-supervised loss on the test set
        compute_eval_losses=True,  # use self-supervised loss for evaluation
        early_stop_on_losses=True,  # stop using self-supervised eval loss
        plot_images=False,
        save_path=None,
        verbose=False,
        show_progress_bar=False,
    )
    trainer = build_trainer(args, **options)
    flops = fine_flops(model, physics, next(iter(train_dataloader))) if args.trainer == "stock" else None
    model = trainer.train()
    epochs_run = len(next(iter(trainer.eval_loss_history.values())))  # early stopping may end sooner
    metrics = trainer.test(test_dataloader, metrics=dinv.metric.PSNR())

steps = len(train_dataloader) * epochs_run
summary = swap_summary(args, "demo_r2r", trainer, metrics["PSNR"], flops, steps)
print(json.dumps(summary))
if args.json:
    Path(args.json).write_text(json.dumps(summary, indent=2))
