"""Do ``channels_last`` or ``torch.compile`` make a training step cheaper, at each level's size?

For every level of a Full-Multiscale run (the residual CNN of the examples, a batch of
``--batch-size`` crops of side ``--size / 2**level``), times one training step (forward,
backward, optimizer step) of each variant, over ``--steps`` steps and ``--repeats`` interleaved
repeats (medians):

- ``eager``: the network as is (contiguous tensors), the reference;
- ``channels_last``: the network and its inputs in ``torch.channels_last`` memory format;
- ``compile``: ``torch.compile(network)`` (compiled once per level's shape, outside the timing).

Every variant computes the same step from the same weights (checked: the losses agree to
1e-4). The load is sampled throughout; when it exceeds the cores the result is marked invalid
(``"valid": false``) and the Markdown says so instead of quoting seconds.

    python scripts/step_options.py --size 128 --levels 3 --steps 20 --repeats 3 --out results/options

Writes ``options.json`` and ``options.md`` under ``--out``. ``--render JSON --into FILE --block NAME``
rewrites the text between ``<!-- options:NAME -->`` and ``<!-- /options:NAME -->`` of ``FILE`` from a
saved ``options.json`` (``tests/test_benchmarks_doc.py`` checks BENCHMARKS.md's blocks that way).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_common import TRAIN_IMAGES, RandomCrops, bundled_images, residual_denoiser
from timed_result import add_render_options, header, render_requested, timed, write

from mge_plugins import restrict
from mge_plugins.cli_args import positive_int

VARIANTS = ("eager", "channels_last", "compile")


def prepare(variant: str, model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The network of ``variant`` (a copy) and how its inputs are laid out."""
    model = copy.deepcopy(model)
    if variant == "channels_last":
        return model.to(memory_format=torch.channels_last), lambda x: x.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        return torch.compile(model, dynamic=False), lambda x: x
    return model, lambda x: x


def time_level(level: int, args: argparse.Namespace, crops: RandomCrops, variants: list[str]) -> dict:
    """Median seconds per step of each variant at ``level``, and each variant's first loss."""
    torch.manual_seed(args.seed)
    base = residual_denoiser(args.width, args.depth)
    clean = restrict(crops(args.batch_size), level)
    noisy = clean + args.sigma * torch.randn_like(clean)
    built = {v: prepare(v, base) for v in variants}
    optimizers = {v: torch.optim.SGD(built[v][0].parameters(), lr=0.0) for v in variants}  # lr 0: same weights

    def step(variant: str) -> float:
        model, layout = built[variant]
        optimizers[variant].zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(layout(noisy)), layout(clean))
        loss.backward()
        optimizers[variant].step()
        return loss.item()

    first = {v: step(v) for v in variants}  # compiles, and warms up every variant
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(v)
            times[v].append((time.perf_counter() - start) / args.steps)
    medians = {v: statistics.median(times[v]) for v in variants}
    return {
        "level": level,
        "side": clean.shape[-1],
        "seconds": medians,
        "repeats": times,
        "relative": {v: medians[v] / medians["eager"] for v in variants},
        "losses_agree": all(abs(first[v] - first["eager"]) <= 1e-4 * abs(first["eager"]) for v in variants),
    }


def markdown(result: dict) -> str:
    """The table of ``options.md``."""
    lines = header(result)
    if not result["valid"]:
        return "\n".join(lines) + "\n"
    variants = result["variants"]
    lines += [
        "| level | side | " + " | ".join(f"{v} (ms/step)" for v in variants) + " | "
        + " | ".join(f"{v} / eager" for v in variants if v != "eager") + " |",
        "|---:|---:|" + "---:|" * (2 * len(variants) - 1),
    ]  # fmt: skip
    for row in result["levels"]:
        times = " | ".join(f"{1e3 * row['seconds'][v]:.2f}" for v in variants)
        ratios = " | ".join(f"{row['relative'][v]:.2f}" for v in variants if v != "eager")
        lines.append(f"| {row['level']} | {row['side']} | {times} | {ratios} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Time every variant at every level and write ``options.json`` and ``options.md``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=positive_int, default=128, help="fine crop side (default: %(default)s)")
    parser.add_argument("--levels", type=int, default=3, help="coarser levels (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="crops per step (default: %(default)s)")
    parser.add_argument("--width", type=positive_int, default=16, help="network channels (default: %(default)s)")
    parser.add_argument("--depth", type=positive_int, default=5, help="convolutions (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=0.1, help="noise level (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=20, help="timed steps per repeat (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="interleaved repeats (default: %(default)s)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)}; eager is always timed (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--out", default="results/options", help="(default: %(default)s)")
    add_render_options(parser)
    args = parser.parse_args()
    if render_requested(args, "options", markdown):
        return
    variants = ["eager", *(v for v in args.variants.split(",") if v and v != "eager")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; use some of {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    crops = RandomCrops(bundled_images(TRAIN_IMAGES), args.size, args.seed)
    levels = range(args.levels + 1)
    result = timed(lambda: {"variants": variants, "levels": [time_level(lv, args, crops, variants) for lv in levels]})
    write(args.out, "options", result, markdown)


if __name__ == "__main__":
    main()
