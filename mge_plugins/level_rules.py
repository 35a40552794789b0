"""How each tensor of a batch is posed at a coarser level: one rule per tensor (image, label, class).

Restriction (:func:`~mge_plugins.restrict`) averages intensities, which is right for images and
wrong for everything else a batch may hold. A rule says, per tensor:

- ``"area"``, ``"nearest"``, ``"antialias"``: the restriction methods, for intensities;
- ``"mode"``: the majority of each ``2 x 2`` (``2 x 2 x 2``) block, for segmentation labels
  (integer maps, binary masks, one-hot or multi-label channels). A voxel's value is its whole
  channel vector, so a one-hot label stays one-hot and nested multi-label masks stay nested;
  ties go to the block's first sample in raster order (the one ``"nearest"`` keeps), so the
  result is deterministic. Each level is the mode of the level above, as for the other rules;
- ``"keep"``: the tensor as it is at every level, for anything without the images' spatial
  axes (class labels ``(B,)`` or ``(B, 1)``, per-sample scalars, metadata). A classification
  target has no resolution: the coarse problem is the coarse image with the same class.

``"auto"`` infers the rule from the tensor (:func:`infer_level_rule`): a tensor without the
images' spatial shape is kept; an integer or boolean one, or a floating one whose values are all
0 or 1 (labels as MONAI's ``LoadImaged`` reads them), takes the mode; any other floating tensor
takes the intensity method. The 0/1 test reads the values once (one pass, one device sync), so
hosts resolve the rule once per run, on the first batch (:func:`resolve_level_rule`). A float
label map with more than two classes (values 0, 1, 2, ...) is not recognised by its values
(an integer-valued CT image would be taken for one): pass ``"mode"``, or say ``categorical=True``
when the loss reads the target as class indices (MONAI's ``to_onehot_y=True``).

Every output is contiguous (ignite metrics call ``.view`` on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .restriction import RESTRICTION_METHODS, check_level_sizes, restrict

__all__ = [
    "LEVEL_RULES",
    "LevelRule",
    "check_level_rule",
    "infer_level_rule",
    "resolve_level_rule",
    "restrict_mode",
]

LEVEL_RULES: tuple[str, ...] = (*RESTRICTION_METHODS, "mode", "keep")
"""The concrete rules; ``"auto"`` is resolved to one of them."""


def check_level_rule(rule: str, *, what: str = "rule", allow_auto: bool = True) -> None:
    """Refuse an unknown rule, naming the known ones.

    Raises:
        ValueError: for a rule outside :data:`LEVEL_RULES` (and ``"auto"`` when allowed).
    """
    known = (("auto",) if allow_auto else ()) + LEVEL_RULES
    if rule not in known:
        raise ValueError(f"unknown {what} {rule!r}; use one of {', '.join(map(repr, known))}")


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, *S)`` -> ``(B, C, *S / 2, 2**d)``: the samples of each ``2**d`` block, raster order."""
    dims = x.dim() - 2
    coarse = [s // 2 for s in x.shape[2:]]
    split = [*x.shape[:2]]
    for size in coarse:
        split += [size, 2]
    order = [0, 1, *(2 + 2 * i for i in range(dims)), *(3 + 2 * i for i in range(dims))]
    return x.reshape(split).permute(order).reshape(*x.shape[:2], *coarse, 2**dims)


def _mode_once(x: torch.Tensor) -> torch.Tensor:
    blocks = _blocks(x)
    # same[..., i, j]: samples i and j of a block agree in every channel.
    same = blocks[:, 0, ..., :, None] == blocks[:, 0, ..., None, :]
    for channel in range(1, blocks.shape[1]):
        same &= blocks[:, channel, ..., :, None] == blocks[:, channel, ..., None, :]
    winner = same.sum(-1).argmax(-1)  # argmax returns the first maximum: ties go to the first sample
    index = winner[:, None, ..., None].expand(*blocks.shape[:-1], 1)
    return blocks.gather(-1, index).squeeze(-1).contiguous()


def restrict_mode(x: torch.Tensor, levels: int = 1) -> torch.Tensor:
    """The majority of each ``2**d`` block, ``levels`` times: a label map at a coarser level.

    A sample's value is its channel vector: for one channel this is the plain mode; one-hot and
    multi-label masks stay valid label vectors. Ties go to the block's first sample in raster
    order. Any dtype (integer, boolean, floating); no gradient.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        levels: number of halvings (0 returns a contiguous ``x``).

    Returns:
        Contiguous tensor of ``x``'s dtype and shape ``(B, C, H / 2**levels, W / 2**levels)``.

    Raises:
        ValueError: for a tensor that is not 4-D or 5-D, or sizes ``2**levels`` does not divide.

    Example:
        >>> label = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 2], [3, 3, 2, 2], [0, 3, 1, 2]])[None, None]
        >>> restrict_mode(label).tolist()
        [[[[1, 0], [3, 2]]]]
    """
    if x.dim() not in (4, 5):
        raise ValueError(
            f"restrict_mode expects (B, C, H, W) or (B, C, D, H, W), got a tensor of shape {tuple(x.shape)}"
        )
    check_level_sizes(x.shape[2:], levels)
    for _ in range(levels):
        x = _mode_once(x)
    return x.contiguous()


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _spatial_match(x: torch.Tensor, spatial_shape: Sequence[int] | None, lead: int) -> bool:
    if spatial_shape is not None:
        return x.dim() == lead + len(spatial_shape) and tuple(x.shape[lead:]) == tuple(spatial_shape)
    return x.dim() - lead in (2, 3)


def infer_level_rule(
    x: object,
    spatial_shape: Sequence[int] | None = None,
    *,
    batched: bool = True,
    intensity: str = "area",
    categorical: bool = False,
) -> str:
    """The rule ``"auto"`` stands for, for one tensor.

    Args:
        x: the tensor (anything else is kept).
        spatial_shape: the images' spatial shape; a tensor with another one (or another rank) has
            no spatial axes of the images and is kept. ``None``: any 2-D or 3-D grid counts.
        batched: ``x`` has a batch axis before its channel axis (``False`` for one sample).
        intensity: the rule for intensities (the host's restriction method).
        categorical: the target is known to hold class indices (a loss with ``to_onehot_y``):
            a floating tensor then takes the mode whatever its values.

    Returns:
        One of :data:`LEVEL_RULES`.

    Example:
        >>> image = torch.rand(2, 1, 8, 8)
        >>> [infer_level_rule(t, image.shape[2:]) for t in (image, image > 0.5, torch.tensor([0, 1]))]
        ['area', 'mode', 'keep']
    """
    lead = 2 if batched else 1
    if not isinstance(x, torch.Tensor) or not _spatial_match(x, spatial_shape, lead):
        return "keep"
    if not (x.is_floating_point() or x.is_complex()):
        return "mode"
    if x.is_floating_point() and (categorical or _is_binary(x)):
        return "mode"
    return intensity


@dataclass(frozen=True)
class LevelRule:
    """A resolved rule for one tensor: how to pose it at any level.

    Attributes:
        rule: one of :data:`LEVEL_RULES`.
        batched: the tensors have a batch axis before the channel axis.
    """

    rule: str
    batched: bool = True

    def __post_init__(self) -> None:
        check_level_rule(self.rule, allow_auto=False)

    def apply(self, x: torch.Tensor, levels: int) -> torch.Tensor:
        """``x`` posed ``levels`` levels coarser (contiguous; ``"keep"`` returns ``x`` itself)."""
        if self.rule == "keep":
            return x
        if levels == 0:
            return x.contiguous()
        batch = x if self.batched else x[None]
        if self.rule == "mode":
            out = restrict_mode(batch, levels)
        else:
            out = restrict(batch, levels, self.rule).contiguous()
        return out if self.batched else out[0]


def resolve_level_rule(
    rule: str,
    x: object,
    spatial_shape: Sequence[int] | None = None,
    *,
    batched: bool = True,
    intensity: str = "area",
    categorical: bool = False,
    what: str = "the tensor",
) -> LevelRule:
    """Resolve ``rule`` (``"auto"`` or a concrete one) for ``x``, and check that it applies.

    Args:
        rule: ``"auto"`` or one of :data:`LEVEL_RULES`.
        x: the fine tensor the rule is for (its first batch, for a host).
        spatial_shape: the images' spatial shape.
        batched: ``x`` has a batch axis.
        intensity: what ``"auto"`` gives an intensity tensor.
        categorical: see :func:`infer_level_rule`.
        what: how messages name ``x`` (e.g. ``"the label"``).

    Returns:
        The :class:`LevelRule`.

    Raises:
        ValueError: for an unknown rule; for a spatial rule on a tensor without the images'
            spatial axes (naming its shape and ``"keep"``); for ``"area"``/``"antialias"`` on
            integer labels (naming ``"mode"``).

    Example:
        >>> resolve_level_rule("auto", torch.tensor([1, 0, 1]), (8, 8), what="the label").rule
        'keep'
    """
    check_level_rule(rule)
    if rule == "auto":
        rule = infer_level_rule(x, spatial_shape, batched=batched, intensity=intensity, categorical=categorical)
        return LevelRule(rule, batched)
    if rule == "keep" or not isinstance(x, torch.Tensor):
        return LevelRule("keep", batched)
    lead = 2 if batched else 1
    if not _spatial_match(x, spatial_shape, lead):
        layout = "(B, C, *spatial)" if batched else "(C, *spatial)"
        expected = "" if spatial_shape is None else f" with spatial shape {tuple(spatial_shape)}"
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}, not {layout}{expected}, so it has no spatial axes to restrict "
            f"with {rule!r}; use 'keep' (or 'auto') for class labels and other per-sample values"
        )
    if rule in ("area", "antialias") and not (x.is_floating_point() or x.is_complex()):
        raise ValueError(
            f"{what} holds {x.dtype} values: {rule!r} averages them, which needs floating-point intensities; "
            "use 'mode' (or 'auto') for integer labels"
        )
    return LevelRule(rule, batched)
