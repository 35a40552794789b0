from __future__ import annotations

import re
import warnings

import pytest
import torch

dinv = pytest.importorskip("deepinv")

from mge_deepinv import MultiscaleTrainer  # noqa: E402

from .conftest import make_trainer, small_model, smooth_images  # noqa: E402


def train(trainer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer.train()


@torch.no_grad()
def fine_psnr(model, images, sigma=0.1, seed=5) -> float:
    g = torch.Generator().manual_seed(seed)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma))
    y = images + sigma * torch.randn(images.shape, generator=g)
    model.eval()
    return dinv.metric.PSNR()(model(y, physics), images).mean().item()


def test_single_strategy_reproduces_deepinv_trainer_exactly() -> None:
    reference_trainer = make_trainer(dinv.Trainer)
    trainer = make_trainer(MultiscaleTrainer, strategy="single")
    torch.manual_seed(1)
    reference = train(reference_trainer)
    torch.manual_seed(1)
    ours = train(trainer)
    for a, b in zip(reference.parameters(), ours.parameters()):
        assert torch.equal(a, b)
    assert trainer.cost.steps == 8 and trainer.cost.saving == 1.0


def test_mge_with_one_shared_batch_equals_the_fine_gradient() -> None:
    # Every term on the same 16 samples, restrict mode: the telescoping sum collapses to the
    # fine-level gradient deepinv computes, so one SGD step gives the same weights.
    kwargs = dict(epochs=1, max_batch_steps=0, optimizer=None)
    model_a, model_b = small_model(), small_model()
    model_b.load_state_dict(model_a.state_dict())
    ref = make_trainer(
        dinv.Trainer,
        model=model_a,
        optimizer=torch.optim.SGD(model_a.parameters(), lr=1.0),
        **{k: v for k, v in kwargs.items() if k != "optimizer"},
    )
    ours = make_trainer(
        MultiscaleTrainer, model=model_b, optimizer=torch.optim.SGD(model_b.parameters(), lr=1.0),
        strategy="mge", levels=2, batch_sizes=[16, 16, 16], coarse_mode="restrict", epochs=1, max_batch_steps=0,
    )  # fmt: skip
    before = [p.detach().clone() for p in model_a.parameters()]
    torch.manual_seed(1)
    train(ref)
    torch.manual_seed(1)
    train(ours)
    for p0, a, b in zip(before, model_a.parameters(), model_b.parameters()):
        step_a, step_b = a.detach() - p0, b.detach() - p0
        assert (step_a - step_b).norm() <= 1e-5 * step_a.norm() + 1e-9
    assert ours.cost.steps == 1


# 24 iterations of 16 samples; Full-Multiscale splits them 14/7/3: 14 * 1 + 7 * 3.5 + 3 * 8.5 = 64 units.
@pytest.mark.parametrize("strategy, saving", [("mge", 16 / 8.5), ("full-multiscale", 384 / 64)])
def test_multiscale_training_improves_fine_psnr(strategy: str, saving: float) -> None:
    images = smooth_images(64, 32, seed=0)
    test_images = smooth_images(16, 32, seed=1)
    trainer = make_trainer(MultiscaleTrainer, images=images, strategy=strategy, levels=2, epochs=6, lr=3e-3)
    before = fine_psnr(trainer.model, test_images)
    model = train(trainer)
    after = fine_psnr(model, test_images)
    assert after > before + 3.0, (before, after)
    # Derived terms (4, 8, 16) from loaded batches of 16 cost 4 * 1.25 + 8 * 0.3125 + 1 = 8.5 fine samples.
    assert trainer.cost.saving == pytest.approx(saving)


def test_full_multiscale_stages_follow_the_global_iteration() -> None:
    trainer = make_trainer(MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=7)
    levels = []
    original = trainer.compute_loss

    def spy(physics, x, y, train=True, epoch=None, step=False):
        out = original(physics, x, y, train=train, epoch=epoch, step=step)
        if train:
            levels.append(out[2]["mge_level"])
        return out

    trainer.compute_loss = spy
    train(trainer)
    # 28 iterations split 16/8/4 over levels 2, 1, 0.
    assert levels == [2] * 16 + [1] * 8 + [0] * 4
    assert trainer.built_strategy.plan(0).batch_sizes == (16,)
    assert trainer.built_strategy.plan(20).batch_sizes == (8, 16)
    assert trainer.built_strategy.plan(27).batch_sizes == (4, 8, 16)


