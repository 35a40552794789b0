"""Two gloo processes under ``torchrun`` against one process on the same global batches.

DDP averages the ranks' gradients, and every rank cuts nested per-term prefixes from its own shard,
so global term ``k`` is the union of the ranks' prefixes of size ``N_k``. The one-process
reference loads a batch of ``2 * 16`` samples in which the ranks' shards are interleaved block by
block (``shard0[:4], shard1[:4], shard0[4:8], shard1[4:8], ...``): its nested prefixes of size
``2 * N_k`` are then exactly those unions, and its plan has per-term sizes ``2 * N_k``. The two
runs differ only in the order of floating-point sums, so the weights agree to float32 rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from mge_plugins import CostMeter, build_strategy, mge_step

from . import ddp_worker as w

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2


def torchrun(script: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 script args`` with this checkout on the path."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "integrations"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", str(script)]
    result = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def run_hosts(hosts: str, out: Path) -> dict[str, dict[str, Any]]:
    torchrun(Path(w.__file__), hosts, str(out))
    return {host: torch.load(out / f"{host}.pt") for host in hosts.split(",")}


def global_orders(epochs: list[int], interleave: bool = True) -> list[list[int]]:
    """Per step, the indices of the one-process batch equivalent to the ranks' shards."""
    strategy = build_strategy("full-multiscale", loaded_batch_size=w.RANK_BATCH, levels=w.LEVELS, iterations=6)
    bounds = sorted({n for step in range(6) for n in strategy.plan(step).batch_sizes})
    steps: list[list[int]] = []
    for epoch in epochs:
        shards = []
        for rank in range(WORLD):
            sampler = DistributedSampler(range(w.SAMPLES), num_replicas=WORLD, rank=rank, shuffle=True, seed=w.SEED)
            sampler.set_epoch(epoch)
            indices = list(sampler)
            shards.append([indices[i : i + w.RANK_BATCH] for i in range(0, len(indices), w.RANK_BATCH)])
        for per_rank in zip(*shards, strict=True):
            if not interleave:
                steps.append([i for shard in per_rank for i in shard])
                continue
            order: list[int] = []
            for lo, hi in zip([0, *bounds[:-1]], bounds, strict=True):
                for shard in per_rank:
                    order += shard[lo:hi]
            steps.append(order)
    return steps


def plain_reference(interleave: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    data = w.pairs()
    model = w.small_net()
    optimizer = w.optimizer_for(model)
    strategy = build_strategy("full-multiscale", loaded_batch_size=w.RANK_BATCH, levels=w.LEVELS, iterations=6)
    meter = CostMeter(baseline_batch_size=WORLD * w.RANK_BATCH, world_size=1)
    for step, order in enumerate(global_orders(list(range(w.EPOCHS)), interleave)):
        plan = strategy.plan(step)
        plan = replace(plan, batch_sizes=tuple(WORLD * n for n in plan.batch_sizes))
        batch = (torch.stack([data[i][0] for i in order]), torch.stack([data[i][1] for i in order]))
        mge_step(model, optimizer, nn.MSELoss(), batch, plan, meter=meter)
    return model.state_dict(), meter.summary()


def assert_weights_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_plain_mge_step_on_two_ranks_matches_one_process_on_the_global_batches(tmp_path: Path) -> None:
    result = run_hosts("plain", tmp_path)["plain"]
    expected, cost = plain_reference()
    assert_weights_close(result["state"], expected)
    # The test can tell: the same samples cut as one plain concatenation form other terms.
    wrong, _ = plain_reference(interleave=False)
    with pytest.raises(AssertionError):
        assert_weights_close(result["state"], wrong)
    # One all-reduce per optimizer step, also at the 3-term stage (5 backward passes).
    assert result["reductions"] == [1] * 6
    # The meter counts both ranks' work: the same totals as the one-process run on 2x batches.
    assert result["cost"] == pytest.approx(cost)
    assert result["cost"]["baseline_work_units"] == 6 * WORLD * w.RANK_BATCH
    assert "ranks disagree (step ranges over 0..1" in result["error"]


def test_ddp_example_runs_under_torchrun(tmp_path: Path) -> None:
    script = ROOT / "examples" / "ddp_plain_denoise.py"
    options = ["--steps", "6", "--batch", "16", "--size", "32", "--width", "4", "--samples", "32"]
    result = torchrun(script, *options, "--out", str(tmp_path))
    lines = result.stdout.splitlines()
    assert sum(line.startswith("ranks 2: PSNR") for line in lines) == 1  # printed by rank 0 only
    assert "step 5 level 0 terms (4, 8, 16) x 2 ranks" in result.stdout
    checkpoint = torch.load(tmp_path / "checkpoint.pt")
    # The meter holds the work of both ranks: twice what one rank's plans cost.
    meter = CostMeter(baseline_batch_size=16, world_size=2)
    strategy = build_strategy("full-multiscale", loaded_batch_size=16, levels=2, iterations=6)
    for step in range(6):
        meter.add(strategy.plan(step).batch_sizes, strategy.plan(step).level)
    assert checkpoint["step"] == 6 and checkpoint["cost"]["work_units"] == meter.work_units


@pytest.fixture(scope="module")
def host_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, dict[str, Any]], Path]:
    out = tmp_path_factory.mktemp("ddp_hosts")
    return run_hosts("deepinv,monai", out), out


