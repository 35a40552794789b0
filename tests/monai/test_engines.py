from __future__ import annotations

import warnings

import pytest
import torch

monai = pytest.importorskip("monai")
pytest.importorskip("ignite")

from ignite.engine import Events  # noqa: E402
from mge_monai import MultiscaleIteration, MultiscaleSupervisedTrainer  # noqa: E402
from monai.data import DataLoader, Dataset  # noqa: E402
from monai.engines import SupervisedEvaluator, SupervisedTrainer  # noqa: E402
from monai.engines.utils import IterationEvents  # noqa: E402
from monai.handlers import (  # noqa: E402
    CheckpointLoader,
    CheckpointSaver,
    MeanSquaredError,
    ValidationHandler,
    from_engine,
)
from monai.metrics import PSNRMetric  # noqa: E402
from monai.networks.nets import UNet  # noqa: E402


def samples(dims: int = 2, n: int = 32, size: int = 32, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, 1, size)
    axes = torch.meshgrid(*([grid] * dims), indexing="ij")
    out = []
    for _ in range(n):
        f = torch.rand(dims, generator=g) * 4
        clean = 0.5 + 0.4 * torch.cos(6.28 * sum(fi * a for fi, a in zip(f, axes)))[None]
        out.append({"image": clean + 0.1 * torch.randn(clean.shape, generator=g), "label": clean})
    return out


def network(dims: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(spatial_dims=dims, in_channels=1, out_channels=1, channels=(8, 16), strides=(2,), num_res_units=1)


def make(cls, *, dims=2, epochs=2, lr=1e-3, optimizer="adam", data=None, batch_size=16, model=None, **kwargs):
    model = model or network(dims)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    loader = DataLoader(Dataset(data or samples(dims)), batch_size=batch_size, shuffle=False)
    if issubclass(cls, MultiscaleSupervisedTrainer):
        kwargs.setdefault("budget", "steps")  # these tests count iterations: the run's own, unless one sets a budget
    return cls(
        device="cpu", max_epochs=epochs, train_data_loader=loader, network=model, optimizer=opt,
        loss_function=torch.nn.MSELoss(), **kwargs,
    )  # fmt: skip


def run(trainer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    return trainer


def test_single_reproduces_supervised_trainer_exactly() -> None:
    a = run(make(SupervisedTrainer))
    b = run(make(MultiscaleSupervisedTrainer, strategy="single"))
    for p, q in zip(a.network.parameters(), b.network.parameters()):
        assert torch.equal(p, q)
    assert b.cost.steps == 4 and b.cost.saving == 1.0


@pytest.mark.parametrize("dims", [2, 3])
def test_shared_batch_mge_gradient_equals_supervised_trainer_gradient(dims: int) -> None:
    data = samples(dims, n=8, size=16)
    ref = make(SupervisedTrainer, dims=dims, epochs=1, optimizer="sgd", lr=1.0, data=data, batch_size=8)
    ours = make(
        MultiscaleSupervisedTrainer, dims=dims, epochs=1, optimizer="sgd", lr=1.0, data=data, batch_size=8,
        strategy="mge", levels=2, batch_sizes=[8, 8, 8],
    )  # fmt: skip
    before = [p.detach().clone() for p in ref.network.parameters()]
    ref.state.epoch_length = ours.state.epoch_length = 1
    run(ref)
    run(ours)
    delta_ref = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(ref.network.parameters(), before)])
    delta_ours = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(ours.network.parameters(), before)])
    assert ((delta_ours - delta_ref).norm() / delta_ref.norm()).item() < 1e-5


@torch.no_grad()
def fine_psnr(model, data) -> float:
    model.eval()
    image = torch.stack([d["image"] for d in data])
    label = torch.stack([d["label"] for d in data])
    return PSNRMetric(max_val=1.0)(model(image), label).mean().item()


@pytest.mark.parametrize("strategy", ["mge", "full-multiscale"])
def test_stock_script_with_the_class_swapped_improves_fine_psnr(strategy: str) -> None:
    test = samples(2, n=8, seed=9)
    trainer = make(MultiscaleSupervisedTrainer, epochs=12, lr=3e-3, strategy=strategy, levels=2)
    before = fine_psnr(trainer.network, test)
    run(trainer)
    after = fine_psnr(trainer.network, test)
    assert after > before + 5, (before, after)
    assert trainer.cost.saving > 1.8


def test_iteration_update_on_an_unmodified_supervised_trainer() -> None:
    iteration = MultiscaleIteration(strategy="mge", levels=1)
    trainer = make(SupervisedTrainer, iteration_update=iteration)
    iteration.attach(trainer)
    run(trainer)
    assert iteration.cost.steps == 4 and trainer.state.mge_cost["steps"] == 4


