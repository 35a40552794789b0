"""One rank of a 2-process DDP run (``torchrun --nproc_per_node 2 ddp_worker.py HOSTS OUT_DIR``).

Each host of the comma-separated ``HOSTS`` (``plain``, ``deepinv``, ``monai``) trains a tiny
denoiser with Full-Multiscale on ``DistributedSampler`` shards and rank 0 saves the final weights
and the cost counters to ``OUT_DIR/HOST.pt``. The tests compare them with a one-process run on the
same global batches.
The data and the networks are built here so that the tests reuse them for the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

SAMPLES = 96  # 48 per rank
RANK_BATCH = 16  # loaded per rank per step: 3 steps per epoch
EPOCHS = 2
LEVELS = 2  # Full-Multiscale stages (16,), (8, 16), (4, 8, 16) per rank
SIZE = 16
SEED = 0


def pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed (noisy, clean) pairs: measurements are offline so that no rank draws noise."""
    gen = torch.Generator().manual_seed(1)
    clean = torch.rand(SAMPLES, 1, SIZE, SIZE, generator=gen)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=gen)
    return [(noisy[i], clean[i]) for i in range(SAMPLES)]


def small_net() -> nn.Module:
    """A tiny residual-free CNN, seeded, without normalisation layers."""
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1))


def deepinv_net() -> nn.Module:
    """A seeded 2-layer DnCNN (deepinv's networks take the physics' noise level as an argument)."""
    import deepinv as dinv

    torch.manual_seed(SEED)
    return dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=2, nf=8, pretrained=None))


def optimizer_for(model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum: deterministic and smooth in the gradients."""
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def counting_hook(counts: list[int]):
    """A DDP comm hook that all-reduces like the default one and counts its calls."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    def hook(state, bucket):  # unannotated: DDP rejects the string annotations of this module
        counts[-1] += 1
        return allreduce_hook(None, bucket)

    return hook


def run_plain(out: Path) -> dict[str, Any]:
    """A hand-written loop with ``mge_step`` on a DDP model."""
    from mge_plugins import CostMeter, build_strategy, mge_step
    from mge_plugins.distributed import set_loader_epoch

    ddp = nn.parallel.DistributedDataParallel(small_net())
    counts: list[int] = []
    ddp.register_comm_hook(None, counting_hook(counts))
    optimizer = optimizer_for(ddp)
    loader = DataLoader(pairs(), batch_size=RANK_BATCH, sampler=DistributedSampler(pairs(), shuffle=True, seed=SEED))
    iterations = EPOCHS * len(loader)
    strategy = build_strategy("full-multiscale", loaded_batch_size=RANK_BATCH, levels=LEVELS, iterations=iterations)
    meter = CostMeter(baseline_batch_size=RANK_BATCH)
    step = 0
    for epoch in range(EPOCHS):
        set_loader_epoch([loader], epoch)
        for noisy, clean in loader:
            counts.append(0)
            mge_step(ddp, optimizer, nn.MSELoss(), (noisy, clean), strategy.plan(step), meter=meter, step=step)
            step += 1
    from mge_plugins.distributed import check_ranks_agree

    try:  # a disagreement must be caught on every rank
        check_ranks_agree(step=dist.get_rank())
        disagreement = ""
    except RuntimeError as error:
        disagreement = str(error)
    return {"state": ddp.module.state_dict(), "cost": meter.summary(), "reductions": counts, "error": disagreement}


def run_deepinv(out: Path) -> dict[str, Any]:
    """``MultiscaleTrainer`` on a DDP model, checkpoints to a per-rank folder."""
    import deepinv as dinv
    from mge_deepinv import MultiscaleTrainer

    model = nn.parallel.DistributedDataParallel(deepinv_net())
    loader = DataLoader(pairs(), batch_size=RANK_BATCH, sampler=DistributedSampler(pairs(), shuffle=True, seed=SEED))
    trainer = MultiscaleTrainer(
        model=model,
        physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
        optimizer=optimizer_for(model),
        train_dataloader=loader,
        epochs=EPOCHS,
        online_measurements=False,
        coarse_mode="restrict",
        metrics=[],
        save_path=str(out / f"ckpt_rank{dist.get_rank()}"),
        strategy="full-multiscale",
        levels=LEVELS,
        device="cpu",
        show_progress_bar=False,
    )
    trainer.train()
    return {"state": model.module.state_dict(), "cost": trainer.cost.summary()}


def run_monai(out: Path) -> dict[str, Any]:
    """``MultiscaleSupervisedTrainer`` on a DDP network."""
    from mge_monai import MultiscaleSupervisedTrainer
    from monai.data import DataLoader as MonaiLoader

    network = nn.parallel.DistributedDataParallel(small_net())
    data = [{"image": noisy, "label": clean} for noisy, clean in pairs()]
    loader = MonaiLoader(data, batch_size=RANK_BATCH, sampler=DistributedSampler(data, shuffle=True, seed=SEED))
    trainer = MultiscaleSupervisedTrainer(
        device="cpu",
        max_epochs=EPOCHS,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer_for(network),
        loss_function=nn.MSELoss(),
        strategy="full-multiscale",
        levels=LEVELS,
    )
    trainer.run()
    return {"state": network.module.state_dict(), "cost": trainer.cost.summary()}


HOSTS = {"plain": run_plain, "deepinv": run_deepinv, "monai": run_monai}


def main() -> None:
    """Run the hosts named on the command line on this rank."""
    hosts, out = sys.argv[1].split(","), Path(sys.argv[2])
    dist.init_process_group("gloo")
    try:
        for host in hosts:
            result = HOSTS[host](out)
            if dist.get_rank() == 0:
                torch.save(result, out / f"{host}.pt")
    finally:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
