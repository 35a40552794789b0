"""What ``mge-bench diagnose`` measures on: a model, a level loss and one loaded batch, from any host.

:func:`probe_of` turns what a user has into a :class:`Probe`:

- a ``deepinv.Trainer`` or ``mge_deepinv.MultiscaleTrainer``: one batch of its first train loader,
  posed at each level the way :class:`~mge_deepinv.MultiscaleTrainer` poses it in training (its
  ``coarse_mode``, ``coarse_noise`` and ``restriction``; a plain ``Trainer`` gets the defaults);
- a MONAI ``SupervisedTrainer`` or ``mge_monai.MultiscaleSupervisedTrainer`` (or one whose
  ``iteration_update`` is a :class:`~mge_monai.MultiscaleIteration`): one batch of its
  ``data_loader``, posed as :class:`~mge_monai.MultiscaleIteration` poses it;
- a plain ``(model, level_loss, batch)`` triple, where ``level_loss(batch, level)`` is the mean loss
  of a (sliced) batch posed at ``level``, the contract of :func:`mge_plugins.mge_backward`.

The probe works on a shallow copy of the trainer, so the trainer's own attributes stay as they
were. Its model, loaders and physics are shared: the model's weights are the ones diagnosed (a
deepinv ``ckpt_pretrained`` is loaded into it), the model is left in training mode, and a physics
operator is updated with the probe batch's parameters, as a training step would update it.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mge_plugins.batching import _tensor_leaves, batch_size_of, slice_batch

__all__ = ["LevelLossError", "Probe", "deepinv_probe", "monai_probe", "probe_of", "triple_probe"]

DEFAULT_LEVELS = 2
"""Levels diagnosed when neither the command line nor the host says (``mge-train``'s default)."""

ACCEPTED = "a deepinv.Trainer, a MONAI SupervisedTrainer or a (model, level_loss, batch) triple"


class LevelLossError(ValueError):
    """A user's ``level_loss`` that breaks its contract (not a scalar loss of the model's output)."""


@dataclass
class Probe:
    """A model, its level loss on one loaded batch, and what the checks need.

    Attributes:
        model: the network whose gradients are measured.
        level_loss: ``level_loss(indices, level)``: the mean loss of the loaded samples ``indices``
            (a :class:`slice`) posed at ``level``, as :class:`~mge_plugins.MultiscaleStep` takes it.
        loaded: samples in the loaded batch.
        levels: the levels the host trains with (or the default).
        input_shape: the fine network input's shape ``(B, C, *spatial)``, when known.
        generators: the host's own generators (noise models), replayed for coupled levels.
        kind: ``"deepinv"``, ``"monai"`` or ``"triple"``.
        description: one line saying what was probed.
        check: ``check(levels)`` raises ``ValueError`` when the host cannot use that many levels
            (e.g. a loss window larger than the coarsest images), naming the fix.
    """

    model: nn.Module
    level_loss: Callable[[slice, int], torch.Tensor]
    loaded: int
    levels: int
    input_shape: tuple[int, ...] | None
    generators: tuple[torch.Generator, ...] = ()
    kind: str = "triple"
    description: str = ""
    check: Callable[[int], None] | None = None


def _is_deepinv_trainer(obj: Any) -> bool:
    try:
        from deepinv import Trainer
    except ImportError:  # pragma: no cover - deepinv is a dependency of the bench
        return False
    return isinstance(obj, Trainer)


def _is_monai_trainer(obj: Any) -> bool:
    try:
        from monai.engines import SupervisedTrainer
    except ImportError:  # pragma: no cover - MONAI is a dependency of the bench
        return False
    return isinstance(obj, SupervisedTrainer)


def probe_of(obj: Any, levels: int | None = None) -> Probe:
    """The :class:`Probe` of a trainer or of a ``(model, level_loss, batch)`` triple.

    Args:
        obj: a ``deepinv.Trainer``/``MultiscaleTrainer``, a MONAI ``SupervisedTrainer``/
            ``MultiscaleSupervisedTrainer``, or a ``(model, level_loss, batch)`` tuple or list.
        levels: levels to diagnose (default: the host's own ``levels``, else 2).

    Raises:
        TypeError: for anything else, naming what is accepted.
    """
    if _is_deepinv_trainer(obj):
        return deepinv_probe(obj, levels)
    if _is_monai_trainer(obj):
        return monai_probe(obj, levels)
    if isinstance(obj, (tuple, list)) and len(obj) == 3:
        return triple_probe(*obj, levels=levels)
    what = f"a {len(obj)}-item {type(obj).__name__}" if isinstance(obj, (tuple, list)) else type(obj).__name__
    raise TypeError(f"got {what}; return {ACCEPTED}")


def _fine_input(batch: Any) -> torch.Tensor | None:
    """The first 4-D or 5-D floating tensor of a batch (the images), if any."""
    for tensor in _tensor_leaves(batch):
        if tensor.dim() in (4, 5) and tensor.is_floating_point():
            return tensor
    return None


def _checked_scalar(loss: Any, level: int) -> torch.Tensor:
    """``loss`` when it is a scalar tensor (differentiable where gradients are on), else :class:`LevelLossError`."""
    if isinstance(loss, torch.Tensor) and loss.dim() == 0 and (loss.requires_grad or not torch.is_grad_enabled()):
        return loss
    if isinstance(loss, torch.Tensor) and loss.dim() == 0:
        got = "a scalar that does not require grad"
    else:
        got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
    raise LevelLossError(
        f"level_loss(batch, {level}) returned {got}; it must return the batch's mean loss, a scalar tensor "
        "computed from the model's output"
    )


def triple_probe(
    model: nn.Module, level_loss: Callable[[Any, int], torch.Tensor], batch: Any, *, levels: int | None = None
) -> Probe:
    """The :class:`Probe` of a plain ``(model, level_loss, batch)`` triple.

    Args:
        model: the network.
        level_loss: ``level_loss(batch, level) -> scalar``: the mean loss of ``batch`` (or of a slice
            of it: tensors cut along their first axis) posed at ``level``, as given to
            :func:`mge_plugins.mge_backward`. Draw any noise at the finest grid and restrict it
            (:func:`mge_plugins.restricted_randn`) so both halves of a difference see the same draw.
        batch: one loaded batch: a tensor, or a tuple/list/dict of tensors with the samples first.
        levels: levels to diagnose (default 2).

    Raises:
        TypeError: when ``model`` is not a module with trainable parameters or ``level_loss`` is not callable.
        ValueError: for a batch without tensors, or tensors that disagree on the batch size.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"the triple's first item must be the model (a torch.nn.Module), got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise TypeError("the triple's model has no parameter that requires grad; there is no gradient to measure")
    if not callable(level_loss):
        raise TypeError(
            f"the triple's second item must be level_loss(batch, level), a callable; got {type(level_loss).__name__}"
        )
    loaded = batch_size_of(batch)
    fine = _fine_input(batch)

    def indexed(indices: slice, level: int) -> torch.Tensor:
        return _checked_scalar(level_loss(slice_batch(batch, indices.start, indices.stop), level), level)

    return Probe(
        model,
        indexed,
        loaded,
        DEFAULT_LEVELS if levels is None else levels,
        tuple(fine.shape) if fine is not None else None,
        kind="triple",
        description=f"{type(model).__name__} on a batch of {loaded}",
    )


def deepinv_probe(trainer: Any, levels: int | None = None) -> Probe:
    """The :class:`Probe` of a ``deepinv.Trainer`` or ``mge_deepinv.MultiscaleTrainer``.

    One batch is drawn from the first train dataloader (and its measurements generated, for
    online measurements); every level is posed as ``MultiscaleTrainer`` poses it in training, the
    trainer's losses summed. A plain ``Trainer`` is posed with ``MultiscaleTrainer``'s defaults.
    ``ckpt_pretrained`` is loaded, so a checkpoint's weights are diagnosed.

    Args:
        trainer: the trainer (its attributes are left as they are; its model, loaders and physics are used).
        levels: levels to diagnose (default: the trainer's ``levels``, else 2).

    Raises:
        ValueError: for a loss that cannot change resolution, or data deepinv cannot read.
    """
    from deepinv import Trainer
    from mge_deepinv import MultiscaleTrainer
    from mge_deepinv.training.levels import check_losses

    if isinstance(trainer, MultiscaleTrainer):
        host = copy.copy(trainer)
        requested = trainer.levels if levels is None else levels
    else:
        values = {f.name: getattr(trainer, f.name) for f in dataclasses.fields(Trainer) if f.init}
        requested = DEFAULT_LEVELS if levels is None else levels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deepinv's warnings were shown when the trainer was built
            host = MultiscaleTrainer(**values, strategy="mge", levels=requested)
    host.save_path = None  # nothing is written
    host.fused = False  # one scalar loss per pass: fused passes change how terms are run, not their gradients
    host.wandb_vis = host.mlflow_vis = False
    host.verbose = host.show_progress_bar = False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no metrics were provided.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        host.setup_train(train=False)  # lists, losses, checkpoint, scaler; train=False builds no strategy
    check_losses(host.losses)
    level_loss, x, y, physics, mode = host.probe_level_loss()
    rng = getattr(getattr(physics, "noise_model", None), "rng", None)
    fine = x if x is not None else y
    model = host.model
    return Probe(
        model,
        level_loss,
        int(fine.shape[0]),
        requested,
        tuple((y if y is not None else x).shape),
        (rng,) if isinstance(rng, torch.Generator) else (),
        kind="deepinv",
        description=(
            f"{type(trainer).__name__} with {type(_backbone(model)).__name__} on {type(physics).__name__}, "
            f"coarse levels posed by {mode}"
        ),
    )


def _backbone(model: nn.Module) -> nn.Module:
    """The network inside deepinv's ``ArtifactRemoval``-like wrappers, for a description."""
    return getattr(model, "backbone_net", model)


def monai_probe(engine: Any, levels: int | None = None) -> Probe:
    """The :class:`Probe` of a MONAI ``SupervisedTrainer`` or ``mge_monai.MultiscaleSupervisedTrainer``.

    One batch is drawn from the engine's ``data_loader`` and prepared with its ``prepare_batch``;
    every level is posed as :class:`~mge_monai.MultiscaleIteration` poses it (the engine's own one,
    with its options, when it has one; the defaults otherwise), the loss taken with the engine's
    ``inferer`` and ``loss_function``.

    Args:
        engine: the trainer (its attributes are left as they are; its network and loader are used).
        levels: levels to diagnose (default: the iteration's ``levels``, else 2).
    """
    from mge_monai import MultiscaleIteration

    own = getattr(engine, "multiscale", None)
    if not isinstance(own, MultiscaleIteration):
        own = getattr(engine, "_process_function", None)  # ignite's name for iteration_update
    if isinstance(own, MultiscaleIteration):
        iteration = copy.copy(own)
        strategy = own.strategy
        default = strategy.coarsest_level if not isinstance(strategy, str) else own.levels
    else:
        iteration = MultiscaleIteration(strategy="mge", levels=DEFAULT_LEVELS)
        default = DEFAULT_LEVELS
    requested = default if levels is None else levels
    level_loss, inputs = iteration.probe_level_loss(engine, next(iter(engine.data_loader)))

    return Probe(
        engine.network,
        level_loss,
        int(inputs.shape[0]),
        requested,
        tuple(inputs.shape),
        kind="monai",
        description=(
            f"{type(engine).__name__} with {type(engine.network).__name__} and {type(engine.loss_function).__name__}, "
            f"label posed by {iteration.label_rule.rule}"
        ),
        check=lambda levels: iteration.check_levels(engine, inputs, levels),
    )
