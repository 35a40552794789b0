"""Training process for the kill-and-resume test: ``python resume_child.py SAVE_DIR OUT [CKPT] [--delay S]``.

Trains a tiny MONAI denoiser with Full-Multiscale on a shuffled loader, with coupled noise drawn
from the global generator, checkpointing every epoch through :class:`AtomicCheckpointSaver`
together with a :class:`RandomState`; writes the final weights to ``OUT``. With ``CKPT`` it
resumes from that checkpoint. ``--delay`` sleeps after each iteration, so a test can kill it.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from ignite.engine import Events
from mge_monai import AtomicCheckpointSaver, MultiscaleSupervisedTrainer
from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointLoader
from monai.networks.nets import UNet

from mge_plugins.checkpoint import RandomState

EPOCHS = 6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("save_dir")
    parser.add_argument("out")
    parser.add_argument("ckpt", nargs="?")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clean = torch.rand(32, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)  # 32 px, piecewise constant
    loader = DataLoader(Dataset([{"image": c, "label": c} for c in clean]), batch_size=8, shuffle=True)
    network = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 16), strides=(2,), num_res_units=1)
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = MultiscaleSupervisedTrainer(
            device="cpu", max_epochs=EPOCHS, train_data_loader=loader, network=network, optimizer=optimizer,
            loss_function=torch.nn.MSELoss(), strategy="full-multiscale", levels=2, noise_sigma=0.1,
        )  # fmt: skip
        objects = {"net": network, "opt": optimizer, "trainer": trainer, "rng": RandomState(loader)}
        AtomicCheckpointSaver(args.save_dir, save_dict=objects, save_interval=1, n_saved=None).attach(trainer)
        if args.ckpt:
            CheckpointLoader(args.ckpt, load_dict=objects).attach(trainer)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: time.sleep(args.delay))
        trainer.run()
    torch.save({"state_dict": network.state_dict(), "steps": trainer.cost.steps}, args.out)


if __name__ == "__main__":
    main()
