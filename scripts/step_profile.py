"""Where a Full-Multiscale step's time goes, per stage and level, and what the plugin adds over a hand loop.

For every stage of a Full-Multiscale schedule (the plain PyTorch path, the residual CNN of the
examples, fresh crops of the bundled photographs) it times, over ``--steps`` steps and
``--repeats`` interleaved repeats:

- ``hand``: a hand-written loop doing exactly the passes of the step (restriction, forward and
  backward per level, one optimizer step), instrumented per part: data (cutting the crops),
  restriction, forward, backward, optimizer;
- ``plugin``: :func:`mge_plugins.mge_step` on the same batches and plan (``--fused`` for fused
  passes, with the hand loop fused the same way).

The overhead is ``median(plugin) / median(hand) - 1`` per stage, and over a whole Full-Multiscale
run of 1000 steps (each stage's step time times its steps in that run's split). The load is sampled throughout;
when it exceeds the cores the result is marked invalid (``"valid": false``) and the Markdown says
so instead of quoting seconds.

    python scripts/step_profile.py --size 128 --levels 3 --steps 20 --repeats 3 --out results/profile

Writes ``profile.json`` and ``profile.md`` under ``--out``. ``--render JSON --into FILE --block NAME``
rewrites the text between ``<!-- profile:NAME -->`` and ``<!-- /profile:NAME -->`` of ``FILE`` from a
saved ``profile.json`` (``tests/test_benchmarks_doc.py`` checks BENCHMARKS.md's blocks that way).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain_common import TRAIN_IMAGES, RandomCrops, bundled_images, residual_denoiser
from timed_result import add_render_options, header, render_requested, timed, write

from mge_plugins import StepPlan, build_strategy, mge_step, required_batch_size, restrict
from mge_plugins.cost import step_passes

PARTS = ("data", "restriction", "forward", "backward", "optimizer")


def pose(batch: tuple[torch.Tensor, torch.Tensor], level: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy input and clean target at ``level`` from clean crops and fine-grid noise (std kept)."""
    clean, noise = batch
    target = restrict(clean, level)
    return target + sigma * restrict(noise, level) * 2.0**level, target


def hand_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    plan: StepPlan,
    sigma: float,
    fused: bool,
    parts: dict[str, float],
    levels: dict[int, float],
) -> None:
    """The passes of one MGE step written by hand, timed per part and per level."""
    optimizer.zero_grad(set_to_none=True)
    sizes = plan.batch_sizes
    for n, level in step_passes(sizes, base_level=plan.level, fused=fused):
        start = time.perf_counter()
        j = level - plan.level
        inputs, target = pose((batch[0][:n], batch[1][:n]), level, sigma)
        t1 = time.perf_counter()
        per_sample = (model(inputs) - target).pow(2).flatten(1).mean(1)
        if fused:
            loss = per_sample[: sizes[j]].mean() - (per_sample[: sizes[j - 1]].mean() if j else 0.0)
        else:  # unfused passes come in pairs: +l_j on term j, then -l_{j+1} on the same samples
            loss = per_sample.mean()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        parts["restriction"] += t1 - start
        parts["forward"] += t2 - t1
        parts["backward"] += t3 - t2
        levels[level] += t3 - start
    start = time.perf_counter()
    optimizer.step()
    parts["optimizer"] += time.perf_counter() - start


RUN_STEPS = 1000
"""Length of the Full-Multiscale run whose stages are profiled (its split sets each stage's weight)."""


def stage_plans(args: argparse.Namespace) -> list[tuple[StepPlan, int]]:
    """One plan per Full-Multiscale stage, coarsest first, with the stage's steps in a run of :data:`RUN_STEPS`."""
    strategy = build_strategy(
        "full-multiscale", loaded_batch_size=args.batch_size, levels=args.levels, iterations=RUN_STEPS
    )
    seen: dict[int, StepPlan] = {}
    steps: dict[int, int] = defaultdict(int)
    for step in range(RUN_STEPS):
        plan = strategy.plan(step)
        seen.setdefault(plan.level, plan)
        steps[plan.level] += 1
    return [(seen[level], steps[level]) for level in sorted(seen, reverse=True)]


def whole_run(stages: list[dict]) -> dict[str, float]:
    """Seconds of the whole run in each loop, every stage weighted by its steps, and the plugin's overhead."""
    hand = sum(s["run_steps"] * s["hand_seconds"] for s in stages)
    plugin = sum(s["run_steps"] * s["plugin_seconds"] for s in stages)
    return {"steps": sum(s["run_steps"] for s in stages), "hand_seconds": hand, "plugin_seconds": plugin,
            "overhead": plugin / hand - 1}  # fmt: skip


