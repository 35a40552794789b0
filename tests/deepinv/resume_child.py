"""Training process for the kill-and-resume test: ``python resume_child.py SAVE_DIR OUT [CKPT] [--delay S]``.

Trains a tiny denoiser with Full-Multiscale on a shuffled loader, with its own noise generator,
checkpointing every epoch; writes the final weights to ``OUT``. With ``CKPT`` it resumes from
that checkpoint. ``--delay`` sleeps after each training step, so a test can kill it mid-run.
"""

from __future__ import annotations

import argparse
import time
import warnings

import deepinv as dinv
import torch
from mge_deepinv import MultiscaleTrainer

EPOCHS = 6


class SlowTrainer(MultiscaleTrainer):
    """Sleeps after every training step (the sleep draws no random numbers)."""

    delay: float = 0.0

    def step(self, epoch, progress_bar, train_ite=None, train=True, **kwargs):
        super().step(epoch, progress_bar, train_ite=train_ite, train=train, **kwargs)
        if train:
            time.sleep(self.delay)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("save_dir")
    parser.add_argument("out")
    parser.add_argument("ckpt", nargs="?")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = torch.rand(32, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)  # 32 px, piecewise constant
    loader = torch.utils.data.DataLoader(images, batch_size=8, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None))
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1, rng=torch.Generator().manual_seed(1)))
        trainer = SlowTrainer(
            model=model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
            train_dataloader=loader, epochs=EPOCHS, online_measurements=True, save_path=args.save_dir,
            ckp_interval=1, ckpt_pretrained=args.ckpt, verbose=False, show_progress_bar=False, device="cpu",
            strategy="full-multiscale", levels=2, budget="steps",
        )  # fmt: skip
        trainer.delay = args.delay
        trainer.train()
    torch.save({"state_dict": model.state_dict(), "steps": trainer.cost.steps}, args.out)


if __name__ == "__main__":
    main()
