"""Options and summaries shared by deepinv's stock demos run with the trainer class swapped."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from mge_plugins.batching import batch_size_of
from mge_plugins.cli_args import budget_value
from mge_plugins.cost import measure_level_flops
from mge_plugins.host_step import DEFAULT_BUDGET

__all__ = ["add_swap_options", "build_trainer", "fine_flops", "swap_summary"]


def add_swap_options(parser: argparse.ArgumentParser) -> None:
    """``--trainer``, ``--strategy``, ``--budget``, ``--fused``, ``--seed`` and ``--json``."""
    parser.add_argument("--trainer", choices=("stock", "multiscale"), default="multiscale", help="which trainer")
    parser.add_argument("--strategy", default="full-multiscale", help="MultiscaleTrainer's strategy")
    parser.add_argument(
        "--budget",
        type=budget_value,
        default=DEFAULT_BUDGET,
        help="MultiscaleTrainer's budget: fraction, compute or steps",
    )
    parser.add_argument("--fused", action="store_true", help="MultiscaleTrainer(fused=True)")
    parser.add_argument(
        "--restriction",
        choices=("auto", "area", "nearest", "antialias"),
        default="auto",
        help="MultiscaleTrainer's restriction",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops, the weights and the shuffling")
    parser.add_argument("--json", metavar="FILE", help="also write the summary to FILE")


def fine_flops(model: torch.nn.Module, physics: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Forward + backward FLOPs of one supervised step of ``model`` on a loaded ``(x, y)`` batch.

    Measured by :func:`mge_plugins.cost.measure_level_flops`, as the multiscale trainer's cost meter
    measures its passes, so the two trainers' FLOPs compare.
    """

    def fine_loss(pair: tuple[torch.Tensor, torch.Tensor], level: int) -> torch.Tensor:
        x, y = pair
        return torch.nn.functional.mse_loss(model(y, physics), x)

    per_sample = measure_level_flops(fine_loss, batch, 0, model.parameters())[0]
    return per_sample * batch_size_of(batch)


def build_trainer(args: argparse.Namespace, **options: Any) -> Any:
    """``dinv.Trainer(**options)`` for ``--trainer stock``, else ``MultiscaleTrainer`` with the swap options."""
    import deepinv as dinv
    from mge_deepinv import MultiscaleTrainer

    if args.trainer == "stock":
        return dinv.Trainer(**options)
    return MultiscaleTrainer(
        **options, strategy=args.strategy, budget=args.budget, fused=args.fused, restriction=args.restriction
    )


def swap_summary(
    args: argparse.Namespace, demo: str, trainer: Any, psnr: float, step_flops: float | None, steps: int
) -> dict[str, Any]:
    """One run's PSNR, FLOPs and settings; the stock trainer's FLOPs are ``step_flops * steps``."""
    summary: dict[str, Any] = {"demo": demo, "trainer": args.trainer, "seed": args.seed, "psnr": float(psnr)}
    if args.trainer == "stock":
        summary.update(steps=steps, flops=step_flops * steps)
    else:
        cost = trainer.cost.summary()
        summary.update(
            strategy=args.strategy,
            budget=args.budget,
            fused=args.fused,
            restriction=trainer.restriction,
            steps=cost["steps"],
            flops=cost["flops"],
            baseline_flops=cost["baseline_flops"],
        )
    return summary
