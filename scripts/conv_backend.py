"""Per-sample time of the 3D study's network by batch size, and the convolution kernel PyTorch picks.

On a CPU, PyTorch runs a float32 3D convolution through oneDNN (``mkldnn_convolution``) or
through its native ``slow_conv3d``, by a size heuristic: a batch of one sample with few channels
takes the native path. A Full-Multiscale stage's finest term can hold one sample (a loaded batch
of 4 with 2 levels has terms ``(1, 2, 4)``), while a single-scale step never does. This times one
forward and backward of ``scripts/monai_study.py``'s residual SegResNet per batch size and side
(median of ``--repeats``) and names the kernel each ran, from the profiler's operator names.

    python scripts/conv_backend.py --sides 64,32 --batches 1,2,4 --out results/conv_backend

Writes ``conv_backend.json`` and ``conv_backend.md`` under ``--out``; ``--render JSON --into FILE
--block NAME`` rewrites the text between ``<!-- conv:NAME -->`` and ``<!-- /conv:NAME -->``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from monai_study import network
from timed_result import add_render_options, header, render_requested, timed, write

from mge_plugins.cli_args import positive_int

KERNELS = {"aten::mkldnn_convolution": "oneDNN", "aten::slow_conv3d_forward": "native slow_conv3d"}


def _ints(text: str) -> list[int]:
    return [positive_int(part) for part in text.split(",") if part]


def time_case(model: torch.nn.Module, batch: int, side: int, repeats: int) -> dict:
    """Median seconds of one forward and backward of ``batch`` samples of side ``side``, and the kernel used."""
    x = torch.rand(batch, 1, side, side, side)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        (model(x) - x).pow(2).mean().backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    names = {event.key for event in prof.key_averages()}
    kernels = sorted(label for name, label in KERNELS.items() if name in names)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"batch": batch, "side": side, "seconds": seconds, "per_sample": seconds / batch, "kernels": kernels}


def markdown(result: dict) -> str:
    """The table of ``conv_backend.md``."""
    lines = header(result)
    if not result["valid"]:
        return "\n".join(lines) + "\n"
    lines += ["| side | batch | ms per sample | convolution kernel |", "|---:|---:|---:|---|"]
    for case in result["cases"]:
        lines.append(
            f"| {case['side']}³ | {case['batch']} | {1e3 * case['per_sample']:.0f} | {', '.join(case['kernels'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Time every (side, batch) case and write ``conv_backend.json`` and ``conv_backend.md``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=_ints, default=[64, 32], help="cube sides (default: 64,32)")
    parser.add_argument("--batches", type=_ints, default=[1, 2, 4], help="batch sizes (default: 1,2,4)")
    parser.add_argument("--width", type=positive_int, default=4, help="SegResNet init_filters (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed passes (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--out", default="results/conv_backend", help="(default: %(default)s)")
    add_render_options(parser)
    args = parser.parse_args()
    if render_requested(args, "conv", markdown):
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = network(args.width)
    result = timed(lambda: {"cases": [time_case(model, b, s, args.repeats) for s in args.sides for b in args.batches]})
    write(args.out, "conv_backend", result, markdown)


if __name__ == "__main__":
    main()