def test_event_order_output_contents_and_decollation() -> None:
    trainer = make(MultiscaleSupervisedTrainer, strategy="full-multiscale", levels=1, epochs=3)
    events, outputs = [], []
    for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
                  IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED):  # fmt: skip
        trainer.add_event_handler(event, lambda engine, e=event: events.append(e))

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine) -> None:
        outputs.append(engine.state.output)

    run(trainer)
    assert events[:4] == [
        IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED,
    ]  # fmt: skip
    assert len(events) == 4 * 6
    for output in outputs:
        assert isinstance(output, list)  # decollated per sample
        for item in output:
            assert all(value is not None for value in item.values())
            assert {"image", "label", "pred", "loss", "mge_level", "mge_saving"} <= set(item)
    # Stage 0 (level 1): 16 samples at 16 px; stage 1 (level 0): term 0 has 4 samples at 32 px.
    assert len(outputs[0]) == 16 and outputs[0][0]["pred"].shape[-1] == 16
    assert len(outputs[-1]) == 4 and outputs[-1][0]["pred"].shape[-1] == 32
    assert [o[0]["mge_level"] for o in outputs] == [1, 1, 1, 1, 0, 0]


def test_validation_handler_evaluates_at_the_fine_level() -> None:
    model = network()
    val_loader = DataLoader(Dataset(samples(n=8, seed=4)), batch_size=8)
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=val_loader, network=model,
        key_val_metric={"mse": MeanSquaredError(output_transform=from_engine(["pred", "label"]))},
    )  # fmt: skip
    trainer = make(
        MultiscaleSupervisedTrainer, model=model, strategy="full-multiscale", epochs=8, lr=3e-3,
        train_handlers=[ValidationHandler(validator=evaluator, interval=1)],
    )  # fmt: skip
    history = []
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: history.append(engine.state.metrics["mse"]))
    run(trainer)
    assert len(history) == 8 and history[-1] < 0.5 * history[0]
    assert evaluator.state.output[0]["pred"].shape[-1] == 32


def test_checkpoint_and_resume_match_an_uninterrupted_run(tmp_path) -> None:
    kwargs = dict(strategy="full-multiscale", levels=2, iterations=16, epochs=8)
    full = run(make(MultiscaleSupervisedTrainer, **kwargs))

    first = make(MultiscaleSupervisedTrainer, **kwargs)
    saver = CheckpointSaver(
        save_dir=str(tmp_path), save_dict={"net": first.network, "opt": first.optimizer, "trainer": first},
        save_interval=1, n_saved=None,
    )  # fmt: skip
    saver.attach(first)

    @first.on(Events.EPOCH_COMPLETED(once=3))
    def interrupt(engine) -> None:
        engine.terminate()

    run(first)
    checkpoint = sorted(tmp_path.glob("*epoch=3.pt"))[0]
    resumed = make(MultiscaleSupervisedTrainer, **kwargs)
    CheckpointLoader(
        load_path=str(checkpoint), load_dict={"net": resumed.network, "opt": resumed.optimizer, "trainer": resumed}
    ).attach(resumed)
    levels = []

    @resumed.on(Events.ITERATION_COMPLETED)
    def level(engine) -> None:
        levels.append(engine.state.output[0]["mge_level"])

    run(resumed)
    # 16 iterations split 9/5/2 over levels 2, 1, 0; the resumed run starts at iteration 7 (index 6).
    assert levels == [2, 2, 2, 1, 1, 1, 1, 1, 0, 0]
    assert resumed.cost.steps == full.cost.steps == 16
    for p, q in zip(full.network.parameters(), resumed.network.parameters()):
        assert torch.equal(p, q)


def test_stats_lr_schedule_and_train_metric_handlers_work() -> None:
    import logging

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("mge_stats")
    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())

    from monai.handlers import LrScheduleHandler, StatsHandler

    model = network()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=3, train_data_loader=DataLoader(Dataset(samples()), batch_size=16), network=model,
        optimizer=optimizer, loss_function=torch.nn.MSELoss(), strategy="full-multiscale", levels=1,
        key_train_metric={"train_mse": MeanSquaredError(output_transform=from_engine(["pred", "label"]))},
        train_handlers=[
            StatsHandler(name="mge_stats", tag_name="loss", output_transform=from_engine(["loss"], first=True)),
            LrScheduleHandler(lr_scheduler=scheduler, print_lr=False),
        ],
    )  # fmt: skip
    run(trainer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**3)  # stepped once per epoch
    assert 0 < trainer.state.metrics["train_mse"] < 1
    assert any("loss" in message for message in records)


