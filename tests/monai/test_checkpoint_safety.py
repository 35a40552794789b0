from __future__ import annotations

import contextlib
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("monai")
pytest.importorskip("ignite")

from ignite.engine import Engine
from mge_monai import AtomicCheckpointSaver, VerifiedCheckpointLoader
from monai.handlers import CheckpointSaver

from mge_plugins.checkpoint import CheckpointError, load_checkpoint

from ..killing import child_env

CHILD = Path(__file__).with_name("saving_child.py")

SAVERS = {
    "interval, n_saved=1": dict(save_interval=1, n_saved=1),
    "best metric": dict(save_key_metric=True, key_metric_name="score"),
    "best metric, fixed name": dict(save_key_metric=True, key_metric_name="score", key_metric_filename="best.pt"),
    "final": dict(save_final=True),
}


class Killed(Exception):
    """Stands for the process dying in the middle of a save."""


def epoch_engine(net: torch.nn.Module, epoch: int = 0) -> Engine:
    """One iteration per epoch; sets every weight and the metric ``score`` to the epoch number."""

    def step(engine: Engine, batch: object) -> None:
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.fill_(engine.state.epoch)
        engine.state.metrics["score"] = float(engine.state.epoch)

    engine = Engine(step)
    if epoch:
        engine.load_state_dict({"epoch": epoch, "epoch_length": 1, "max_epochs": epoch})
    return engine


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def run_with_saver(net: torch.nn.Module, saver: CheckpointSaver, first_epoch: int, epochs: int) -> None:
    engine = epoch_engine(net, first_epoch)
    saver.attach(engine)
    engine.run([0], max_epochs=first_epoch + epochs)


@pytest.mark.parametrize("kind", SAVERS)
def test_a_save_that_dies_before_its_rename_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    net = torch.nn.Linear(4, 4)
    saver = AtomicCheckpointSaver(str(tmp_path), save_dict={"net": net}, **SAVERS[kind])
    run_with_saver(net, saver, 0, 1)
    (previous,) = files(tmp_path)
    real_save = torch.save

    def dies_half_way(obj, handle, **kwargs) -> None:
        real_save(obj, handle, **kwargs)
        handle.truncate(handle.tell() // 2)
        raise Killed  # after the write, before the rename and before any removal

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(Killed):
        run_with_saver(net, saver, 1, 1)
    # ignite asked to remove the previous file before this save; it must still be there, complete.
    assert files(tmp_path) == [previous]
    assert all(torch.all(w == 1) for w in load_checkpoint(tmp_path / previous).values())
    monkeypatch.setattr(torch, "save", real_save)
    run_with_saver(net, saver, 2, 1)  # the next save succeeds: the saver keeps one file again
    (latest,) = files(tmp_path)
    assert all(torch.all(w == 3) for w in load_checkpoint(tmp_path / latest).values())
    assert latest == previous if kind == "best metric, fixed name" else latest != previous


def test_without_the_fix_ignites_order_loses_the_only_checkpoint(tmp_path: Path, monkeypatch) -> None:
    # The negative control: MONAI's own saver (ignite removes first, then writes) under the same fault.
    net = torch.nn.Linear(4, 4)
    saver = CheckpointSaver(str(tmp_path), save_dict={"net": net}, save_interval=1, n_saved=1)
    run_with_saver(net, saver, 0, 1)
    assert len(files(tmp_path)) == 1

    def dies(obj, handle, **kwargs) -> None:
        raise Killed

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(Killed):
        run_with_saver(net, saver, 1, 1)
    assert files(tmp_path) == []


def test_the_loader_refuses_a_corrupted_checkpoint_naming_it(tmp_path: Path) -> None:
    net = torch.nn.Linear(64, 64)
    saver = AtomicCheckpointSaver(str(tmp_path), save_dict={"net": net, "opt": torch.optim.SGD(net.parameters())},
                                  save_interval=1, n_saved=1)  # fmt: skip
    run_with_saver(net, saver, 6, 1)  # every weight is 7.0
    (name,) = files(tmp_path)
    path = tmp_path / name
    fresh = torch.nn.Linear(64, 64)
    VerifiedCheckpointLoader(str(path), load_dict={"net": fresh})(Engine(lambda e, b: None))
    assert all(torch.all(w == 7) for w in fresh.state_dict().values())
    data = bytearray(path.read_bytes())
    data[data.find(torch.full((64,), 7.0).numpy().tobytes()) + 1] ^= 0x01
    path.write_bytes(bytes(data))
    loader = VerifiedCheckpointLoader(str(path), load_dict={"net": fresh})
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} is corrupted"):
        loader(Engine(lambda e, b: None))
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} is not a readable checkpoint"):
        loader(Engine(lambda e, b: None))


def _last_epoch(progress: Path) -> int:
    """The last epoch a worker listed in ``progress`` as saved (0 before any)."""
    text = progress.read_text() if progress.exists() else ""
    lines = text[: text.rfind("\n") + 1].split()
    return int(lines[-1]) if lines else 0


def _newest(folder: Path, pattern: str) -> tuple[int, Path] | None:
    found = [(int(float(m.group(1))), p) for p in folder.iterdir() if (m := re.fullmatch(pattern, p.name))]
    return max(found) if found else None


@pytest.mark.slow  # about 12 s on a 2-core machine: 24 forked workers save and are killed
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the workers are forked")
def test_killed_at_random_moments_the_latest_checkpoints_are_always_complete(tmp_path: Path) -> None:
    save_dir, progress = tmp_path / "runs", tmp_path / "progress.txt"
    server = subprocess.Popen(
        [sys.executable, str(CHILD), str(save_dir), str(progress)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=child_env(),
    )  # fmt: skip
    rng = random.Random(0)
    confirmed = 0  # the last epoch whose two checkpoints were both written before a kill
    pid = None
    mid_save = 0  # kills that left a temporary file: they struck during a write
    try:
        for kill in range(24):
            server.stdin.write("run\n")
            server.stdin.flush()
            line = server.stdout.readline()
            assert line.startswith("pid "), line + server.stderr.read()
            pid = int(line.split()[1])
            deadline = time.monotonic() + 60
            while _last_epoch(progress) <= confirmed:  # until this worker has saved once
                assert not select.select([server.stdout], [], [], 0.005)[0], "the worker died: " + server.stderr.read()
                assert time.monotonic() < deadline, "the worker saved nothing in 60 s"
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(pid, signal.SIGKILL)
            assert server.stdout.readline().split() == ["done", str(-signal.SIGKILL)]
            pid = None
            confirmed = _last_epoch(progress)
            for pattern in (r"checkpoint_epoch=(\d+)\.pt", r"checkpoint_key_metric=([\d.]+)\.pt"):
                newest = _newest(save_dir, pattern)
                assert newest is not None and newest[0] >= confirmed, (kill, pattern, confirmed, files(save_dir))
                epoch, path = newest
                state = load_checkpoint(path)  # complete, and its checksum matches
                assert state["trainer"]["iteration"] == epoch, (path, state["trainer"])  # one iteration per epoch
                assert all(torch.all(w == epoch) for w in state["net"].values()), path
            stale = [name for name in files(save_dir) if name.endswith(".tmp")]
            assert len(stale) <= 1, stale  # each kill leaves at most one; the next worker's first save removes it
            mid_save += len(stale)
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.stdin.close()
        server.wait(timeout=30)
        server.stdout.close()
        server.stderr.close()
    assert confirmed >= 24  # every worker saved before it was killed
    assert mid_save >= 3, mid_save  # the kills did strike during writes (11 of 24 on a 2-core machine)
