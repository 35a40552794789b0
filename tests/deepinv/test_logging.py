"""The multiscale scalars reach deepinv's own loggers: wandb, MLflow, printed lines, progress bar, loss_history."""

from __future__ import annotations

import itertools
import sys
import types
from numbers import Number

import pytest

dinv = pytest.importorskip("deepinv")

from mge_deepinv import MultiscaleTrainer  # noqa: E402

from .conftest import make_trainer  # noqa: E402

SCALARS = {"mge_stage", "mge_level", "mge_term_0", "mge_saving", "mge_work_units", "mge_flops"}


class FakeWandb(types.ModuleType):
    """What deepinv 0.5.0's Trainer calls of ``wandb`` when ``wandb_vis=True``."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.run = None
        self.logged: list[tuple[int, dict]] = []

    def init(self, **kwargs) -> None:
        self.run = types.SimpleNamespace(id="run-0")

    def log(self, data: dict, step: int | None = None) -> None:
        self.logged.append((step, dict(data)))

    def finish(self) -> None:
        self.run = None


class FakeMlflow(types.ModuleType):
    """What deepinv 0.5.0's Trainer calls of ``mlflow`` when ``mlflow_vis=True``; metrics must be numbers."""

    def __init__(self) -> None:
        super().__init__("mlflow")
        self.active = None
        self.logged: list[tuple[int, dict]] = []

    def active_run(self):
        return self.active

    def start_run(self, **kwargs) -> None:
        self.active = types.SimpleNamespace(info=types.SimpleNamespace(run_id="run-0"))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        bad = {k: v for k, v in metrics.items() if not isinstance(v, Number)}
        assert not bad, f"mlflow takes numbers only: {bad}"
        self.logged.append((step, dict(metrics)))

    def end_run(self) -> None:
        self.active = None


@pytest.fixture
def fakes(monkeypatch) -> tuple[FakeWandb, FakeMlflow]:
    wandb, mlflow = FakeWandb(), FakeMlflow()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    return wandb, mlflow


def test_every_steps_stage_level_terms_and_saving_reach_wandb_and_mlflow(fakes) -> None:
    wandb, mlflow = fakes
    trainer = make_trainer(
        MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=2, wandb_vis=True, mlflow_vis=True,
        log_train_batch=True,
    )  # fmt: skip
    trainer.train()
    strategy = trainer.built_strategy
    assert len(wandb.logged) == len(mlflow.logged) == trainer.cost.steps == 8
    for (step, logs), (mstep, mlogs) in zip(wandb.logged, mlflow.logged):
        plan = strategy.plan(step)
        assert step == mstep and logs == mlogs
        assert SCALARS | {"TotalLoss", "PSNR"} <= set(logs)
        assert (logs["mge_stage"], logs["mge_level"]) == (plan.stage, plan.level)
        assert {k for k in logs if k.startswith("mge_term_")} == {f"mge_term_{k}" for k in range(len(plan.batch_sizes))}
    assert [s for s, _ in wandb.logged] == list(range(8))
    assert [logs["mge_level"] for _, logs in wandb.logged] == [2, 2, 2, 2, 2, 1, 1, 0]
    work = [logs["mge_work_units"] for _, logs in wandb.logged]
    assert all(b > a for a, b in itertools.pairwise(work)) and work[-1] == trainer.cost.work_units
    last = wandb.logged[-1][1]
    assert last["mge_saving"] == trainer.cost.saving > 2 and last["mge_flops"] == trainer.cost.flops
    assert last == {**last, **trainer.last_step_scalars}


def test_per_epoch_logging_gets_the_last_steps_scalars(fakes) -> None:
    wandb, _ = fakes
    trainer = make_trainer(MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=2, wandb_vis=True)
    trainer.train()
    assert [step for step, _ in wandb.logged] == [0, 1]  # deepinv logs once per epoch, by epoch
    assert [logs["mge_level"] for _, logs in wandb.logged] == [2, 0]  # steps 3 and 7
    assert wandb.logged[-1][1]["mge_saving"] == trainer.cost.saving


def test_each_loss_is_logged_and_kept_in_loss_history_as_deepinv_does() -> None:
    losses = [dinv.loss.SupLoss(), dinv.loss.MCLoss()]
    steps: list[dict] = []
    trainer = make_trainer(MultiscaleTrainer, strategy="mge", levels=1, epochs=2, losses=losses, log_train_batch=True)
    original = trainer.compute_loss

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        steps.append(dict(out[2]))
        return out

    trainer.compute_loss = spy
    trainer.train()
    assert len(steps) == 8
    for logs in steps:  # one step's meters (log_train_batch resets them): the parts of the fine loss
        assert logs["SupLoss"] > 0 and logs["MCLoss"] > 0
        assert logs["SupLoss"] + logs["MCLoss"] == pytest.approx(logs["TotalLoss"], rel=1e-5)
    assert trainer.loss_history["SupLoss"] == pytest.approx([logs["SupLoss"] for logs in steps])
    assert trainer.loss_history["MCLoss"] == pytest.approx([logs["MCLoss"] for logs in steps])


def test_loss_history_per_epoch_holds_the_epochs_mean_loss() -> None:
    trainer = make_trainer(MultiscaleTrainer, strategy="mge", levels=1, epochs=2)
    totals: list[float] = []
    original = trainer.compute_loss

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        totals.append(float(out[0]))
        return out

    trainer.compute_loss = spy
    trainer.train()
    # One loss: its meter averages the same per-sample values as TotalLoss's per-step means (equal term-0 batches).
    expected = [sum(totals[:4]) / 4, sum(totals[4:]) / 4]
    assert trainer.loss_history["SupLoss"] == pytest.approx(expected, rel=1e-5)


def test_single_scale_logs_keep_deepinvs_keys_and_add_the_cost(fakes) -> None:
    wandb, _ = fakes
    trainer = make_trainer(MultiscaleTrainer, strategy="single", epochs=1, wandb_vis=True, log_train_batch=True)
    trainer.train()
    logs = wandb.logged[-1][1]
    assert {"TotalLoss", "PSNR"} <= set(logs)
    assert (logs["mge_stage"], logs["mge_level"], logs["mge_saving"]) == (-1, 0, 1.0)
    assert not [k for k in logs if k.startswith("mge_term_")]


def test_the_progress_bar_and_the_printed_epoch_line_show_stage_level_and_saving(capsys) -> None:
    trainer = make_trainer(
        MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=2, verbose=True, show_progress_bar=True
    )
    trainer.train()
    bar = capsys.readouterr().err
    assert "mge_stage=2" in bar and "mge_level=0" in bar and "mge_saving=" in bar
    trainer = make_trainer(
        MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=2, verbose=True, show_progress_bar=False
    )
    trainer.train()
    printed = capsys.readouterr().out
    assert "Train epoch 1: TotalLoss=" in printed and "mge_stage=2, mge_level=0, mge_term_0=" in printed
    assert f"mge_saving={round(trainer.cost.saving, 3)}" in printed