def test_per_sample_blur_from_a_generator() -> None:
    from deepinv.physics.generator import MotionBlurGenerator

    physics = dinv.physics.Blur(padding="circular", filter=torch.ones(1, 1, 3, 3) / 9)
    generator = MotionBlurGenerator((9, 9), rng=torch.Generator().manual_seed(0))
    trainer = make_trainer(
        MultiscaleTrainer, physics=physics, physics_generator=generator, strategy="mge", levels=1, epochs=1
    )
    train(trainer)
    assert trainer.cost.steps == 4
    assert physics.filter.shape[0] == 16  # deepinv updated its own operator; ours were copies


def test_offline_pairs_use_restrict_mode() -> None:
    x = smooth_images(32, 32)
    y = x + 0.1 * torch.randn_like(x)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    model = small_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = MultiscaleTrainer(
            model=model, physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
            optimizer=torch.optim.Adam(model.parameters(), 1e-3), train_dataloader=loader, epochs=1,
            save_path=None, verbose=False, show_progress_bar=False, device="cpu", strategy="mge", levels=1,
        )  # fmt: skip
    train(trainer)
    assert trainer.poser.mode_for(trainer.physics[0], has_x=True, online=False) == "restrict"


# pytest.warns re-emits deepinv's deprecation of the bare-tensor samples of conftest's datasets
@pytest.mark.filterwarnings("ignore:The tuple format for dataset outputs is deprecated:DeprecationWarning")
def test_operator_without_recipe_falls_back_once_or_raises_in_physics_mode() -> None:
    class Scale(dinv.physics.LinearPhysics):
        def __init__(self) -> None:
            super().__init__(A=lambda x: 0.5 * x, A_adjoint=lambda y: 0.5 * y)

    trainer = make_trainer(MultiscaleTrainer, physics=Scale(), strategy="mge", levels=1, epochs=1)
    with pytest.warns(
        UserWarning, match="no coarse recipe for Scale.*Falling back to coarse_mode='restrict'"
    ) as record:
        trainer.train()
    assert sum("no coarse recipe" in str(w.message) for w in record) == 1
    strict = make_trainer(MultiscaleTrainer, physics=Scale(), strategy="mge", levels=1, coarse_mode="physics")
    with pytest.raises(TypeError, match="no coarse recipe for Scale"):
        train(strict)


def test_splitting_loss_is_refused_with_the_fix() -> None:
    trainer = make_trainer(MultiscaleTrainer, strategy="mge", losses=dinv.loss.SplittingLoss())
    with pytest.raises(ValueError, match=r"SplittingLoss.*strategy='single'"):
        train(trainer)


# pytest.warns re-emits deepinv's deprecation of the bare-tensor samples of conftest's datasets
@pytest.mark.filterwarnings("ignore:The tuple format for dataset outputs is deprecated:DeprecationWarning")
def test_batchnorm_warning_names_the_fix() -> None:
    model = dinv.models.UNet(1, 1, scales=2, batch_norm=True)
    trainer = make_trainer(MultiscaleTrainer, model=model, strategy="mge", levels=1, epochs=1)
    with pytest.warns(UserWarning, match=r"BatchNorm.*UNet\(batch_norm=False\)"):
        trainer.train()


