"""deepinv.Trainer features that must keep working under MultiscaleTrainer."""

from __future__ import annotations

import warnings

import pytest
import torch

dinv = pytest.importorskip("deepinv")

from mge_deepinv import MultiscaleTrainer, coarsen_physics  # noqa: E402
from mge_deepinv.training.levels import level_losses  # noqa: E402

from .conftest import CleanImages, make_trainer, small_model, smooth_images  # noqa: E402


def train(trainer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer.train()


def finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_self_supervised_losses_run_at_every_level() -> None:
    physics = dinv.physics.Inpainting(img_size=(1, 32, 32), mask=0.7, noise_model=dinv.physics.GaussianNoise(0.01))
    losses = [dinv.loss.MCLoss(), dinv.loss.EILoss(dinv.transform.Shift())]
    trainer = make_trainer(MultiscaleTrainer, physics=physics, losses=losses, strategy="mge", levels=2, epochs=1)
    seen = []
    original = trainer.model_inference

    def spy(y, physics, x=None, train=True, **kwargs):
        seen.append(tuple(y.shape[-2:]))
        return original(y=y, physics=physics, x=x, train=train, **kwargs)

    trainer.model_inference = spy
    model = train(trainer)
    assert finite(model)
    assert {(32, 32), (16, 16), (8, 8)} <= set(seen)


def test_sure_loss_gets_the_noise_level_of_each_level() -> None:
    sure = dinv.loss.SureGaussianLoss(sigma=0.2)
    fine = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.2))
    (coarse_keep,) = level_losses([sure], coarsen_physics(fine, 2, noise="keep"))
    (coarse_restrict,) = level_losses([sure], coarsen_physics(fine, 2, noise="restrict"))
    assert coarse_keep.sigma2 == pytest.approx(0.04) and coarse_restrict.sigma2 == pytest.approx(0.05**2)
    assert sure.sigma2 == pytest.approx(0.04)  # the user's loss is not modified
    trainer = make_trainer(
        MultiscaleTrainer, physics=fine, losses=sure, strategy="mge", levels=1, epochs=1, coarse_noise="restrict"
    )
    assert finite(train(trainer))


def test_bfloat16_autocast_runs_and_keeps_weights_finite() -> None:
    trainer = make_trainer(MultiscaleTrainer, strategy="mge", levels=2, epochs=1, mixed_precision="bf16")
    assert finite(train(trainer))
    assert trainer.cost.steps == 4


def test_grad_clip_applies_once_to_the_summed_gradient() -> None:
    norms = []
    trainer = make_trainer(MultiscaleTrainer, strategy="mge", levels=2, epochs=1, grad_clip=1e-3, check_grad=True)
    original = trainer.check_clip_grad

    def spy():
        norm = original()
        total = torch.cat([p.grad.reshape(-1) for p in trainer.model.parameters() if p.grad is not None]).norm()
        norms.append(total.item())
        return norm

    trainer.check_clip_grad = spy
    train(trainer)
    assert len(norms) == 4  # once per optimizer step, after all MGE terms
    assert max(norms) == pytest.approx(1e-3, rel=1e-3)


def test_evaluation_early_stopping_and_plots(tmp_path) -> None:
    images = smooth_images(32, 32)
    eval_loader = torch.utils.data.DataLoader(CleanImages(smooth_images(16, 32, seed=3)), batch_size=16)
    trainer = make_trainer(
        MultiscaleTrainer, images=images, strategy="full-multiscale", levels=1, epochs=30, lr=0.0,
        eval_dataloader=eval_loader, early_stop=2, save_path=str(tmp_path), plot_images=True,
    )  # fmt: skip
    train(trainer)
    epochs_run = len(trainer.eval_metrics_history["PSNR"])
    # lr = 0: no improvement, early stopping ends the run; its patience counts from the fine stage,
    # whose first step is 40 (epoch 20 of 2 steps): it stops after 2 more evaluations.
    assert trainer._first_fine_step() == 40 and 20 + 2 < epochs_run < 30
    assert [h["epoch"] for h in trainer.history] == list(range(epochs_run))
    assert list(tmp_path.rglob("ckp_best.pth.tar"))
    assert trainer.history[-1]["steps"] == 2 * epochs_run


