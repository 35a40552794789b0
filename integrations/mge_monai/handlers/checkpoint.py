"""MONAI's ``CheckpointSaver`` and ``CheckpointLoader``, made safe against kills and damaged files.

MONAI builds its ignite ``DiskSaver`` with ``atomic=False`` (ignite's atomic mode creates files
readable by their owner only), so a process killed while ``torch.save`` writes leaves a truncated
checkpoint under its final name; ignite's atomic mode also renames without syncing the data to
disk first. And ignite's ``Checkpoint`` removes the file it no longer keeps *before* it writes
the new one, so with ``n_saved=1``, or the best-metric checkpoint (``key_metric_n_saved=1``), a
kill during the save leaves no checkpoint at all.

:func:`make_atomic` routes every save of a ``CheckpointSaver`` through
:func:`mge_plugins.atomic_save` (a temporary file in the same folder, ``fsync``,
``os.replace``, usual file permissions, a checksum of the content) and defers each removal
until the next checkpoint is on disk under its final name. :class:`VerifiedCheckpointLoader`
checks that checksum when it loads, and names the file when it is empty or truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.handlers import CheckpointLoader, CheckpointSaver

from mge_plugins.checkpoint import atomic_save, load_checkpoint

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["AtomicCheckpointSaver", "VerifiedCheckpointLoader", "make_atomic"]

_HANDLERS = ("_interval_checkpoint", "_final_checkpoint", "_key_metric_checkpoint")


class _WriteThenRemove:
    """Stands in for a ``DiskSaver``'s ``_save_func`` and ``remove``: atomic writes, removals after them.

    ignite's ``Checkpoint`` calls ``remove(old)`` and then ``save(new)``. Here ``remove`` only
    records the file; the save writes the new file atomically and then removes every recorded
    file except the one it has just written (ignite removes and rewrites a file it saves again
    under the same name, e.g. MONAI's fixed ``key_metric_filename``). A save that fails leaves
    the recorded files in place for the next successful save to remove.
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.pending: list[Path] = []

    def save(self, obj: Mapping, path: Path, func: Callable[..., None]) -> None:
        atomic_save(obj, path, save=func, **self.handler.kwargs)
        pending, self.pending = self.pending, []
        for old in pending:
            if old != path:
                old.unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        import ignite.distributed as idist  # ignite comes with MONAI's handlers, not with this package

        if idist.get_rank() != self.handler.save_on_rank:
            return
        fixed = getattr(self.handler, "filename", None)  # MONAI's DiskSaver may save under one fixed name
        self.pending.append(self.handler.dirname / (fixed if fixed is not None else filename))


def make_atomic(saver: CheckpointSaver) -> CheckpointSaver:
    """Make every checkpoint ``saver`` writes (interval, final, key metric) atomic and checksummed; returns ``saver``.

    Each save goes through :func:`mge_plugins.atomic_save`, and a file the saver no longer keeps
    (``n_saved``, ``key_metric_n_saved``, the previous final checkpoint) is removed only after the
    new one is on disk, so a kill at any moment leaves the latest complete checkpoint. Calling it
    again on the same saver changes nothing.

    Raises:
        TypeError: when a save handler is not an ignite ``DiskSaver`` (nothing to make atomic),
            naming it.
    """
    for name in _HANDLERS:
        checkpoint = getattr(saver, name, None)
        if checkpoint is None:
            continue
        handler = checkpoint.save_handler
        if isinstance(getattr(handler, "_mge_write_then_remove", None), _WriteThenRemove):
            continue
        if not callable(getattr(handler, "_save_func", None)) or not callable(getattr(handler, "remove", None)):
            raise TypeError(
                f"CheckpointSaver.{name} saves through a {type(handler).__name__}, not an ignite DiskSaver; "
                "make_atomic supports the DiskSaver that MONAI's CheckpointSaver builds"
            )
        order = _WriteThenRemove(handler)
        handler._mge_write_then_remove = order
        handler._save_func = order.save
        handler.remove = order.remove
    return saver


class AtomicCheckpointSaver(CheckpointSaver):
    """:class:`monai.handlers.CheckpointSaver` whose files are written atomically (see :func:`make_atomic`).

    Takes the same arguments. Put a :class:`mge_plugins.RandomState` of the train loader in
    ``save_dict`` (and in the loader's ``load_dict``) so a resumed run shuffles and draws noise as
    the uninterrupted one. Load with :class:`VerifiedCheckpointLoader` to check the checksum
    each file carries.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        make_atomic(self)


class VerifiedCheckpointLoader(CheckpointLoader):
    """:class:`monai.handlers.CheckpointLoader` that first checks the file it loads.

    Takes the same arguments. Before MONAI's own loading (``torch.load(weights_only=True)`` and
    ``Checkpoint.load_objects``), the file is read with :func:`mge_plugins.checkpoint.load_checkpoint`:
    an empty, truncated or garbage file, a file whose content does not match the checksum
    :class:`AtomicCheckpointSaver` stored in it, or one holding pickled code raises a one-line
    :class:`mge_plugins.checkpoint.CheckpointError` naming the file. Files without a checksum
    (from other savers) load as before. The check reads the file once more; on resume only.
    """

    def __call__(self, engine: Engine) -> None:
        """Check the file, then load it as MONAI's ``CheckpointLoader`` does."""
        load_checkpoint(
            self.load_path,
            map_location=self.map_location,
            trust_hint=(
                "load it yourself with torch.load(path, weights_only=False) and pass the result to "
                "ignite's Checkpoint.load_objects (MONAI's CheckpointLoader reads weights_only files only)"
            ),
        )
        super().__call__(engine)
