from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mge_plugins.checkpoint import (
    CheckpointError,
    RandomState,
    atomic_save,
    atomic_write,
    compute_checksum,
    load_checkpoint,
    loader_generators,
    rng_state,
    set_rng_state,
)

from ..killing import child_env


def test_a_save_failing_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"step": 1, "w": torch.arange(4.0)}, path)

    def half_then_crash(obj, handle) -> None:
        torch.save(obj, handle)
        handle.truncate(handle.tell() // 2)  # a partial file, as a kill mid-write leaves it
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 2, "w": torch.zeros(1000)}, path, save=half_then_crash)
    state = torch.load(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the partial temporary file is gone


def test_a_plain_torch_save_killed_mid_write_would_corrupt_it(tmp_path: Path) -> None:
    # What atomic_save prevents: writing in place and stopping half way leaves an unreadable file.
    path = tmp_path / "last.pt"
    torch.save({"step": 1}, path)
    with open(path, "wb") as handle:
        torch.save({"step": 2, "w": torch.zeros(1000)}, handle)
        handle.truncate(handle.tell() // 2)
    with pytest.raises(RuntimeError):
        torch.load(path)


def test_saved_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    plain, atomic = tmp_path / "plain.pt", tmp_path / "atomic.pt"
    torch.save({}, plain)
    atomic_save({}, atomic)
    assert atomic.stat().st_mode == plain.stat().st_mode


def test_rng_state_restores_every_stream_and_loads_with_weights_only(tmp_path: Path) -> None:
    owned = {
        "torch": torch.Generator().manual_seed(1),
        "numpy": np.random.default_rng(2),
        "numpy_legacy": np.random.RandomState(3),
        "python": random.Random(4),
    }

    def draw() -> list[float]:
        return [
            torch.rand(1).item(), float(np.random.rand()), random.random(),
            torch.rand(1, generator=owned["torch"]).item(), float(owned["numpy"].random()),
            float(owned["numpy_legacy"].rand()), owned["python"].random(),
        ]  # fmt: skip

    atomic_save(rng_state(owned), tmp_path / "rng.pt")
    first = draw()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), owned)
    assert draw() == first
    with pytest.raises(KeyError, match="no state for generator 'other'"):
        set_rng_state(rng_state(), {"other": torch.Generator()})


def test_random_state_replays_a_shuffled_loaders_order() -> None:
    loader = torch.utils.data.DataLoader(range(10), batch_size=5, shuffle=True, generator=torch.Generator())
    assert list(loader_generators(loader)) == ["loader.generator"]
    state = RandomState(loader)
    saved = state.state_dict()
    order = [b.tolist() for b in loader]
    state.load_state_dict(saved)
    assert [b.tolist() for b in loader] == order


def test_a_255_byte_file_name_saves_as_with_torch_save(tmp_path: Path) -> None:
    name = "c" * 252 + ".pt"  # the longest name ext4, XFS and tmpfs accept
    torch.save({"w": torch.ones(2)}, tmp_path / name)  # the hosts' savers accept it
    (tmp_path / name).unlink()
    atomic_save({"w": torch.ones(2)}, tmp_path / name)
    assert torch.equal(load_checkpoint(tmp_path / name)["w"], torch.ones(2))
    with atomic_write(tmp_path / "d" / ("e" * 255)) as tmp:
        assert len(tmp.name) == 17  # ".mge-XXXXXXXX.tmp", whatever the final name
        tmp.write_bytes(b"done")
    assert (tmp_path / "d" / ("e" * 255)).read_bytes() == b"done"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, "d"]


KILLED_SAVE = """
import sys, time, torch
from mge_plugins.checkpoint import atomic_save
def write_half_then_hang(obj, handle):
    torch.save(obj, handle)
    handle.truncate(handle.tell() // 2)
    handle.flush()
    print("writing", flush=True)
    time.sleep(600)
atomic_save({"w": torch.zeros(1000)}, sys.argv[1], save=write_half_then_hang)
"""


