"""The bundled inpainting task draws a new block mask per sample; evaluation uses fixed held-out masks."""

from __future__ import annotations

import csv
import io
import itertools
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

dinv = pytest.importorskip("deepinv")

from mge_deepinv import BlockMaskGenerator, MultiscaleTrainer  # noqa: E402
from mge_deepinv.tasks import TASKS  # noqa: E402

from mge_plugins import restrict  # noqa: E402

from .conftest import CleanImages, smooth_images  # noqa: E402


def masks(seed: int, batch_size: int = 8, size: int = 32) -> torch.Tensor:
    return TASKS["inpaint"].generator(size, 1, "cpu", seed).step(batch_size=batch_size)["mask"]


def test_each_sample_gets_its_own_mask_of_8x8_blocks_and_a_seed_repeats_them() -> None:
    batch = masks(seed=0)
    assert batch.shape == (8, 1, 32, 32)
    assert all(not torch.equal(a, b) for a, b in itertools.combinations(batch, 2))
    assert torch.equal(batch, masks(seed=0)) and not torch.equal(batch, masks(seed=1))
    # Blocks of 8x8: the mask is its level-3 restriction enlarged again, so it is exact (0/1) on levels 1 to 3.
    for level in (1, 2, 3):
        coarse = restrict(batch, level)
        assert set(coarse.unique().tolist()) == {0.0, 1.0}
    enlarged = restrict(batch, 3).repeat_interleave(8, -2).repeat_interleave(8, -1)
    assert torch.equal(enlarged, batch)
    assert masks(seed=0, batch_size=512).mean().item() == pytest.approx(0.7, abs=0.01)  # 30 % of blocks missing


def test_block_sizes_that_do_not_divide_the_image_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="multiples of block=8, got \\(1, 36, 36\\); crop the images"):
        BlockMaskGenerator((1, 36, 36), split_ratio=0.7)


def inpainting_trainer(
    *,
    generator_seed: int = 0,
    eval_seed: int | None = None,
    epochs: int = 1,
    evaluate=False,
    coarse_operator: str = "keep",
):
    torch.manual_seed(0)
    physics = TASKS["inpaint"].physics(32, 1, "cpu")
    generator = TASKS["inpaint"].generator(32, 1, "cpu", generator_seed)
    images = smooth_images(n=32)
    loader = torch.utils.data.DataLoader(CleanImages(images), batch_size=16)
    eval_loader = torch.utils.data.DataLoader(CleanImages(smooth_images(n=8, seed=3)), batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None), mode="adjoint")
        return MultiscaleTrainer(
            model=model, physics=physics, physics_generator=generator, optimizer=torch.optim.Adam(model.parameters()),
            train_dataloader=loader, eval_dataloader=eval_loader if evaluate else None, epochs=epochs,
            online_measurements=True, save_path=None, verbose=False, show_progress_bar=False, device="cpu",
            metrics=dinv.metric.PSNR(), strategy="mge", levels=2, eval_seed=eval_seed,
            coarse_operator=coarse_operator,
        )  # fmt: skip


def record_draws(trainer: MultiscaleTrainer) -> list[tuple[bool, torch.Tensor]]:
    """``(in a training step, masks)`` for every draw of the trainer's generator."""
    (generator,) = [trainer.physics_generator]
    draws: list[tuple[bool, torch.Tensor]] = []
    step = generator.step

    def spy(*args, **kwargs):
        params = step(*args, **kwargs)
        draws.append((trainer._in_train_step, params["mask"].clone()))
        return params

    generator.step = spy
    return draws


@pytest.mark.parametrize("coarse_operator", ["keep", "restrict"])
def test_every_term_gets_its_samples_masks_and_each_coarse_mask_is_their_restriction(coarse_operator: str) -> None:
    # Kept (the default): each sample's mask windowed to the level's size, its 8 px holes kept; restricted:
    # each sample's mask restricted, exact for 8x8 blocks (4 px holes at level 1).
    trainer = inpainting_trainer(coarse_operator=coarse_operator)
    draws = record_draws(trainer)
    posed: list[tuple[torch.Tensor, int, torch.Tensor]] = []
    pose = trainer.poser.pose

    def spy(x, y, physics, level, mode):
        out = pose(x, y, physics, level, mode)
        posed.append((physics.mask.clone(), level, out.physics.mask.clone()))
        return out

    trainer.poser.pose = spy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    assert trainer.poser.mode_for(trainer.physics[0], has_x=True, online=True) == "physics"
    assert len(draws) == 2 and all(train for train, _ in draws)  # one draw of 16 masks per training batch
    last = draws[-1][1]
    step_poses = posed[-5:]  # the last step: terms (4, 8, 16) pose levels 0, 1 | 1, 2 | 2
    assert [(m.shape[0], level) for m, level, _ in step_poses] == [(4, 0), (4, 1), (8, 1), (8, 2), (16, 2)]
    for fine, level, coarse in step_poses:
        assert torch.equal(fine, last[: fine.shape[0]])  # the term's own samples' masks (nested terms)
        side = fine.shape[-1] // 2**level
        expected = fine[..., :side, :side] if coarse_operator == "keep" else restrict(fine, level)
        assert torch.equal(coarse, expected)
        assert set(coarse.unique().tolist()) <= {0.0, 1.0}


