"""MONAI's ``CheckpointSaver`` with writes that a kill cannot corrupt.

MONAI builds its ignite ``DiskSaver`` with ``atomic=False`` (ignite's atomic mode creates files
readable by their owner only), so a process killed while ``torch.save`` writes leaves a truncated
checkpoint under its final name; ignite's atomic mode also renames without syncing the data to
disk first. :func:`make_atomic` routes every save of a ``CheckpointSaver`` through
:func:`mge_plugins.atomic_save`: a temporary file in the same folder, ``fsync``, ``os.replace``,
usual file permissions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from monai.handlers import CheckpointSaver

from mge_plugins.checkpoint import atomic_save

__all__ = ["AtomicCheckpointSaver", "make_atomic"]


def make_atomic(saver: CheckpointSaver) -> CheckpointSaver:
    """Make every checkpoint ``saver`` writes (interval, final, key metric) atomic; returns ``saver``.

    Raises:
        TypeError: when a save handler is not an ignite ``DiskSaver`` (nothing to make atomic),
            naming it.
    """
    for name in ("_interval_checkpoint", "_final_checkpoint", "_key_metric_checkpoint"):
        checkpoint = getattr(saver, name, None)
        if checkpoint is None:
            continue
        handler = checkpoint.save_handler
        if not callable(getattr(handler, "_save_func", None)):
            raise TypeError(
                f"CheckpointSaver.{name} saves through a {type(handler).__name__}, not an ignite DiskSaver; "
                "make_atomic supports the DiskSaver that MONAI's CheckpointSaver builds"
            )

        def save_func(obj: Mapping, path: Path, func: Callable[..., None], handler: Any = handler) -> None:
            atomic_save(obj, path, save=func, **handler.kwargs)

        handler._save_func = save_func
    return saver


class AtomicCheckpointSaver(CheckpointSaver):
    """:class:`monai.handlers.CheckpointSaver` whose files are written atomically (see :func:`make_atomic`).

    Takes the same arguments. Put a :class:`mge_plugins.RandomState` of the train loader in
    ``save_dict`` (and in ``CheckpointLoader``'s ``load_dict``) so a resumed run shuffles and draws
    noise as the uninterrupted one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        make_atomic(self)
