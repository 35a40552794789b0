from __future__ import annotations

import pytest
import torch

from mge_plugins import required_batch_size, split_batch
from mge_plugins.batching import batch_size_of


def make_batch(n: int) -> dict:
    return {
        "x": torch.arange(n).float().reshape(n, 1, 1, 1).expand(n, 1, 4, 4),
        "params": {"filter": torch.arange(n).reshape(n, 1, 1, 1).float(), "sigma": torch.arange(n).float()},
        "name": "sample",
    }


def test_nested_split_takes_prefixes_and_slices_every_leaf() -> None:
    parts = split_batch(make_batch(16), [2, 8, 16], "nested")
    assert [batch_size_of(p) for p in parts] == [2, 8, 16]
    assert torch.equal(parts[1]["params"]["sigma"], torch.arange(8).float())
    assert torch.equal(parts[1]["x"][:, 0, 0, 0], torch.arange(8).float())
    assert parts[2]["name"] == "sample"


def test_disjoint_split_takes_consecutive_slices() -> None:
    x, y = torch.arange(11).float(), torch.arange(11).float() * 10
    parts = split_batch((x, y), [1, 2, 8], "disjoint")
    assert [p[0].tolist() for p in parts] == [[0.0], [1.0, 2.0], [3.0, 4, 5, 6, 7, 8, 9, 10]]
    assert isinstance(parts[0], tuple) and torch.equal(parts[2][1], y[3:])
    assert set().union(*(set(p[0].tolist()) for p in parts)) == set(x.tolist())


def test_required_batch_size() -> None:
    assert required_batch_size([2, 8, 32], "nested") == 32
    assert required_batch_size([2, 8, 32], "disjoint") == 42


def test_too_small_batch_names_the_size_to_load() -> None:
    with pytest.raises(ValueError, match=r"needs 42 samples, but the batch has 32; load batches of 42"):
        split_batch(torch.zeros(32, 1, 4, 4), [2, 8, 32], "disjoint")


@pytest.mark.parametrize(
    "batch, sizes, mode, match",
    [
        (torch.zeros(0, 1, 4, 4), [1], "nested", "empty"),
        (torch.zeros(4, 1), [], "nested", "sizes is empty"),
        (torch.zeros(4, 1), [2, 0], "nested", ">= 1"),
        (torch.zeros(4, 1), [2], "random", "unknown split mode 'random'"),
        ((torch.zeros(4, 1), torch.zeros(3, 1)), [2], "nested", "disagree on the batch size"),
        ({"a": "text"}, [1], "nested", "holds no tensor"),
    ],
)
def test_bad_batches(batch, sizes, mode, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_batch(batch, sizes, mode)
