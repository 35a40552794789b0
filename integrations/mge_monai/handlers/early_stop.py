"""Early stopping whose patience counts from the fine stage of a coarse-to-fine run."""

from __future__ import annotations

from typing import Any

from monai.handlers import EarlyStopHandler

__all__ = ["FineStageEarlyStopHandler"]


class FineStageEarlyStopHandler(EarlyStopHandler):
    """MONAI's ``EarlyStopHandler`` that ignores the evaluations made before the fine stage.

    Evaluations score the fine task, which the coarse stages of Full-Multiscale or progressive
    resizing do not train: a fine-level score that stalls there would make the stock handler end
    the run before any fine step. This one lets every evaluation taken while the trainer's last
    iteration was on a coarse level pass, so its ``patience`` counts from the first evaluation of
    the fine stage. With a single-scale or MGE trainer (or any other engine) it is the stock handler.

    Args:
        *args: ``EarlyStopHandler``'s (``patience``, ``score_function``, ``trainer``, ...).
        **kwargs: ``EarlyStopHandler``'s.

    Example:
        >>> stopper = FineStageEarlyStopHandler(patience=3, score_function=lambda e: e.state.metrics["psnr"],
        ...                                     trainer=trainer)  # doctest: +SKIP
        >>> stopper.attach(evaluator)  # doctest: +SKIP
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._trainer = None
        super().__init__(*args, **kwargs)

    def set_trainer(self, trainer: Any) -> None:
        """Stop ``trainer``, and read from it whether its fine stage has begun."""
        super().set_trainer(trainer)
        self._trainer = trainer

    def fine_stage_begun(self) -> bool:
        """Whether the trainer's last iteration was on the fine grid (true for a trainer without stages)."""
        from mge_monai import MultiscaleIteration

        iteration = getattr(self._trainer, "multiscale", None) or getattr(self._trainer, "_process_function", None)
        step = getattr(iteration, "multiscale", None) if isinstance(iteration, MultiscaleIteration) else None
        if step is None or self._trainer.state.iteration < 1:
            return True
        return step.strategy.plan(self._trainer.state.iteration - 1).level == 0

    def __call__(self, engine: Any) -> None:
        """The stock handler's check, from the first evaluation of the fine stage on."""
        if self._trainer is not None and not self.fine_stage_begun():
            return
        super().__call__(engine)