def test_evaluations_use_fixed_held_out_masks_and_leave_the_training_masks_alone() -> None:
    trainer = inpainting_trainer(eval_seed=5, epochs=2, evaluate=True)
    draws = record_draws(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    evaluations = [m for train, m in draws if not train]
    assert len(evaluations) == 4  # 2 evaluations of 2 batches of 4
    assert torch.equal(evaluations[0], evaluations[2]) and torch.equal(evaluations[1], evaluations[3])
    assert not torch.equal(evaluations[0], evaluations[1])  # the stream goes on within an evaluation
    plain = inpainting_trainer(epochs=2)
    plain_draws = record_draws(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain.train()
    training = [m for train, m in draws if train]
    assert len(training) == 4 and all(torch.equal(a, b) for (_, a), b in zip(plain_draws, training))


def test_without_eval_seed_evaluations_draw_from_the_training_stream_as_deepinv_does() -> None:
    trainer = inpainting_trainer(eval_seed=None, epochs=2, evaluate=True)
    draws = record_draws(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    evaluations = [m for train, m in draws if not train]
    assert not torch.equal(evaluations[0], evaluations[2])  # the control: the masks change between evaluations


def test_mge_train_inpaint_curves_end_on_the_tables_figures(tmp_path: Path) -> None:
    """The table's held-out masks are those of the evaluations during training."""
    from mge_deepinv.cli import main

    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        main(["inpaint", "--steps", "4", "--evals", "2", "--size", "32", "--batch-size", "16", "--no-baseline",
              "--out", str(tmp_path)])  # fmt: skip
    (run,) = (tmp_path / "inpaint").iterdir()
    (row,) = csv.DictReader(open(run / "summary.csv"))
    history = list(csv.DictReader(open(run / "history.csv")))
    assert float(history[-1]["PSNR"]) == pytest.approx(float(row["psnr"]), abs=1e-3)
    assert float(history[-1]["SSIM"]) == pytest.approx(float(row["ssim"]), abs=1e-4)


def test_a_terms_operator_is_a_copy_with_its_own_generators_as_physics_clone_makes() -> None:
    from mge_deepinv.training.levels import copy_physics, slice_physics

    physics = TASKS["inpaint"].physics(32, 1, "cpu")
    physics.noise_model.rng = torch.Generator().manual_seed(3)
    batch = masks(seed=0)
    sliced = slice_physics(physics, {"mask": batch}, slice(0, 2), 8)
    assert torch.equal(sliced.mask, batch[:2]) and physics.mask.shape == (1, 1, 32, 32)  # the original untouched
    assert sliced.noise_model.rng is not physics.noise_model.rng
    assert torch.equal(sliced.noise_model.rng.get_state(), physics.noise_model.rng.get_state())
    reference = physics.clone()
    copied = copy_physics(physics)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(copied(x), reference(x))  # the same operator and the same noise draw

    class Holder:  # a generator deeper than a module's attributes: deepinv's clone takes over
        def __init__(self) -> None:
            self.rng = torch.Generator().manual_seed(1)

    physics.holder = Holder()
    assert copy_physics(physics).holder.rng is not physics.holder.rng


def test_mge_train_inpaint_refuses_a_crop_side_that_is_not_a_multiple_of_the_blocks(tmp_path: Path, capsys) -> None:
    from mge_deepinv.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["inpaint", "--size", "36", "--out", str(tmp_path / "results")])  # 36 passes 2**levels = 4
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "mge-train: error: --size 36 is not divisible by 8, which inpaint needs (its masks are made of 8x8 blocks); "
        "use e.g. --size 32"
    )
    assert not (tmp_path / "results").exists()