def test_early_stopping_counts_from_the_fine_stage_where_deepinv_would_stop_in_a_coarse_one() -> None:
    images = smooth_images(32, 32)
    runs = []
    for cls, options in ((dinv.Trainer, {}), (MultiscaleTrainer, {"strategy": "full-multiscale", "levels": 1})):
        eval_loader = torch.utils.data.DataLoader(CleanImages(smooth_images(16, 32, seed=3)), batch_size=16)
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.0))  # lr = 0, no noise: a constant score
        trainer = make_trainer(
            cls, images=images, physics=physics, epochs=30, lr=0.0, eval_dataloader=eval_loader, early_stop=2,
            **options,
        )  # fmt: skip
        train(trainer)
        runs.append(len(trainer.eval_metrics_history["PSNR"]))
    # The stock trainer stops after epoch 3 (2 evaluations of patience past the best, epoch 0); the
    # multiscale one trains its coarse stage to epoch 20 and then counts the same patience.
    assert runs == [4, 20 + 4]


def test_r2r_loss_reads_each_levels_noise_from_the_physics() -> None:
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    trainer = make_trainer(
        MultiscaleTrainer, physics=physics, losses=dinv.loss.R2RLoss(noise_model=None), strategy="mge", levels=1,
        epochs=1, coarse_noise="restrict",
    )  # fmt: skip
    sigmas = set()
    from deepinv.loss.r2r import R2RModel

    original = R2RModel.get_corruptor

    def spy(self, y):
        sigmas.add(round(float(self.curr_noise_model.sigma), 4))
        return original(self, y)

    R2RModel.get_corruptor = spy
    try:
        model = train(trainer)
    finally:
        R2RModel.get_corruptor = original
    assert finite(model)
    assert sigmas == {0.1, 0.05}  # level 0 and level 1 (sigma / 2 in 2D)


def test_r2r_loss_with_a_fixed_noise_model_is_refused() -> None:
    loss = dinv.loss.R2RLoss(noise_model=dinv.physics.GaussianNoise(0.1))
    trainer = make_trainer(MultiscaleTrainer, losses=loss, strategy="mge")
    with pytest.raises(ValueError, match="build it with noise_model=None"):
        train(trainer)


def test_a_compute_budget_stretches_the_cosine_schedule_and_warns_for_others(capsys) -> None:
    net = small_model()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)
    trainer = make_trainer(MultiscaleTrainer, model=net, optimizer=optimizer, scheduler=cosine, epochs=2,
                           levels=1, budget="compute")  # fmt: skip
    train(trainer)
    assert trainer.epochs > 2 and cosine.T_max == trainer.epochs  # the cosine ends with the extended run
    assert optimizer.param_groups[0]["lr"] < 1e-4  # annealed to the end, not climbing back up
    assert f"T_max follows, 2 -> {trainer.epochs} epochs" in capsys.readouterr().out
    lam = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5**epoch)
    trainer = make_trainer(MultiscaleTrainer, model=net, optimizer=optimizer, scheduler=lam, epochs=2, levels=1,
                           budget="compute")  # fmt: skip
    with pytest.warns(
        UserWarning, match=r"scheduler \(LambdaLR\) was built for the planned run; build it for \d+ epochs"
    ):
        trainer.train()


