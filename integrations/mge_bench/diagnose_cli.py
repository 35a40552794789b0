"""``mge-bench diagnose``: does MGE pay on my model and data? A table and a verdict in about a minute.

Measures, on one loaded batch of a bundled task or of your own trainer, the per-sample gradient
variance of each level and of each level's difference to the next, the cost per sample of each
level (FLOPs and seconds), and the per-term batch sizes and number of levels it would train with
(:mod:`mge_bench.diagnose`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from mge_deepinv.cli import HelpFormatter, device_problem, nonnegative_int, positive_int
from mge_deepinv.tasks import NETWORKS, TASKS

from .diagnose import COST_BASES, diagnosis_json, format_diagnosis, run_diagnosis
from .probes import Probe, probe_of

__all__ = ["DiagnoseError", "build_parser", "load_from", "main", "task_probe"]

DESCRIPTION = """\
Does MGE pay on my model and data? Measures, on one loaded batch, per level k:
  V(grad l_k)                  per-sample gradient variance at level k (the coarsest term's V_K)
  V(grad l_k - grad l_k+1)     per-sample variance of the coupled difference to the next level
  |diff| / |grad|              mean norm of a sample's difference to the next level over that of its gradient
  C_k                          forward + backward cost per sample, in FLOPs and in seconds
and the per-term batch sizes N_k ∝ sqrt(V_k / C_k) (the multilevel Monte Carlo rule) at the cost of
one single-scale step of the loaded batch, choosing the number of levels too (K = 0 is plain SGD),
then prints whether MGE beats single-scale SGD's variance x cost and what to train with. The ratio
is an estimate from --samples probe samples: its spread over bootstrap resamples of them is printed,
and the verdict says when that spread does not settle it.

What to diagnose:
  --task TASK          a bundled task (mge-train's data, operator and network; --checkpoint for trained weights)
  --from SPEC          your own object: SPEC is module:function or path/to/file.py:function; the function
                       is called with no arguments and returns one of
                         a deepinv.Trainer or mge_deepinv.MultiscaleTrainer (one batch of its first
                           train loader, posed as MultiscaleTrainer poses it),
                         a MONAI SupervisedTrainer or mge_monai.MultiscaleSupervisedTrainer (one batch
                           of its data_loader, posed as MultiscaleIteration poses it),
                         a (model, level_loss, batch) triple: level_loss(batch, level) returns the mean
                           loss of batch (or of a slice of it) posed at level, as for mge_backward.
                       --from imports and runs that file or module: it runs its code with your
                       permissions, so point it only at code you trust.

The weights diagnosed are the ones the object holds (initial weights unless it loads a checkpoint):
the answer changes as the network learns, so diagnose trained weights too.
"""


class DiagnoseError(ValueError):
    """An input that cannot be diagnosed; the message is one line naming the option and the fix."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``mge-bench diagnose``."""
    tasks = "\n".join(f"  {name:<8} {task.description}" for name, task in TASKS.items())
    parser = argparse.ArgumentParser(
        prog="mge-bench diagnose", description=DESCRIPTION + "\ntasks:\n" + tasks, formatter_class=HelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", choices=sorted(TASKS), help="a bundled task")
    source.add_argument(
        "--from",
        dest="source",
        metavar="SPEC",
        help="module:function or path/to/file.py:function returning a trainer or a (model, level_loss, batch) "
        "triple; IMPORTS AND RUNS that code",
    )
    parser.add_argument(
        "--levels", type=nonnegative_int, metavar="N", help="deepest level to consider (default: the trainer's, else 2)"
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=16,
        metavar="N",
        help="probe samples, at most the loaded batch: per-sample gradients at each level",
    )
    parser.add_argument(
        "--cost", choices=COST_BASES, default="flops", help="what C_k is for the allocation (both are printed)"
    )
    parser.add_argument("--repeats", type=positive_int, default=3, metavar="N", help="timed passes per level")
    parser.add_argument(
        "--resamples",
        type=nonnegative_int,
        default=200,
        metavar="N",
        help="bootstrap resamples of the probe samples, for the spread of the ratio (no extra passes)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch, its noise and initial weights")
    bundled = parser.add_argument_group("bundled tasks (--task)")
    bundled.add_argument("--network", choices=NETWORKS, help="the network (default: dncnn, or the checkpoint's)")
    bundled.add_argument(
        "--checkpoint",
        type=Path,
        metavar="RUN",
        help="an mge-train run folder (results/TASK/DATE-TIME), a task folder (its latest run) or a checkpoint file",
    )
    bundled.add_argument(
        "--checkpoint-strategy",
        default="full-multiscale",
        metavar="NAME",
        help="which of the run's networks: the strategy folder it was saved in",
    )
    bundled.add_argument("--size", type=positive_int, default=64, metavar="PX", help="crop side in pixels")
    bundled.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="loaded batch")
    bundled.add_argument("--channels", type=int, choices=(1, 3), help="1 or 3 (default: 1, or the checkpoint's)")
    bundled.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    bundled.add_argument(
        "--restriction", default="area", choices=("area", "nearest", "antialias"), help="how levels are formed"
    )
    bundled.add_argument(
        "--coarse-noise", default="keep", choices=("keep", "restrict"), help="the noise level on coarse levels"
    )
    bundled.add_argument(
        "--coarse-operator",
        default="keep",
        choices=("keep", "restrict"),
        help="blur kernel and anti-alias filter on coarse levels: restricted with the image, or kept per pixel",
    )
    bundled.add_argument(
        "--coarse-mode", default="auto", choices=("auto", "physics", "restrict"), help="how coarse problems are posed"
    )
    return parser


def _user_frame(error: BaseException) -> str:
    """`` (at file.py:12)``: where in the user's code an exception was raised, when it was."""
    frames = traceback.extract_tb(error.__traceback__)
    return f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""


def _import(spec: str, target: str) -> Any:
    """The module of ``--from``: a file path (``.py``, or with a path separator) or a dotted module name."""
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise DiagnoseError(f"--from {spec}: no such file {target}; give path/to/file.py:function")
        name = f"_mge_diagnose_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise DiagnoseError(f"--from {spec}: {target} is not a Python file; give path/to/file.py:function")
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.resolve().parent))  # so the file imports its neighbours
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:
            raise DiagnoseError(
                f"--from {spec}: importing {target} raised {type(error).__name__}: {error}{_user_frame(error)}"
            ) from error
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # python -m's rule: modules of the current folder import
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as error:
        if error.name and target.startswith(error.name):
            raise DiagnoseError(
                f"--from {spec}: no module named {error.name!r} (on sys.path or in the current folder); give "
                "module:function for an importable module or path/to/file.py:function for a file"
            ) from error
        raise DiagnoseError(f"--from {spec}: importing {target} raised ModuleNotFoundError: {error}") from error
    except Exception as error:
        raise DiagnoseError(
            f"--from {spec}: importing {target} raised {type(error).__name__}: {error}{_user_frame(error)}"
        ) from error