def test_network_that_breaks_at_the_coarsest_level_is_reported_before_training() -> None:
    class ValidConvNet(dinv.models.Reconstructor):
        """An unpadded 9x9 convolution: 32 px images break at level 2 (8 px)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 9), torch.nn.ConvTranspose2d(4, 1, 9))

        def forward(self, y, physics, **kwargs):
            return self.net(y)

    train(make_trainer(MultiscaleTrainer, model=ValidConvNet(), strategy="mge", levels=1, epochs=1))  # 16 px is fine
    trainer = make_trainer(MultiscaleTrainer, model=ValidConvNet(), strategy="mge", levels=2)
    with pytest.raises(
        ValueError, match=r"network fails at level 2 \(input \(8, 8\), fine \(32, 32\)\).*[Kk]ernel size"
    ):
        train(trainer)
    declared = make_trainer(MultiscaleTrainer, model=ValidConvNet(), strategy="mge", levels=2, size_multiple=16)
    with pytest.raises(ValueError, match=r"32 \(axis H\) gives side 8 at level 2.*divisible by 16"):
        train(declared)


def test_loader_too_small_for_explicit_sizes() -> None:
    trainer = make_trainer(MultiscaleTrainer, strategy="mge", levels=2, batch_sizes=[4, 16, 64])
    with pytest.raises(ValueError, match=r"needs 64 samples.*batches hold 16; use DataLoader\(batch_size=64\)"):
        train(trainer)


def test_checkpoint_holds_strategy_and_cost_and_resume_continues(tmp_path) -> None:
    trainer = make_trainer(
        MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=2, save_path=str(tmp_path), ckp_interval=1
    )
    train(trainer)
    checkpoints = sorted(tmp_path.rglob("ckp_1.pth.tar"))
    assert checkpoints
    state = torch.load(checkpoints[0], weights_only=False)
    assert state["multiscale"]["cost"]["steps"] == 8
    assert state["multiscale"]["strategy"]["total_steps"] == 8
    resumed = make_trainer(
        MultiscaleTrainer, strategy="full-multiscale", levels=2, epochs=4, ckpt_pretrained=str(checkpoints[0]),
        save_path=None, iterations=8,
    )  # fmt: skip
    train(resumed)
    assert resumed.cost.steps == 16  # 8 restored + 8 more (epochs 2 and 3)
    assert resumed.built_strategy.plan(8).level == 0


def test_too_few_iterations_for_the_stages_train_fewer_stages_with_one_warning() -> None:
    trainer = make_trainer(MultiscaleTrainer, strategy="full-multiscale", levels=3, epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    fitted = [str(w.message) for w in caught if "instead of the requested" in str(w.message)]
    assert len(fitted) == 1 and re.match(
        r"using levels=2 instead of the requested levels=3: a run of 4 iterations is too short for the 4 stages of "
        r"levels=3 \(.*use at least 8 steps",
        fitted[0],
    ), fitted
    assert [s.level for s in trainer.built_strategy.schedule.stages] == [2, 1, 0] and trainer.cost.steps == 4


@pytest.mark.parametrize("coarse_mode, fine_calls", [("physics", 0), ("restrict", 8)])
def test_physics_mode_never_applies_the_fine_operator(coarse_mode: str, fine_calls: int) -> None:
    physics = dinv.physics.Blur(filter=torch.ones(1, 1, 3, 3) / 9, padding="circular")
    calls = []
    original = physics.A

    def spy(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return original(x, *args, **kwargs)

    physics.A = spy
    trainer = make_trainer(
        MultiscaleTrainer, physics=physics, strategy="full-multiscale", levels=2, epochs=2, coarse_mode=coarse_mode
    )
    train(trainer)
    # Every level builds its own measurement in physics mode; restrict mode needs the fine one per step.
    assert len(calls) == fine_calls and all(shape[0] == 16 for shape in calls)
    assert trainer.cost.steps == 8


def test_fused_passes_give_the_unfused_update_for_fewer_flops() -> None:
    # Restrict mode poses every level from one fine measurement per sample: the level losses
    # depend on the samples only, so the fused estimator is the unfused one, pass for pass fewer.
    models = [small_model(), small_model()]
    models[1].load_state_dict(models[0].state_dict())
    before = [p.detach().clone() for p in models[0].parameters()]
    trainers = [
        make_trainer(
            MultiscaleTrainer,
            model=m,
            optimizer=torch.optim.SGD(m.parameters(), lr=1.0),
            strategy="mge",
            levels=2,
            coarse_mode="restrict",
            epochs=1,
            max_batch_steps=0,
            fused=fused,
        )
        for m, fused in zip(models, (False, True))
    ]
    for trainer in trainers:
        torch.manual_seed(1)
        train(trainer)
    for p0, a, b in zip(before, *(m.parameters() for m in models)):
        step_a, step_b = a.detach() - p0, b.detach() - p0
        assert (step_a - step_b).norm() <= 1e-5 * step_a.norm() + 1e-9
    unfused, fused = (t.cost.flops for t in trainers)
    per_sample = trainers[1].cost.flops_per_sample
    # sizes (4, 8, 16): unfused 4 f0 + 4 f1 + 8 f1 + 8 f2 + 16 f2, fused 4 f0 + 8 f1 + 16 f2
    assert unfused - fused == pytest.approx(4 * per_sample[1] + 8 * per_sample[2])


def test_fused_passes_refuse_coarse_operators_that_draw_their_own_noise() -> None:
    trainer = make_trainer(MultiscaleTrainer, strategy="mge", levels=1, coarse_mode="physics", fused=True, epochs=1)
    with pytest.raises(ValueError, match="depends on the samples only"):
        train(trainer)
