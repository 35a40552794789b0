from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepinv")

from mge_plugins.schedule import halving_split

from ..killing import finish, kill_after_checkpoint, run_child, start_child

CHILD = Path(__file__).with_name("resume_child.py")


def test_sigkilled_run_resumed_from_its_latest_checkpoint_ends_with_identical_weights(tmp_path: Path) -> None:
    start = time.monotonic()
    uninterrupted = start_child(CHILD, str(tmp_path / "full"), str(tmp_path / "full.pt"))
    code = kill_after_checkpoint(
        CHILD, str(tmp_path / "killed"), str(tmp_path / "never.pt"), "--delay", "0.1",
        folder=tmp_path / "killed", pattern="ckp_[0-9]*.pth.tar",
    )  # fmt: skip
    finish(uninterrupted)
    assert code == -signal.SIGKILL and not (tmp_path / "never.pt").exists()
    checkpoints = sorted(
        (p for p in (tmp_path / "killed").rglob("ckp_[0-9]*.pth.tar")), key=lambda p: int(p.name[4:-8])
    )
    latest = checkpoints[-1]
    state = torch.load(latest, weights_only=False)
    # 6 epochs of 4 batches; the checkpoint lies strictly inside a Full-Multiscale stage.
    done = state["multiscale"]["train_ite"] + 1
    boundaries = torch.tensor(halving_split(24, 3)).cumsum(0).tolist()
    assert done not in boundaries and done < boundaries[-1], (done, boundaries)
    assert {"rng", "scaler", "cost"} <= set(state["multiscale"]) and "optimizer" in state
    run_child(CHILD, str(tmp_path / "resumed"), str(tmp_path / "resumed.pt"), str(latest))
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "resumed.pt")
    assert full["steps"] == resumed["steps"] == 24
    for name, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name
    assert time.monotonic() - start < 60
