from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mge_plugins.checkpoint import RandomState, atomic_save, loader_generators, rng_state, set_rng_state


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
