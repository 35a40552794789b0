"""The multiscale scalars reach MONAI's stock TensorBoardStatsHandler: read back from the event file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

monai = pytest.importorskip("monai")
pytest.importorskip("ignite")
pytest.importorskip("tensorboard")

from ignite.engine import Events  # noqa: E402
from mge_monai import MultiscaleSupervisedTrainer, from_multiscale_output  # noqa: E402
from monai.handlers import TensorBoardStatsHandler  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from .test_engines import make, run, samples  # noqa: E402


def logged(trainer, log_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[dict]]:
    """Run ``trainer`` with a stock TensorBoardStatsHandler; the event file's scalars and the outputs seen."""
    handler = TensorBoardStatsHandler(log_dir=str(log_dir), output_transform=from_multiscale_output())
    handler.attach(trainer)
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output[0])))
    run(trainer)
    handler.close()
    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return scalars, outputs


def test_full_multiscale_scalars_are_in_the_event_file_per_iteration(tmp_path: Path) -> None:
    trainer = make(MultiscaleSupervisedTrainer, epochs=4, data=samples(n=32), strategy="full-multiscale", levels=2)
    scalars, outputs = logged(trainer, tmp_path)
    strategy = trainer.multiscale.built_strategy
    plans = [strategy.plan(i) for i in range(trainer.state.iteration)]
    assert trainer.state.iteration == 8
    assert {"Loss", "mge_stage", "mge_level", "mge_term_0", "mge_saving", "mge_work_units", "mge_flops"} <= set(scalars)
    steps = list(range(1, 9))  # ignite counts iterations from 1
    assert scalars["mge_level"] == [(i, float(p.level)) for i, p in zip(steps, plans)]
    assert scalars["mge_stage"] == [(i, float(p.stage)) for i, p in zip(steps, plans)]
    assert [v for _, v in scalars["mge_level"]] == [2, 2, 2, 2, 2, 1, 1, 0]  # 8 iterations split 5/2/1
    # Term k exists only in the steps that have it: the finest stage has 3 terms.
    assert [s for s, _ in scalars["mge_term_2"]] == [i for i, p in zip(steps, plans) if len(p.batch_sizes) == 3]
    for tag in ("Loss", "mge_term_0", "mge_saving", "mge_work_units"):  # what the engine output held, step by step
        key = "loss" if tag == "Loss" else tag
        assert [v for _, v in scalars[tag]] == pytest.approx([float(o[key]) for o in outputs], rel=1e-6)
    work = [v for _, v in scalars["mge_work_units"]]
    assert all(b > a for a, b in itertools.pairwise(work))
    assert work[-1] == pytest.approx(trainer.cost.work_units, rel=1e-6)
    assert scalars["mge_saving"][-1][1] == pytest.approx(trainer.cost.saving, rel=1e-6) and trainer.cost.saving > 2
    assert scalars["mge_flops"][-1][1] == pytest.approx(trainer.cost.flops, rel=1e-6)


def test_single_scale_runs_log_their_cost_too(tmp_path: Path) -> None:
    trainer = make(MultiscaleSupervisedTrainer, epochs=1, strategy="single")
    scalars, _ = logged(trainer, tmp_path)
    assert [v for _, v in scalars["mge_saving"]] == [1.0, 1.0]  # two iterations, the single-scale cost itself
    assert [v for _, v in scalars["mge_level"]] == [0.0, 0.0]
    assert not any(tag.startswith("mge_term") for tag in scalars)


def test_the_transform_reads_dicts_and_decollated_lists_and_leaves_the_rest() -> None:
    transform = from_multiscale_output()
    item = {"image": torch.zeros(1, 4, 4), "loss": torch.tensor(0.5), "mge_level": 1, "mge_saving": 3.0}
    expected = {"Loss": 0.5, "mge_level": 1.0, "mge_saving": 3.0}
    assert transform(item) == expected
    assert transform([item, item]) == expected
    assert transform([{"loss": torch.tensor(0.25)}]) == {"Loss": 0.25}  # a stock trainer's output: the loss only
    assert from_multiscale_output(loss_key=None)(item) == {"mge_level": 1.0, "mge_saving": 3.0}
    assert transform(None) == {}