def test_the_temporary_file_of_a_killed_save_is_removed_at_the_next_save(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(tmp_path / "last.pt")], stdout=subprocess.PIPE, text=True,
        env=child_env(),
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "writing\n"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
        child.stdout.close()
    stale = [p.name for p in tmp_path.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".mge-") and stale[0].endswith(".tmp"), stale
    others = [".mge-ABCDEFGH.tmp", ".last.pt.abcdefgh.tmp", "notes.tmp", ".mge-abcdefgh.tmp.bak"]
    for name in others:  # not our pattern: never touched
        (tmp_path / name).write_bytes(b"keep")
    live = tmp_path / ".mge-live0000.tmp"  # a concurrent writer's file, held with its lock
    fd = os.open(live, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        atomic_save({"w": torch.ones(3)}, tmp_path / "last.pt")
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, live.name, "last.pt"])
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["w"], torch.ones(3))


def _flip_a_weight_byte(path: Path, value: float) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(np.full(64, value, dtype=np.float32).tobytes())  # inside the weight's storage
    assert at > 0
    data[at + 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["dict", "module state dict"])
def test_a_flipped_byte_in_a_weight_is_reported_naming_the_file(tmp_path: Path, kind: str) -> None:
    model = torch.nn.Linear(64, 64)
    torch.nn.init.constant_(model.weight, 1.5)
    obj = {"model": model.state_dict(), "step": 7} if kind == "dict" else model.state_dict()
    path = tmp_path / "ckpt.pt"
    atomic_save(obj, path)
    loaded = load_checkpoint(path)
    model.load_state_dict(loaded["model"] if kind == "dict" else loaded, strict=True)  # the checksum adds no key
    _flip_a_weight_byte(path, 1.5)
    flipped = torch.load(path, weights_only=True)  # what happens without the checksum: it loads
    weight = (flipped["model"] if kind == "dict" else flipped)["weight"]
    assert not torch.equal(weight, torch.full((64, 64), 1.5))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} is corrupted: .*restore the file") as error:
        load_checkpoint(path)
    assert error.value.reason == "corrupted" and "\n" not in str(error.value)


def test_the_checksum_does_not_depend_on_the_iteration_order_of_sets() -> None:
    first, second = {1}, {9}
    first.add(9)
    second.add(1)  # 1 and 9 share a slot: the two sets iterate in different orders
    assert list(first) != list(second)
    assert compute_checksum({"s": first}) == compute_checksum({"s": second})
    assert compute_checksum({"s": first}) != compute_checksum({"s": {1, 8}})


@pytest.mark.parametrize("content", ["empty", "truncated", "garbage"])
def test_an_unreadable_checkpoint_raises_one_line_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint\n" * 9}[content])
    with pytest.raises(Exception) as plain:  # what torch.load says: EOFError, OSError [Errno 22], KeyError
        torch.load(path, weights_only=True)
    assert str(path) not in str(plain.value)
    message = rf"^{re.escape(str(path))} is not a readable checkpoint \(.*\): it is truncated"
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert error.value.reason == "unreadable" and "\n" not in str(error.value)
    if content == "empty":
        assert "(the file is empty)" in str(error.value)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")  # unpickling it creates the marker file


def test_a_pickle_that_would_run_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker, path = tmp_path / "marker", tmp_path / "crafted.pt"
    torch.save({"w": torch.ones(1), "payload": _RunsCode(marker)}, path)
    message = rf"^{re.escape(str(path))} holds a pickled io.open, .*pass trusted=True$"
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert error.value.reason == "untrusted" and not marker.exists()
    load_checkpoint(path, trusted=True)  # on purpose: the payload runs, so the test above would catch it
    assert marker.exists()


@pytest.mark.cuda
def test_a_checkpoint_saved_from_the_gpu_verifies_when_loaded_on_the_cpu(tmp_path: Path) -> None:
    model = torch.nn.Linear(64, 64).cuda()
    torch.nn.init.constant_(model.weight, 1.5)
    path = tmp_path / "gpu.pt"
    atomic_save({"model": model.state_dict(), "bf16": torch.ones(3, device="cuda", dtype=torch.bfloat16)}, path)
    loaded = load_checkpoint(path, map_location="cpu")  # the checksum does not depend on the device
    assert loaded["model"]["weight"].device.type == "cpu"
    assert load_checkpoint(path)["model"]["weight"].device.type == "cuda"
    _flip_a_weight_byte(path, 1.5)
    with pytest.raises(CheckpointError, match="is corrupted"):
        load_checkpoint(path, map_location="cpu")
