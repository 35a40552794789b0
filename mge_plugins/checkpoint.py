"""Crash-safe checkpoints: atomic writes and the random state a resumed run needs.

A resumed run repeats the uninterrupted one bit for bit only if it restores, besides the model
and the optimizer, every random stream the training draws from (noise, random masks, the
shuffling of the data loader) and the position of the data. :func:`rng_state` and
:func:`set_rng_state` capture and restore PyTorch's global generators (CPU and CUDA), NumPy's
global state, Python's :mod:`random` and any generator a pipeline owns. :class:`RandomState`
wraps them (and the generators of data loaders) in an object with ``state_dict`` /
``load_state_dict``, the protocol checkpoint handlers expect.

:func:`atomic_save` writes a checkpoint so that a kill at any moment leaves either the previous
file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["RandomState", "atomic_save", "atomic_write", "loader_generators", "rng_state", "set_rng_state"]

Generator = torch.Generator | np.random.Generator | np.random.RandomState | random.Random


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file lives in the same directory (so :func:`os.replace` is a rename on one file
    system); after the body it is flushed to disk with ``fsync`` and renamed over ``path``, and the
    directory entry is synced. If the body raises (or the process dies), ``path`` keeps its
    previous content and the temporary file is removed (or, after a kill, left as a hidden
    ``.NAME.*.tmp`` file that loaders never pick).

    Args:
        path: the final file.

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_save(
    obj: Any, path: str | os.PathLike[str], save: Callable[[Any, Any], None] = torch.save, **kwargs: Any
) -> None:
    """``torch.save(obj, path)``, atomically: a kill or an error never leaves a corrupt ``path``.

    Args:
        obj: what to save.
        path: the checkpoint file.
        save: the serialiser, called as ``save(obj, file, **kwargs)`` with an open binary file.
        kwargs: extra arguments for ``save``.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> atomic_save({"step": 3}, path)
        >>> torch.load(path)["step"]
        3
    """
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        save(obj, handle, **kwargs)


def _legacy_numpy_state(state: tuple) -> dict[str, Any]:
    # Tensors and plain numbers only, so checkpoint loaders with torch.load(weights_only=True) accept it.
    kind, keys, pos, has_gauss, cached = state[:5]
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}  # fmt: skip


def _legacy_numpy_tuple(state: Mapping[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]


def _generator_state(generator: Generator) -> Any:
    if isinstance(generator, torch.Generator):
        return generator.get_state()
    if isinstance(generator, np.random.Generator):
        return generator.bit_generator.state
    if isinstance(generator, np.random.RandomState):
        return _legacy_numpy_state(generator.get_state())
    if isinstance(generator, random.Random):
        return generator.getstate()
    raise TypeError(
        f"cannot save the state of a {type(generator).__name__}; give torch.Generator, numpy.random.Generator, "
        "numpy.random.RandomState or random.Random objects"
    )


def _set_generator_state(generator: Generator, state: Any) -> None:
    if isinstance(generator, torch.Generator):
        generator.set_state(state)
    elif isinstance(generator, np.random.Generator):
        generator.bit_generator.state = state
    elif isinstance(generator, np.random.RandomState):
        generator.set_state(_legacy_numpy_tuple(state))
    else:
        generator.setstate(state)


def rng_state(generators: Mapping[str, Generator] | None = None) -> dict[str, Any]:
    """The state of every global random stream, plus ``generators`` by name.

    Captures PyTorch's CPU generator, every CUDA device's generator (when CUDA is initialised),
    NumPy's global state and Python's :mod:`random`.

    Args:
        generators: generators a pipeline owns (a noise model's ``rng``, a physics generator's,
            a data loader's), by a stable name.

    Returns:
        A dictionary of tensors and plain values for :func:`set_rng_state`, loadable with
        ``torch.load(weights_only=True)`` (as MONAI's ``CheckpointLoader`` loads).
    """
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _legacy_numpy_state(np.random.get_state()),
        "python": random.getstate(),
        "generators": {name: _generator_state(g) for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, Generator] | None = None) -> None:
    """Restore the streams saved by :func:`rng_state`.

    Args:
        state: what :func:`rng_state` returned.
        generators: the same names as at save time; each is restored in place.

    Raises:
        KeyError: when a generator given here was not in the saved state, naming it.
    """
    torch.set_rng_state(state["torch"])
    np.random.set_state(_legacy_numpy_tuple(state["numpy"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if name not in saved:
            raise KeyError(
                f"the checkpoint holds no state for generator {name!r} (it has {sorted(saved)}); save and load "
                "with the same generator names"
            )
        _set_generator_state(generator, saved[name])


def loader_generators(loader: Any, name: str = "loader") -> dict[str, torch.Generator]:
    """The generators a ``DataLoader`` shuffles and seeds its workers with, by name.

    Follows ``loader``, ``loader.sampler``, ``loader.batch_sampler`` and the samplers they wrap
    (``.sampler``, a few levels deep) and keeps each distinct ``.generator``, named
    ``f"{name}.{attribute path}"``. Loaders without their own generator draw from PyTorch's
    global one, which :func:`rng_state` saves anyway.
    """
    found: dict[str, torch.Generator] = {}
    seen: set[int] = set()
    pending: list[tuple[str, Any]] = [("", loader)]
    while pending:
        path, obj = pending.pop(0)
        generator = getattr(obj, "generator", None)
        if isinstance(generator, torch.Generator) and id(generator) not in seen:
            seen.add(id(generator))
            found[f"{name}.{path}generator"] = generator
        if path.count(".") < 4:
            for attr in ("sampler", "batch_sampler"):
                child = getattr(obj, attr, None)
                if child is not None and child is not obj:
                    pending.append((f"{path}{attr}.", child))
    return found


class RandomState:
    """Every random stream of a run as one checkpointable object (``state_dict``/``load_state_dict``).

    Pass it to a checkpoint handler next to the model and optimizer, e.g. MONAI's
    ``CheckpointSaver(save_dict={"net": net, "opt": opt, "trainer": trainer, "rng": RandomState(loader)})``
    and the same ``load_dict`` to ``CheckpointLoader``. Saved at the end of an epoch and restored
    before the next data-loader iterator is created, it makes the resumed run shuffle, draw noise
    and seed its workers exactly as the uninterrupted run.

    Args:
        loaders: data loaders whose own generators (see :func:`loader_generators`) to include.
        generators: further generators by name (noise models, physics generators, random
            transforms' ``numpy.random.RandomState``).

    Example:
        >>> state = RandomState().state_dict()
        >>> a = torch.rand(2)
        >>> RandomState().load_state_dict(state)
        >>> torch.equal(a, torch.rand(2))
        True
    """

    def __init__(self, *loaders: Any, generators: Mapping[str, Generator] | None = None) -> None:
        self.generators: dict[str, Generator] = {}
        for i, loader in enumerate(loaders):
            self.generators.update(loader_generators(loader, f"loader{i}"))
        self.generators.update(generators or {})

    def state_dict(self) -> dict[str, Any]:
        """The current state of every stream."""
        return rng_state(self.generators)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every stream."""
        set_rng_state(state, self.generators)