@pytest.mark.parametrize("log_train_batch", [False, True])
def test_a_budget_that_ends_inside_an_epoch_is_evaluated_there_once(log_train_batch: bool, tmp_path) -> None:
    eval_loader = torch.utils.data.DataLoader(CleanImages(smooth_images(8, 32, seed=3)), batch_size=8)
    trainer = make_trainer(
        MultiscaleTrainer, images=smooth_images(64, 32), batch_size=8, epochs=3, levels=1, budget=0.5,
        eval_dataloader=eval_loader, log_train_batch=log_train_batch, save_path=str(tmp_path),
    )  # fmt: skip
    train(trainer)
    total, batches = trainer.built_strategy.total_steps, 8
    assert total % batches and trainer.cost.steps == total  # the budget's last step falls inside an epoch
    steps = [record["step"] for record in trainer.history]
    assert steps[-1] == total and len(steps) == len(set(steps))  # evaluated at the end, once
    if log_train_batch:  # deepinv evaluates after every batch: once per step, the last one included
        assert steps == list(range(1, total + 1))
    else:  # one evaluation per epoch, the cut one included, as deepinv evaluates whole epochs
        assert steps == [*range(batches, total, batches), total] and len(trainer.loss_history["SupLoss"]) == len(steps)


def test_a_budget_run_resumed_mid_way_ends_as_the_uninterrupted_one(tmp_path) -> None:
    def run(**kwargs) -> MultiscaleTrainer:
        trainer = make_trainer(MultiscaleTrainer, images=smooth_images(32, 32), batch_size=8, epochs=3, levels=1,
                               budget=0.5, ckp_interval=1, **kwargs)  # fmt: skip
        trainer.scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=2)
        train(trainer)
        return trainer

    full = run()
    run(save_path=str(tmp_path))
    resumed = run(ckpt_pretrained=str(sorted(tmp_path.rglob("ckp_1.pth.tar"))[0]))
    # The extended run is 5 epochs however it is started, and the restored StepLR is not stretched twice.
    assert full.epochs == resumed.epochs == 5 and full.scheduler.step_size == resumed.scheduler.step_size == 3
    assert resumed.cost.steps == full.cost.steps == full.built_strategy.total_steps
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("make_scheduler", "planned_end"),
    [
        (lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2), 1e-3 * 0.1**2),  # decays at epochs 2, 4
        (lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 4]), 1e-3 * 0.1**2),
        (lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5), 1e-3 * 0.5**5),
    ],
)
def test_a_compute_budget_stretches_step_and_exponential_schedules_to_the_same_final_rate(
    make_scheduler, planned_end: float, capsys
) -> None:
    net = small_model()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = make_scheduler(optimizer)
    trainer = make_trainer(MultiscaleTrainer, model=net, optimizer=optimizer, scheduler=scheduler, epochs=5,
                           levels=1, budget="compute")  # fmt: skip
    train(trainer)
    assert trainer.epochs > 5 and " follow" in capsys.readouterr().out
    # The stock schedule over the planned 5 epochs ends at planned_end; stretched, so does the extended run.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(planned_end, rel=0.35)


def test_auto_restriction_keeps_the_holes_of_a_pixel_mask_and_averages_otherwise() -> None:
    from mge_deepinv import BlockMaskGenerator

    pixels = dinv.physics.Inpainting((1, 32, 32), mask=0.8, rng=torch.Generator().manual_seed(0))
    blocks = dinv.physics.Inpainting(
        (1, 32, 32), mask=BlockMaskGenerator((1, 32, 32), split_ratio=0.7, block=8).step()["mask"]
    )
    chosen = {}
    for name, physics in (("pixels", pixels), ("blocks", blocks), ("denoising", None)):
        trainer = make_trainer(MultiscaleTrainer, physics=physics, strategy="full-multiscale", levels=2)
        chosen[name] = trainer.restriction
    # A pixel mask averaged over 2x2 blocks becomes an attenuation; 8x8 blocks stay exact to level 3.
    assert chosen == {"pixels": "nearest", "blocks": "area", "denoising": "area"}
    assert make_trainer(MultiscaleTrainer, physics=blocks, levels=4).restriction == "nearest"  # 16 px > 8 px blocks
    assert make_trainer(MultiscaleTrainer, physics=pixels, restriction="area").restriction == "area"  # as given
