"""Posing a DeepInverse training batch at a level: data, physics and losses."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import deepinv.physics as dp
import torch
from deepinv.loss import Loss, R2RLoss, SplittingLoss, SupLoss, SureGaussianLoss

from mge_plugins import restrict

from ..physics import OPERATOR_MODES, NoCoarseRecipeError, restrict_measurement
from ..physics.cache import CoarsePhysicsCache

__all__ = ["COARSE_MODES", "LevelPoser", "check_losses", "copy_physics", "per_sample_losses", "slice_physics"]

COARSE_MODES = ("auto", "physics", "restrict")
COARSE_NOISE = ("keep", "restrict")


def check_losses(losses: list[Loss]) -> None:
    """Fail up front for losses that cannot change resolution.

    :raises ValueError: naming the loss and what to do instead.
    """
    for loss in losses:
        if isinstance(loss, SplittingLoss):
            raise ValueError(
                "SplittingLoss caches a mask generator sized by the first measurement, so it cannot run at "
                "several resolutions; train it with strategy='single', or use a supervised, MCLoss or EILoss"
            )
        if isinstance(loss, R2RLoss) and loss.noise_model is not None:
            raise ValueError(
                "R2RLoss(noise_model=...) re-corrupts every level with the fine noise model; build it with "
                "noise_model=None so it reads each level's noise from the level's physics"
            )


def slice_physics(physics: dp.Physics, params: dict[str, Any], index: slice, batch_size: int) -> dp.Physics:
    """A copy of ``physics`` updated with the per-sample ``params`` of samples ``index``.

    Returns ``physics`` itself when no parameter is per-sample.
    """
    per_sample = {
        key: value[index]
        for key, value in params.items()
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch_size
    }
    if not per_sample or (index.start in (0, None) and index.stop >= batch_size):
        return physics
    sliced = copy_physics(physics)
    sliced.update(**per_sample)
    return sliced


def copy_physics(physics: dp.Physics) -> dp.Physics:
    """A deep copy of ``physics``, its random generators copied with their state, as ``Physics.clone`` makes.

    ``Physics.clone`` finds the generators by walking every attribute of every object it reaches,
    tensors included (0.2 s of CPU for an ``Inpainting``, paid for every term of every step); the
    generators of deepinv's operators and noise models are attributes of their modules, so this
    looks there, and falls back to ``clone`` for a generator held deeper.

    :param deepinv.physics.Physics physics: the operator.
    :return: the copy.
    """
    memo: dict[int, Any] = {}
    for module in physics.modules():
        for value in vars(module).values():
            items = (
                value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            )
            for item in items:
                if isinstance(item, torch.Generator) and id(item) not in memo:
                    generator = torch.Generator(item.device)
                    generator.set_state(item.get_state())
                    memo[id(item)] = generator
    try:
        return copy.deepcopy(physics, memo=memo)
    except TypeError:  # a generator out of sight: deepinv's full traversal finds it
        return physics.clone()


@dataclass
class PosedSample:
    """A batch posed at one level."""

    x: torch.Tensor | None
    y: torch.Tensor
    physics: dp.Physics


def auto_restriction(physics: Any, levels: int) -> str:
    """The restriction ``restriction="auto"`` picks for ``physics`` (one operator or a list).

    ``"nearest"`` for an ``Inpainting`` whose mask is not constant on blocks of ``2**levels``
    pixels: area restriction would average observed and missing pixels, so the coarse levels would
    learn to undo an attenuation instead of filling holes, while nearest restriction keeps a mask
    of the same density on every level. ``"area"`` otherwise (block masks such as
    :class:`~mge_deepinv.BlockMaskGenerator`'s are exact under it up to their block size).

    :param deepinv.physics.Physics, list physics: the trainer's operator(s).
    :param int levels: the deepest level.
    :return: ``"nearest"`` or ``"area"``.
    """
    block = 2**levels
    for operator in physics if isinstance(physics, (list, tuple)) else [physics]:
        mask = getattr(operator, "mask", None)
        if not isinstance(operator, dp.Inpainting) or not isinstance(mask, torch.Tensor) or levels == 0:
            continue
        height, width = mask.shape[-2:]
        if height % block or width % block:
            return "nearest"
        blocks = mask.reshape(*mask.shape[:-2], height // block, block, width // block, block)
        if not torch.equal(blocks, blocks[..., :1, :, :1].expand_as(blocks)):
            return "nearest"
    return "area"


class LevelPoser:
    """Poses per-term batches at a level, the same way in every term that uses the level.

    :param str coarse_mode: ``"physics"`` (restrict ``x``, apply the level's operator), ``"restrict"``
        (restrict ``x`` and the fine ``y``), or ``"auto"`` (physics when a recipe exists and ``x`` is
        known, restrict otherwise, with a one-time warning naming the operator).
    :param str coarse_noise: ``"keep"`` or ``"restrict"`` the noise level on coarse levels (physics mode).
    :param str restriction: restriction method.
    :param str coarse_operator: ``"keep"`` (default) the operator's scale per pixel on coarse levels (the
        same blur kernel, anti-alias filter or mask holes) or ``"restrict"`` it (physics mode; see
        :func:`~mge_deepinv.coarsen_physics`).
    """

    def __init__(
        self,
        coarse_mode: str = "auto",
        coarse_noise: str = "keep",
        restriction: str = "area",
        coarse_operator: str = "keep",
    ) -> None:
        if coarse_mode not in COARSE_MODES:
            raise ValueError(f"coarse_mode must be one of {COARSE_MODES}, got {coarse_mode!r}")
        if coarse_noise not in COARSE_NOISE:
            raise ValueError(f"coarse_noise must be one of {COARSE_NOISE}, got {coarse_noise!r}")
        if coarse_operator not in OPERATOR_MODES:
            raise ValueError(f"coarse_operator must be one of {OPERATOR_MODES}, got {coarse_operator!r}")
        self.coarse_mode = coarse_mode
        self.coarse_noise = coarse_noise
        self.coarse_operator = coarse_operator
        self.restriction = restriction
        self._warned: set[str] = set()
        self.coarsen = CoarsePhysicsCache()  # each step asks for the same coarse operators again

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def mode_for(self, physics: dp.Physics, has_x: bool, online: bool) -> str:
        """The mode actually used for this operator and data."""
        if self.coarse_mode == "restrict":
            return "restrict"
        if self.coarse_mode == "physics":
            if not has_x:
                raise ValueError("coarse_mode='physics' needs the ground truth x; use coarse_mode='restrict'")
            self.coarsen(
                physics, 1, noise=self.coarse_noise, operator=self.coarse_operator
            )  # raises NoCoarseRecipeError
            return "physics"
        if not has_x or not online:
            if self._has_recipe(physics):
                why = "the ground truth x is not loaded" if not has_x else "the measurements are offline"
                self._warn_once(
                    f"offline-{type(physics).__name__}",
                    f"coarse_mode='auto' restricts the fine measurements of {type(physics).__name__} because {why}: "
                    "coarse samples are restrictions of the fine y, which costs a fine forward model per sample. "
                    "Generate measurements online (online_measurements=True) for coarse physics, or pass "
                    "coarse_mode='restrict' to silence this.",
                )
            return "restrict"
        try:
            self.coarsen(physics, 1, noise=self.coarse_noise, operator=self.coarse_operator)
        except NoCoarseRecipeError as error:
            self._warn_once(
                type(physics).__name__,
                f"{error}. Falling back to coarse_mode='restrict' for {type(physics).__name__}: coarse samples are "
                "restrictions of the fine measurements.",
            )
            return "restrict"
        return "physics"

    def _has_recipe(self, physics: dp.Physics) -> bool:
        try:
            self.coarsen(physics, 1, noise=self.coarse_noise, operator=self.coarse_operator)
        except NoCoarseRecipeError:
            return False
        except Exception:  # an operator that cannot be coarsened for another reason: no recipe to speak of
            return False
        return True

    def model_physics(self, physics: dp.Physics, level: int, noise: str) -> dp.Physics:
        """The operator handed to the model and losses at ``level`` (fine physics if none is known)."""
        try:
            return self.coarsen(physics, level, noise=noise)
        except NoCoarseRecipeError:
            return physics

    def pose(self, x: torch.Tensor | None, y: torch.Tensor, physics: dp.Physics, level: int, mode: str) -> PosedSample:
        """Pose one per-term batch at ``level``."""
        x_k = restrict(x, level, self.restriction) if x is not None else None
        if mode == "physics":
            physics_k = self.coarsen(physics, level, noise=self.coarse_noise, operator=self.coarse_operator)
            try:
                y_k = physics_k(x_k)
            except RuntimeError as error:  # e.g. a kept kernel larger than the level's image
                if self.coarse_operator != "keep" or level == 0:
                    raise
                first, side = str(error).splitlines()[0], "x".join(map(str, x_k.shape[2:]))
                raise ValueError(
                    f"coarse_operator='keep' poses level {level} ({side} px) with the fine "
                    f"{type(physics).__name__}'s kernel, which fails there ({first}); use coarse_operator='restrict', "
                    "fewer levels or larger crops"
                ) from error
            return PosedSample(x_k, y_k, physics_k)
        if level == 0:
            return PosedSample(x, y, physics)
        y_k = restrict_measurement(physics, y, level, self.restriction)
        return PosedSample(x_k, y_k, self.model_physics(physics, level, "restrict"))


def level_losses(losses: list[Loss], physics: dp.Physics) -> list[Loss]:
    """Copies of losses that hold a noise level, set to the level's noise (others as they are)."""
    out = []
    for loss in losses:
        sigma = getattr(getattr(physics, "noise_model", None), "sigma", None)
        if isinstance(loss, SureGaussianLoss) and sigma is not None:
            loss = copy.copy(loss)
            loss.sigma2 = float(torch.as_tensor(sigma).mean()) ** 2
        out.append(loss)
    return out


def per_sample_losses(losses: list[Loss]) -> list[Loss]:
    """The losses as fused passes need them: one value per sample.

    deepinv's losses return ``(B,)`` tensors, except ``SupLoss`` around a ``torch.nn`` loss that
    averages (its default ``MSELoss()``): that one gets a copy of its metric with
    ``reduction="none"``, whose per-sample means average to the same value.

    :param list[deepinv.loss.Loss] losses: the trainer's losses.
    :return: the losses, with such ``SupLoss`` replaced by a per-sample copy.
    """
    out = []
    for loss in losses:
        metric = getattr(loss, "metric", None)
        if isinstance(loss, SupLoss) and isinstance(metric, torch.nn.modules.loss._Loss) and metric.reduction == "mean":
            loss = copy.copy(loss)
            loss.metric = copy.copy(metric)
            loss.metric.reduction = "none"
        out.append(loss)
    return out
