"""``coarse_operator``: the operator's scale restricted with the image, or kept per pixel on coarse levels."""

from __future__ import annotations

import pytest
import torch

dinv = pytest.importorskip("deepinv")

from deepinv.physics.functional.blur import gaussian_blur  # noqa: E402
from mge_deepinv import (  # noqa: E402
    BlockMaskGenerator,
    LevelPoser,
    MultiscaleTrainer,
    coarsen_physics,
    register_coarsening,
)
from mge_deepinv.physics import CoarsePhysicsCache  # noqa: E402

from mge_plugins import restrict  # noqa: E402


def _blur() -> dinv.physics.Blur:
    return dinv.physics.Blur(gaussian_blur(sigma=(1.5, 1.5)), padding="circular")


def _blur_fft(side: int = 32) -> dinv.physics.BlurFFT:
    return dinv.physics.BlurFFT(img_size=(1, side, side), filter=gaussian_blur(sigma=(1.5, 1.5)))


def _sr(side: int = 32) -> dinv.physics.Downsampling:
    return dinv.physics.Downsampling(img_size=(1, side, side), factor=2, filter="bicubic", padding="circular")


@pytest.mark.parametrize("make", [_blur, _blur_fft, _sr], ids=["blur", "blur-fft", "downsampling"])
def test_kept_operator_is_the_fine_operator_on_the_coarse_grid(make) -> None:
    # The same kernel in pixels of the level: the operator built for a 16 px image from the fine kernel.
    fine, level, z = make(), 1, torch.rand(2, 1, 16, 16)
    kept = coarsen_physics(fine, level, operator="keep")
    assert torch.equal(kept.filter, fine.filter)
    same_at_16 = make(16) if make is not _blur else make()
    torch.testing.assert_close(kept.A(z), same_at_16.A(z), rtol=1e-6, atol=1e-6)
    # Negative control: the restricted operator (a kernel about half as wide) is far from it.
    restricted = coarsen_physics(fine, level)
    assert float((restricted.A(z) - kept.A(z)).norm() / kept.A(z).norm()) > 0.02


def test_operators_without_a_kept_recipe_are_restricted() -> None:
    fine = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    x = torch.rand(2, 1, 32, 32)
    torch.manual_seed(0)
    kept = coarsen_physics(fine, 1, operator="keep").A(restrict(x, 1))
    torch.manual_seed(0)
    restricted = coarsen_physics(fine, 1).A(restrict(x, 1))
    assert torch.equal(kept, restricted)


def _constant_on_blocks(mask: torch.Tensor, block: int) -> bool:
    h, w = mask.shape[-2:]
    tiles = mask.reshape(*mask.shape[:-2], h // block, block, w // block, block)
    return torch.equal(tiles, tiles[..., :1, :, :1].expand_as(tiles))


def test_kept_inpainting_masks_keep_their_block_size_per_pixel() -> None:
    # Per-sample masks of 8 px blocks: the kept level-1 mask is a 32 px window of each (8 px blocks,
    # still 0/1), where the restricted one has 4 px blocks.
    generator = BlockMaskGenerator((1, 64, 64), split_ratio=0.7, block=8, rng=torch.Generator().manual_seed(0))
    masks = generator.step(3)["mask"]
    fine = dinv.physics.Inpainting(img_size=(1, 64, 64), mask=masks)
    kept, restricted = coarsen_physics(fine, 1, operator="keep"), coarsen_physics(fine, 1)
    assert torch.equal(kept.mask, masks[..., :32, :32])
    assert _constant_on_blocks(kept.mask, 8) and not _constant_on_blocks(restricted.mask, 8)
    assert _constant_on_blocks(restricted.mask, 4)
    x = torch.rand(3, 1, 32, 32)
    assert torch.equal(kept.A(x), x * masks[..., :32, :32])


def test_the_fine_kernel_is_copied_not_shared() -> None:
    fine = _blur()
    before = fine.filter.clone()
    kept = coarsen_physics(fine, 1, operator="keep")
    kept.filter.mul_(0)
    assert torch.equal(fine.filter, before)


def test_unknown_operator_mode_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"operator must be one of \('restrict', 'keep'\), got 'same'"):
        coarsen_physics(_blur(), 1, operator="same")
    with pytest.raises(ValueError, match=r"coarse_operator must be one of \('restrict', 'keep'\)"):
        LevelPoser(coarse_operator="same")
    with pytest.raises(ValueError, match="operator must be one of"):
        register_coarsening(dinv.physics.Blur, operator="same")


def test_a_registered_kept_recipe_is_used_only_when_asked_for() -> None:
    class WideBlur(dinv.physics.Blur):
        pass

    calls: list[str] = []

    @register_coarsening(WideBlur, operator="keep")
    def _kept(physics, level, noise_model):
        calls.append("keep")
        return dinv.physics.Blur(physics.filter, padding=physics.padding, noise_model=noise_model)

    fine = WideBlur(gaussian_blur(sigma=(1.5, 1.5)), padding="circular")
    coarsen_physics(fine, 1, operator="keep")
    coarsen_physics(fine, 1)  # the inherited restrict recipe of Blur
    assert calls == ["keep"]


def test_the_cache_keeps_one_entry_per_operator_mode() -> None:
    cache, fine = CoarsePhysicsCache(), _blur()
    kept, restricted = cache(fine, 1, operator="keep"), cache(fine, 1)
    assert kept is not restricted and cache(fine, 1, operator="keep") is kept
    assert torch.equal(kept.filter, fine.filter) and not torch.equal(restricted.filter, fine.filter)


def test_the_trainer_poses_coarse_levels_with_the_kept_kernel() -> None:
    model = dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None)
    fine = _blur()
    loader = torch.utils.data.DataLoader(torch.rand(4, 1, 16, 16), batch_size=4)
    for mode in ("keep", "restrict", None):  # None: the default, which keeps the kernel
        trainer = MultiscaleTrainer(
            model=model, physics=fine, optimizer=torch.optim.Adam(model.parameters()), train_dataloader=loader,
            epochs=1, online_measurements=True, save_path=None, verbose=False, show_progress_bar=False,
            non_blocking_transfers=False, **({} if mode is None else {"coarse_operator": mode}),
        )  # fmt: skip
        x = torch.rand(2, 1, 16, 16)
        posed = trainer.poser.pose(x, fine.A(x), fine, 1, "physics")
        assert torch.equal(posed.physics.filter, fine.filter) == (mode != "restrict")
        torch.testing.assert_close(posed.y, posed.physics.A(restrict(x, 1)))


def test_a_kept_kernel_larger_than_the_level_names_the_fix() -> None:
    psf = torch.zeros(1, 1, 31, 31)
    psf[..., 15, :] = 1 / 31
    fine = dinv.physics.Blur(psf, padding="valid")
    x = torch.rand(1, 1, 64, 64)
    poser = LevelPoser("physics")
    with pytest.raises(
        ValueError, match=r"coarse_operator='keep' poses level 2 \(16x16 px\) .* use coarse_operator='restrict'"
    ):
        poser.pose(x, None, fine, 2, "physics")
    assert LevelPoser("physics", coarse_operator="restrict").pose(x, None, fine, 2, "physics").y.shape[-1] > 0