@pytest.mark.slow
def test_deepinv_trainer_on_two_ranks_matches_one_process(host_runs, tmp_path: Path) -> None:
    import deepinv as dinv
    from mge_deepinv import MultiscaleTrainer

    runs, out = host_runs
    model = w.deepinv_net()
    order = [i for step in global_orders(list(range(w.EPOCHS))) for i in step]
    trainer = MultiscaleTrainer(
        model=model,
        physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
        optimizer=w.optimizer_for(model),
        train_dataloader=DataLoader(w.pairs(), batch_size=WORLD * w.RANK_BATCH, sampler=order),
        epochs=1,
        online_measurements=False,
        coarse_mode="restrict",
        metrics=[],
        save_path=None,
        strategy="full-multiscale",
        levels=w.LEVELS,
        device="cpu",
        verbose=False,
    )
    trainer.train()
    assert_weights_close(runs["deepinv"]["state"], model.state_dict())
    assert runs["deepinv"]["cost"] == pytest.approx(trainer.cost.summary())
    # Only rank 0 wrote checkpoints (each rank was given its own folder to show it).
    assert list((out / "ckpt_rank0").rglob("*.pth.tar")) and not (out / "ckpt_rank1").exists()


@pytest.mark.slow
def test_monai_trainer_on_two_ranks_matches_one_process(host_runs) -> None:
    from mge_monai import MultiscaleSupervisedTrainer

    runs, _ = host_runs
    network = w.small_net()
    data = [{"image": noisy, "label": clean} for noisy, clean in w.pairs()]
    order = [i for step in global_orders([1, 2]) for i in step]  # ignite counts epochs from 1
    trainer = MultiscaleSupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=DataLoader(data, batch_size=WORLD * w.RANK_BATCH, sampler=order),
        network=network,
        optimizer=w.optimizer_for(network),
        loss_function=nn.MSELoss(),
        strategy="full-multiscale",
        levels=w.LEVELS,
    )
    trainer.run()
    assert_weights_close(runs["monai"]["state"], network.state_dict())
    assert runs["monai"]["cost"] == pytest.approx(trainer.cost.summary())


@pytest.mark.slow
@pytest.mark.parametrize("host", ["deepinv", "monai"])
def test_host_ddp_examples_run_under_torchrun(host: str, tmp_path: Path) -> None:
    pytest.importorskip(host)
    script = ROOT / "examples" / f"ddp_{host}_denoise.py"
    options = ["--epochs", "1", "--crops", "112", "--size", "32", "--out", str(tmp_path)]
    result = torchrun(script, *options)
    assert sum(line.startswith("ranks 2: ") for line in result.stdout.splitlines()) == 1  # rank 0 only
    # 7 steps of 8 crops per rank (56 of the 112 each), 3 stages; the meter counts both ranks.
    meter = CostMeter(baseline_batch_size=8, world_size=2)
    strategy = build_strategy("full-multiscale", loaded_batch_size=8, levels=2, iterations=7)
    for step in range(7):
        meter.add(strategy.plan(step).batch_sizes, strategy.plan(step).level)
    assert f"'steps': 7, 'work_units': {meter.work_units}" in result.stdout
    assert list(tmp_path.rglob("*.pt*"))  # rank 0 wrote its checkpoint
