"""Gaussian denoising with deepinv, trained by multiscale training: `MultiscaleTrainer` replaces `dinv.Trainer`.

python examples/deepinv_denoise.py [--strategy mge|full-multiscale|single] [--data DIR] [--device cuda]
"""

from __future__ import annotations

import deepinv as dinv
import torch
from deepinv_common import loaders, parse_args
from mge_deepinv import MultiscaleTrainer

args = parse_args(__doc__)
train_loader, eval_loader = loaders(args)
physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1), device=args.device)
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
    metrics=[dinv.metric.PSNR(), dinv.metric.SSIM()],
    save_path=str(args.out / "denoise"),
    device=args.device,
    strategy=args.strategy,
)
trainer.train()
print(f"eval PSNR per epoch: {trainer.eval_metrics_history['PSNR']}")
print(f"cost: {trainer.cost.summary()}")