def test_fused_passes_give_the_unfused_update_for_fewer_flops() -> None:
    data = samples(2, n=16, size=16)
    trainers = []
    for fused in (False, True):
        trainer = make(MultiscaleSupervisedTrainer, epochs=1, optimizer="sgd", lr=1.0, data=data, batch_size=16,
                       strategy="mge", levels=2, fused=fused)  # fmt: skip
        trainer.state.epoch_length = 1
        trainers.append(run(trainer))
    before = [p.detach() for p in network().parameters()]
    deltas = [
        torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(t.network.parameters(), before)]) for t in trainers
    ]
    assert ((deltas[1] - deltas[0]).norm() / deltas[0].norm()).item() < 1e-5
    unfused, fused = (t.cost.flops for t in trainers)
    f = trainers[1].cost.flops_per_sample  # terms (4, 8, 16): fused skips 4 samples at level 1 and 8 at level 2
    assert unfused - fused == pytest.approx(4 * f[1] + 8 * f[2], rel=1e-6)


def test_fused_passes_take_metatensors_loaded_from_files(tmp_path) -> None:
    pytest.importorskip("nibabel")
    from mge_monai.data import write_synthetic_volumes
    from monai.transforms import Compose, CopyItemsd, EnsureChannelFirstd, LoadImaged

    files = write_synthetic_volumes(tmp_path, count=4, size=16, dims=2)
    load = Compose(
        [LoadImaged(keys="label"), EnsureChannelFirstd(keys="label"), CopyItemsd(keys="label", names="image")]
    )
    data = [load({"label": str(f)}) for f in files] * 4  # MetaTensors whose per-sample metadata slicing checks
    options = {"strategy": "mge", "levels": 1, "fused": True, "noise_sigma": 0.1}
    trainer = make(MultiscaleSupervisedTrainer, epochs=1, data=data, **options)
    assert type(data[0]["label"]).__name__ == "MetaTensor"
    assert run(trainer).cost.steps == 1 and trainer.multiscale.multiscale.fused


def test_fused_passes_draw_the_noise_once_and_refuse_dropout() -> None:
    trainer = run(make(MultiscaleSupervisedTrainer, epochs=1, strategy="mge", levels=1, noise_sigma=0.1, fused=True))
    assert trainer.cost.steps == 2 and trainer.multiscale.multiscale.fused
    torch.manual_seed(0)
    dropout = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 16), strides=(2,), dropout=0.5)
    trainer = make(MultiscaleSupervisedTrainer, epochs=1, strategy="mge", levels=1, fused=True, model=dropout)
    with pytest.raises(ValueError, match="depends on the samples only"):
        trainer.run()


def test_early_stopping_waits_for_the_fine_stage_where_monais_handler_stops_in_a_coarse_one() -> None:
    from mge_monai import FineStageEarlyStopHandler
    from monai.handlers import EarlyStopHandler

    epochs_run = []
    for handler in (EarlyStopHandler, FineStageEarlyStopHandler):
        trainer = make(
            MultiscaleSupervisedTrainer, epochs=12, lr=0.0, batch_size=16, strategy="full-multiscale", levels=1
        )
        handler(patience=2, score_function=lambda engine: 1.0, trainer=trainer).attach(trainer)  # never improves
        run(trainer)
        epochs_run.append(trainer.state.epoch)
    fine = trainer.multiscale.multiscale.strategy.schedule.stages[-1]
    assert (fine.start, trainer.state.epoch_length) == (16, 2)  # the fine stage begins in epoch 9
    # MONAI's handler stops after 3 epochs (the first sets the best score, 2 more without gain);
    # the fine-stage one lets epochs 1-8 pass, then counts the same 3 from epoch 9.
    assert epochs_run == [3, 8 + 3]


def test_the_passes_run_on_plain_tensors_and_the_output_keeps_the_metadata() -> None:
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0]))
    plain = samples(n=16, size=16)
    meta = [{k: MetaTensor(v, affine=affine) for k, v in s.items()} for s in plain]
    seen: list[type] = []
    trained = []
    for data in (plain, meta):
        model = network()
        model.register_forward_pre_hook(lambda module, args: seen.append(type(args[0])))
        trainer = make(
            MultiscaleSupervisedTrainer, epochs=1, data=data, model=model, strategy="mge", levels=1, decollate=False
        )
        outputs: list = []
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED, lambda engine, kept=outputs: kept.append(engine.state.output)
        )
        run(trainer)
        trained.append([p.detach().clone() for p in model.parameters()])
    assert seen and all(t is torch.Tensor for t in seen)  # no pass ran on a MetaTensor
    for p, q in zip(*trained, strict=True):  # the same training, metadata or not
        assert torch.equal(p, q)
    output = outputs[-1]
    for key in ("image", "label", "pred"):
        assert isinstance(output[key], MetaTensor), key
        assert torch.equal(output[key].affine[0], affine.double()), key  # per-sample, from the loaded batch
    assert output["pred"].shape[0] == output["image"].shape[0] < 16  # term 0's samples, not the batch
