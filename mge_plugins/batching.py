"""Cut one loaded batch into the per-term batches of an MGE step.

A batch is a tensor, or a tuple/list/dict nesting tensors (and non-tensor leaves, which are
passed through unchanged). Every tensor leaf with a leading batch axis is sliced the same way,
so per-sample parameters (a ``(B, 1, h, w)`` blur filter, a per-sample noise level) stay with
their samples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "SPLIT_MODES",
    "batch_size_of",
    "fit_sizes",
    "required_batch_size",
    "slice_batch",
    "split_batch",
    "term_slices",
]

SPLIT_MODES: tuple[str, ...] = ("nested", "disjoint")


def _map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return type(batch)({key: _map_tensors(value, fn) for key, value in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_map_tensors(value, fn) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_map_tensors(value, fn) for value in batch)
    return batch


def _tensor_leaves(batch: Any) -> list[torch.Tensor]:
    leaves: list[torch.Tensor] = []

    def collect(t: torch.Tensor) -> torch.Tensor:
        leaves.append(t)
        return t

    _map_tensors(batch, collect)
    return leaves


def batch_size_of(batch: Any) -> int:
    """Number of samples in ``batch``: the leading size of its tensor leaves (or a slice's length).

    Raises:
        ValueError: if the batch holds no tensor, holds a 0-d tensor, or its tensors disagree
            on the leading size.
    """
    if isinstance(batch, slice):
        return len(range(batch.start or 0, batch.stop))
    sizes = {t.shape[0] if t.dim() > 0 else None for t in _tensor_leaves(batch)}
    if not sizes:
        raise ValueError("the batch holds no tensor; pass a tensor or a tuple/list/dict of tensors")
    if None in sizes:
        raise ValueError("the batch holds a 0-d tensor, which has no batch axis; give it shape (B,)")
    if len(sizes) > 1:
        raise ValueError(
            f"the tensors of the batch disagree on the batch size: {sorted(sizes)}; "
            "every tensor leaf must have the samples on its first axis"
        )
    return sizes.pop()


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of every tensor leaf of ``batch`` (views, no copy)."""
    return _map_tensors(batch, lambda t: t[start:stop])


def required_batch_size(sizes: Sequence[int], mode: str = "nested") -> int:
    """How many samples a loaded batch needs to be cut into per-term batches of ``sizes``."""
    if mode not in SPLIT_MODES:
        raise ValueError(f"unknown split mode {mode!r}; use one of {', '.join(map(repr, SPLIT_MODES))}")
    return max(sizes) if mode == "nested" else sum(sizes)


def _check_sizes(sizes: Sequence[int], mode: str) -> int:
    if len(sizes) == 0:
        raise ValueError("sizes is empty; give one batch size per MGE term (levels + 1 of them)")
    if any(int(n) < 1 for n in sizes):
        raise ValueError(f"every per-term batch size must be >= 1, got {list(sizes)}")
    return required_batch_size(sizes, mode)


def fit_sizes(sizes: Sequence[int], loaded: int, mode: str = "nested") -> tuple[int, ...]:
    """Per-term sizes for a loaded batch of ``loaded`` samples: the one rule for a short last batch.

    Sizes that fit are returned unchanged. A short batch (the last one of an epoch with
    ``drop_last=False``) caps every nested term at ``loaded``; disjoint terms shrink in proportion
    (at least one sample each), so the step still trains on what was loaded.

    Raises:
        ValueError: for an empty batch, or fewer samples than disjoint terms.

    Example:
        >>> fit_sizes((2, 8), 4)
        (2, 4)
        >>> fit_sizes((2, 8), 5, "disjoint")
        (1, 4)
    """
    need = _check_sizes(sizes, mode)
    if loaded < 1:
        raise ValueError("the batch is empty (0 samples); check the dataset and the DataLoader")
    if loaded >= need:
        return tuple(int(n) for n in sizes)
    if mode == "nested":
        return tuple(min(int(n), loaded) for n in sizes)
    if loaded < len(sizes):
        raise ValueError(
            f"a disjoint split into {len(sizes)} terms needs at least {len(sizes)} samples, but the batch has "
            f"{loaded}; "
            "use drop_last=True in the DataLoader or the nested split"
        )
    shrunk = [max(1, int(n) * loaded // need) for n in sizes]
    while sum(shrunk) > loaded:  # rounding up to one sample per term can overshoot
        shrunk[shrunk.index(max(shrunk))] -= 1
    return tuple(shrunk)


def term_slices(sizes: Sequence[int], mode: str = "nested") -> list[slice]:
    """Index ranges of the per-term batches within one loaded batch, finest term first.

    ``"nested"``: term ``k`` takes samples ``0:N_k``; ``"disjoint"``: consecutive runs.

    Example:
        >>> term_slices((2, 8))
        [slice(0, 2, None), slice(0, 8, None)]
        >>> term_slices((2, 8), "disjoint")
        [slice(0, 2, None), slice(2, 10, None)]
    """
    _check_sizes(sizes, mode)
    if mode == "nested":
        return [slice(0, int(n)) for n in sizes]
    out, start = [], 0
    for n in sizes:
        out.append(slice(start, start + int(n)))
        start += int(n)
    return out


def split_batch(batch: Any, sizes: Sequence[int], mode: str = "nested") -> list[Any]:
    """Cut one loaded batch into per-term batches of the given sizes.

    Args:
        batch: tensor or nested tuple/list/dict of tensors sharing the leading batch axis.
        sizes: per-term batch sizes ``N_0, ..., N_K`` (finest term first).
        mode: ``"nested"``: term ``k`` takes the first ``N_k`` samples, so the terms share
            samples (one loaded batch of ``max(sizes)`` feeds a step); ``"disjoint"``: the terms
            take consecutive, non-overlapping slices (independent batches, ``sum(sizes)``
            samples). Both give an unbiased estimate when the loader shuffles.

    Returns:
        A list of ``len(sizes)`` batches with the same structure as ``batch``.

    Raises:
        ValueError: for an empty batch, a size < 1, or a batch too small for the split, with
            the batch size to load instead.
    """
    need = _check_sizes(sizes, mode)
    have = batch_size_of(batch)
    if have == 0:
        raise ValueError("the batch is empty (0 samples); check the dataset and the DataLoader")
    if have < need:
        raise ValueError(
            f"a {mode} split into per-term sizes {list(sizes)} needs {need} samples, but the batch has "
            f"{have}; load batches of {need} (DataLoader(batch_size={need}, drop_last=True)), "
            "or lower the batch size / growth"
        )
    return [slice_batch(batch, s.start, s.stop) for s in term_slices(sizes, mode)]