def load_from(spec: str) -> Any:
    """Import ``--from``'s module or file and call its function (this runs the user's code).

    Args:
        spec: ``module:function`` or ``path/to/file.py:function``.

    Returns:
        What the function returned.

    Raises:
        DiagnoseError: for a malformed spec, a missing module, file or function, or an exception
            raised by the import or the call; the message is one line.
    """
    target, colon, name = spec.rpartition(":")
    if not colon or not target or not name.isidentifier():
        raise DiagnoseError(
            f"--from {spec}: expected module:function or path/to/file.py:function (e.g. --from my_training.py:build)"
        )
    module = _import(spec, target)
    function = getattr(module, name, None)
    if function is None:
        defined = sorted(
            k
            for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        listed = f" (it defines: {', '.join(defined[:8])}{', ...' if len(defined) > 8 else ''})" if defined else ""
        raise DiagnoseError(f"--from {spec}: {target} has no {name!r}{listed}")
    if not callable(function):
        raise DiagnoseError(f"--from {spec}: {name} is a {type(function).__name__}, not a function; name a function")
    try:
        return function()
    except Exception as error:
        raise DiagnoseError(
            f"--from {spec}: {name}() raised {type(error).__name__}: {error}{_user_frame(error)}"
        ) from error


def task_probe(args: argparse.Namespace) -> Probe:
    """The bundled task's :class:`Probe`: a ``MultiscaleTrainer`` as ``mge-train`` builds it, on one batch.

    Raises:
        DiagnoseError: for a device this machine lacks, a missing checkpoint or a network that does not match it.
    """
    from mge_deepinv import MultiscaleTrainer
    from mge_deepinv.cli import load_network
    from mge_deepinv.data import TRAIN_IMAGES, DictSamples, ImageCrops, bundled_images
    from mge_deepinv.networks import detect_network, network_problem
    from mge_deepinv.tasks import make_model

    problem = device_problem(args.device)
    if problem:
        raise DiagnoseError(problem)
    torch.manual_seed(args.seed)
    if args.checkpoint is not None:
        try:
            model = load_network(args.checkpoint, args.checkpoint_strategy, device=args.device)
        except FileNotFoundError as error:
            raise DiagnoseError(f"--checkpoint {args.checkpoint}: {error}") from None
        held, channels = detect_network(model.state_dict())
        if args.network not in (None, held):
            raise DiagnoseError(
                f"--network {args.network}, but the checkpoint holds a {held} network; drop --network or pass {held}"
            )
        if args.channels not in (None, channels):
            raise DiagnoseError(
                f"--channels {args.channels}, but the checkpoint's network takes {channels}; drop --channels"
            )
    else:
        channels, network = args.channels or 1, args.network or "dncnn"
        problem = network_problem(network, args.task, args.size, 0)  # the levels are fitted to the network later
        if problem:
            raise DiagnoseError(problem)
        model = make_model(channels, device=args.device, network=network)
    images = bundled_images(TRAIN_IMAGES, channels)
    smallest = min(int(min(im.shape[-2:])) for im in images)
    if args.size > smallest:
        raise DiagnoseError(
            f"--size {args.size} is larger than the bundled photographs: the smallest is {smallest} px on a side; "
            f"use --size {smallest} or less"
        )
    crops = ImageCrops(images, args.size, args.batch_size, seed=args.seed)
    loader = torch.utils.data.DataLoader(DictSamples(crops), batch_size=args.batch_size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*progress bar frequency.*")
        trainer = MultiscaleTrainer(
            model=model, physics=TASKS[args.task].physics(args.size, channels, args.device),
            optimizer=torch.optim.Adam(model.parameters()), train_dataloader=loader, epochs=1,
            online_measurements=True, save_path=None, device=args.device, verbose=False, show_progress_bar=False,
            strategy="mge", levels=2 if args.levels is None else args.levels, non_blocking_transfers=False,
            restriction=args.restriction, coarse_noise=args.coarse_noise, coarse_mode=args.coarse_mode,
            coarse_operator=args.coarse_operator,
        )  # fmt: skip
    probe = probe_of(trainer, args.levels)
    weights = f"trained weights of {args.checkpoint}" if args.checkpoint is not None else "initial weights"
    probe.kind = "task"
    probe.description = f"{args.task} ({TASKS[args.task].description}), {args.size} px crops, {weights}; " + (
        probe.description
    )
    return probe


def _object_probe(args: argparse.Namespace) -> Probe:
    given = [f"--{name.replace('_', '-')}" for name in ("network", "checkpoint", "channels") if getattr(args, name)]
    given += [
        flag
        for flag, value, default in (
            ("--size", args.size, 64),
            ("--batch-size", args.batch_size, 16),
            ("--device", args.device, "cpu"),
        )
        if value != default
    ]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise DiagnoseError(f"{', '.join(given)} {verb} to --task only; with --from, your function builds the model")
    torch.manual_seed(args.seed)
    obj = load_from(args.source)
    try:
        return probe_of(obj, args.levels)
    except TypeError as error:
        raise DiagnoseError(f"--from {args.source}: {error}") from None
    except StopIteration:
        raise DiagnoseError(f"--from {args.source}: the trainer's data loader is empty; give it data") from None


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``mge-bench diagnose``.

    Args:
        argv: the arguments after ``diagnose`` (default: ``sys.argv[2:]``).
    """
    argv = sys.argv[2:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        probe = task_probe(args) if args.task else _object_probe(args)
        torch.manual_seed(args.seed)
        result = run_diagnosis(
            probe,
            levels=args.levels,
            samples=args.samples,
            cost=args.cost,
            repeats=args.repeats,
            resamples=args.resamples,
            seed=args.seed,
        )
    except DiagnoseError as error:
        parser.error(str(error))
    except ValueError as error:  # the core's and the hosts' checks: one line naming the fix
        parser.error(" ".join(str(error).split()) or type(error).__name__)
    print(format_diagnosis(result), flush=True)
    if args.json is not None:
        data = diagnosis_json(result, " ".join(["mge-bench", "diagnose", *argv]))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1))
        print(f"\nwrote {args.json}")
