"""Inpainting of missing blocks with deepinv, trained by multiscale training (`MultiscaleTrainer`).

python examples/deepinv_inpaint.py [--strategy mge|full-multiscale|single] [--data DIR] [--device cuda]
"""

from __future__ import annotations

import deepinv as dinv
import torch
from deepinv_common import loaders, parse_args
from example_args import fail
from mge_deepinv import BlockMaskGenerator, MultiscaleTrainer

args = parse_args(__doc__)
train_loader, eval_loader = loaders(args)
try:  # 30 % of the 8x8 blocks missing, a new mask per sample: exact on coarse levels up to 3
    masks = BlockMaskGenerator(
        (1, args.size, args.size), split_ratio=0.7, block=8, rng=torch.Generator(args.device).manual_seed(0),
        device=args.device,
    )  # fmt: skip
except ValueError as error:
    fail(f"--size {args.size}: {error}")
physics = dinv.physics.Inpainting(
    img_size=(1, args.size, args.size), mask=masks.step()["mask"], noise_model=dinv.physics.GaussianNoise(0.01),
    device=args.device,
)  # fmt: skip
backbone = dinv.models.DnCNN(1, 1, depth=5, nf=32, pretrained=None, device=args.device)  # no BatchNorm, no download
model = dinv.models.ArtifactRemoval(backbone, mode="adjoint", device=args.device)

trainer = MultiscaleTrainer(  # was: dinv.Trainer(
    model=model,
    physics=physics,
    optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
    train_dataloader=train_loader,
    eval_dataloader=eval_loader,
    epochs=args.epochs,
    online_measurements=True,
    physics_generator=masks,  # fresh masks for every training batch
    eval_seed=1,  # the same held-out masks and noise at every evaluation
    metrics=[dinv.metric.PSNR(), dinv.metric.SSIM()],
    save_path=str(args.out / "inpaint"),
    device=args.device,
    strategy=args.strategy,
)
trainer.train()
print(f"eval PSNR per epoch: {trainer.eval_metrics_history['PSNR']}")
print(f"cost: {trainer.cost.summary()}")