def profile_stage(plan: StepPlan, args: argparse.Namespace, crops: RandomCrops) -> dict:
    """Median seconds per step of the hand loop and the plugin for one stage, and the hand loop's parts."""
    torch.manual_seed(args.seed)
    model = residual_denoiser(args.width, args.depth)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    per_sample_mse = nn.MSELoss(reduction="none")
    need = required_batch_size(plan.batch_sizes)
    times: dict[str, list[float]] = {"hand": [], "plugin": []}
    parts: dict[str, float] = defaultdict(float)
    levels: dict[int, float] = defaultdict(float)
    for repeat in range(args.repeats + 1):  # the first repeat warms up and is dropped
        for kind in ("hand", "plugin"):
            total = 0.0
            for step in range(args.steps):
                start = time.perf_counter()
                clean = crops(need)
                batch = (clean, torch.randn_like(clean))
                data = time.perf_counter() - start
                start = time.perf_counter()
                if kind == "hand":
                    hand_step(model, optimizer, batch, plan, args.sigma, args.fused, parts, levels)
                else:
                    mge_step(model, optimizer, per_sample_mse if args.fused else nn.MSELoss(), batch, plan,
                             pose=lambda b, lv: pose(b, lv, args.sigma), coupling=False, fused=args.fused,
                             step=step + 1)  # fmt: skip
                total += time.perf_counter() - start
                if kind == "hand":
                    parts["data"] += data
            if repeat:
                times[kind].append(total / args.steps)
            else:  # the warm-up repeat's parts are not kept
                parts.clear()
                levels.clear()
    hand, plugin = statistics.median(times["hand"]), statistics.median(times["plugin"])
    steps = args.steps * args.repeats
    return {
        "level": plan.level,
        "batch_sizes": list(plan.batch_sizes),
        "passes": len(step_passes(plan.batch_sizes, base_level=plan.level, fused=args.fused)),
        "hand_seconds": hand,
        "plugin_seconds": plugin,
        "overhead": plugin / hand - 1,
        "hand_repeats": times["hand"],
        "plugin_repeats": times["plugin"],
        "parts": {part: parts[part] / steps for part in PARTS},
        "levels": {str(level): seconds / steps for level, seconds in sorted(levels.items())},
    }


def markdown(result: dict) -> str:
    """The tables of ``profile.md``."""
    lines = header(result)
    if not result["valid"]:
        return "\n".join(lines) + "\n"
    lines += [
        "| stage level | terms | passes | hand loop (ms/step) | mge_step (ms/step) | overhead |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for s in result["stages"]:
        lines.append(
            f"| {s['level']} | {tuple(s['batch_sizes'])} | {s['passes']} | {1e3 * s['hand_seconds']:.1f} | "
            f"{1e3 * s['plugin_seconds']:.1f} | {100 * s['overhead']:+.1f} % |"
        )
    run = result["run"]
    split = " / ".join(str(s["run_steps"]) for s in result["stages"])
    lines.append(
        f"| whole run, {run['steps']} steps ({split}) | | | {run['hand_seconds']:.2f} s | "
        f"{run['plugin_seconds']:.2f} s | {100 * run['overhead']:+.1f} % |"
    )
    lines += ["", "| stage level | " + " | ".join(PARTS) + " | per level (ms) |", "|---:|" + "---:|" * (len(PARTS) + 1)]
    for s in result["stages"]:
        per_level = ", ".join(f"L{lv}: {1e3 * t:.1f}" for lv, t in s["levels"].items())
        lines.append(
            f"| {s['level']} | " + " | ".join(f"{1e3 * s['parts'][p]:.1f}" for p in PARTS) + f" | {per_level} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Profile every stage and write ``profile.json`` and ``profile.md``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="crop side (default: %(default)s)")
    parser.add_argument("--levels", type=int, default=3, help="coarser levels (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="loaded batch (default: %(default)s)")
    parser.add_argument("--width", type=int, default=16, help="network channels (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=5, help="convolutions (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=0.1, help="noise level (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default: %(default)s)")
    parser.add_argument("--fused", action="store_true", help="fused passes in both loops")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--out", default="results/profile", help="(default: %(default)s)")
    add_render_options(parser)
    args = parser.parse_args()
    if render_requested(args, "profile", markdown):
        return
    torch.set_num_threads(args.threads)
    crops = RandomCrops(bundled_images(TRAIN_IMAGES), args.size, args.seed)

    def measure() -> dict:
        stages = [{**profile_stage(plan, args, crops), "run_steps": steps} for plan, steps in stage_plans(args)]
        return {"stages": stages, "run": whole_run(stages)}

    write(args.out, "profile", timed(measure), markdown)


if __name__ == "__main__":
    main()
