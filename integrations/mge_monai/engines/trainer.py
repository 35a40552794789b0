"""``MultiscaleSupervisedTrainer``: MONAI's ``SupervisedTrainer`` with multiscale strategies."""

from __future__ import annotations

import inspect
from typing import Any

from monai.engines import SupervisedTrainer
from monai.utils import IgniteInfo, min_version, optional_import

from mge_plugins import Strategy

from .iteration import MultiscaleIteration

__all__ = ["MultiscaleSupervisedTrainer"]

_, has_ignite = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version)
_ITERATION_OPTIONS = tuple(name for name in inspect.signature(MultiscaleIteration).parameters if name != "strategy")


class MultiscaleSupervisedTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` that trains with Multiscale Gradient Estimation or Full-Multiscale.

    Takes every argument of :class:`monai.engines.SupervisedTrainer` plus the strategy ones of
    :class:`~mge_monai.MultiscaleIteration` (the same names and defaults, listed below), which it
    hands to the iteration it installs. With ``strategy="single"`` it runs
    ``SupervisedTrainer``'s own iteration and only adds cost accounting. In a bundle config::

        "trainer": {"_target_": "mge_monai.MultiscaleSupervisedTrainer", "strategy": "mge", ...}

    Segmentation (labels take the majority per block) and classification (the class label is
    the same at every level) train with the class swapped only; a run too short or images too
    small for ``levels`` train with fewer levels and one warning.

    Args:
        strategy: ``"full-multiscale"`` (default), ``"mge"``, ``"single"``,
            ``"progressive-resizing"``, a registered name, or a built strategy (the one given to a
            :class:`~mge_monai.MultiscaleBatchSampler`).
        levels: coarser levels (``"mge"``) or stages minus one (``"full-multiscale"``).
        mge_batch_size: finest-term batch size (default: a quarter of the loaded batch).
        growth: batch growth per coarser level.
        batch_sizes: explicit per-term sizes for ``"mge"``.
        restriction: ``"area"``, ``"nearest"`` or ``"antialias"``, for the images.
        label_restriction: ``"auto"`` (default), ``"mode"``, ``"nearest"``, ``"keep"``, ``"area"`` or
            ``"antialias"``: how the label is posed at coarse levels. ``"auto"`` takes the majority per
            block for segmentation labels (integer, or 0/1 values, or ``to_onehot_y`` losses), keeps
            targets without spatial axes (class labels), and restricts the rest like the images.
        iterations: Full-Multiscale steps; default ``max_epochs * epoch_length``.
        mge_levels: cap on MGE levels inside Full-Multiscale stages.
        split: ``"nested"`` or ``"disjoint"``.
        size_multiple: divisor the network needs on every level (else a dry forward pass checks).
        noise_sigma: build each level's input from the clean label plus coupled Gaussian noise.
        keep_noise_std: keep the per-pixel noise std on coarse levels (with ``noise_sigma``).
        label_key: key of the clean image in the batch, for a cached :class:`~mge_monai.LevelPyramidd`.
        nonfinite: ``"raise"`` (default) or ``"skip"`` steps with a NaN/inf loss or gradient
            (see :class:`~mge_monai.MultiscaleIteration`); skips are counted in
            :attr:`skipped_steps` and ``engine.state.mge_skipped_steps``.
        args, kwargs: :class:`~monai.engines.SupervisedTrainer`'s arguments, and the options above.
    """

    def __init__(self, *args: Any, strategy: str | Strategy = "full-multiscale", **kwargs: Any) -> None:
        if not has_ignite:
            raise ImportError(
                "MultiscaleSupervisedTrainer runs on MONAI's ignite engines, which need pytorch-ignite: "
                "pip install pytorch-ignite (or pip install 'mge-plugins[monai]')"
            )
        if kwargs.get("iteration_update") is not None:
            raise ValueError("MultiscaleSupervisedTrainer sets iteration_update itself; do not pass one")
        options = {name: kwargs.pop(name) for name in _ITERATION_OPTIONS if name in kwargs}
        self.multiscale = MultiscaleIteration(strategy=strategy, **options)
        kwargs["iteration_update"] = self.multiscale
        super().__init__(*args, **kwargs)
        self.multiscale.attach(self)

    @property
    def skipped_steps(self) -> int:
        """Iterations skipped because of a non-finite loss or gradient (``nonfinite="skip"``)."""
        return self.multiscale.skipped_steps

    @property
    def cost(self):
        """The run's :class:`mge_plugins.CostMeter`."""
        return self.multiscale.cost
