from __future__ import annotations

import re
import warnings

import pytest
import torch

monai = pytest.importorskip("monai")
pytest.importorskip("ignite")

from mge_monai import MultiscaleSupervisedTrainer, RestrictLevel, RestrictLeveld  # noqa: E402
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor  # noqa: E402
from monai.losses import SSIMLoss  # noqa: E402
from monai.networks.nets import UNet  # noqa: E402
from monai.transforms import Compose, RandGaussianNoised  # noqa: E402

from mge_plugins import restrict  # noqa: E402

from .test_engines import make, network, run, samples  # noqa: E402


@pytest.mark.parametrize("dims", [2, 3])
def test_restrict_level_equals_area_pooling_and_updates_the_affine(dims: int) -> None:
    spacing = torch.tensor([0.5, 0.75, 1.0][:dims])
    affine = torch.diag(torch.cat([spacing, torch.ones(1)])).double()
    image = MetaTensor(torch.rand(2, *([16] * dims)), affine=affine)
    out = RestrictLeveld(["image", "label"], level=2)({"image": image, "label": image.clone()})
    for key in ("image", "label"):
        torch.testing.assert_close(out[key].as_tensor(), restrict(image.as_tensor()[None], 2)[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(out[key].affine[:dims, :dims].diagonal(), 4 * spacing.double())
    nearest = RestrictLevel(1, "nearest")(image)
    assert torch.equal(nearest.as_tensor(), image.as_tensor()[(slice(None), *[slice(None, None, 2)] * dims)])


def test_restrict_level_errors() -> None:
    with pytest.raises(ValueError, match="supports method 'area', 'nearest', 'mode', 'keep'"):
        RestrictLevel(1, "antialias")
    with pytest.raises(ValueError, match=r"spatial size 18 \(axis H\).*level 2 cannot be formed.*16 or 20"):
        RestrictLevel(3)(torch.rand(1, 18, 16))


def test_cache_dataset_caches_the_level_transform_and_noise_stays_random() -> None:
    calls = []

    class Counting(RestrictLeveld):
        def __call__(self, data):
            calls.append(1)
            return super().__call__(data)

    data = [{"image": torch.rand(1, 16, 16), "label": torch.rand(1, 16, 16)} for _ in range(4)]
    transform = Compose([Counting(["image", "label"], level=1), RandGaussianNoised(["image"], prob=1.0, std=0.1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = CacheDataset(data, transform, progress=False)
    assert len(calls) == 4  # cached at construction, the random noise after it is not
    first, second = dataset[0]["image"], dataset[0]["image"]
    assert len(calls) == 4 and first.shape[-1] == 8 and not torch.equal(first, second)


def test_network_failing_at_the_coarsest_level_trains_with_fewer_levels_and_one_warning() -> None:
    # Instance norm with a 1-voxel bottleneck at levels 2 and 3 of a 16 px image: level 1 is the deepest that runs.
    torch.manual_seed(0)
    model = UNet(2, 1, 1, channels=(4, 8, 16), strides=(2, 2), num_res_units=0, norm="instance")
    trainer = make(MultiscaleSupervisedTrainer, model=model, data=samples(2, size=16), strategy="mge", levels=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    fitted = [str(w.message) for w in caught if "instead of the requested" in str(w.message)]
    assert len(fitted) == 1, fitted
    assert re.match(
        r"using levels=1 instead of the requested levels=3: the network fails at level 2 \(input \(4, 4\), "
        r"fine \(16, 16\)\)",
        fitted[0],
    ), fitted[0]
    assert trainer.multiscale.built_strategy.coarsest_level == 1 and trainer.cost.steps == 4


def test_network_of_the_wrong_dimension_is_reported_up_front() -> None:
    trainer = make(MultiscaleSupervisedTrainer, model=network(dims=3), data=samples(2), strategy="mge", levels=1)
    with pytest.raises(ValueError, match=r"first convolution .*\(Conv3d\) takes 3D data but the images are 2D"):
        run(trainer)


def ssim_trainer(size: int) -> MultiscaleSupervisedTrainer:
    model = network()
    return MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(Dataset(samples(size=size)), batch_size=16),
        network=model, optimizer=torch.optim.Adam(model.parameters()),
        loss_function=SSIMLoss(spatial_dims=2, win_size=11), strategy="mge", levels=2,
    )  # fmt: skip


def test_ssim_window_larger_than_the_coarsest_level_trains_with_fewer_levels() -> None:
    trainer = ssim_trainer(32)
    with pytest.warns(
        UserWarning,
        match=r"using levels=1 instead of the requested levels=2: SSIMLoss uses a window of 11 px but level 2 "
        r"has sides of 8 px.*win_size <= 8",
    ):
        trainer.run()
    assert trainer.multiscale.built_strategy.coarsest_level == 1


def test_ssim_window_larger_than_the_images_is_refused() -> None:
    with pytest.raises(ValueError, match=r"SSIMLoss uses a window of 11 px but level 0 has sides of 8 px"):
        run(ssim_trainer(8))


def test_loader_too_small_and_gradient_accumulation_are_refused() -> None:
    trainer = make(MultiscaleSupervisedTrainer, strategy="mge", levels=2, batch_sizes=[4, 16, 64])
    with pytest.raises(ValueError, match=r"needs 64 samples.*use DataLoader\(batch_size=64\)"):
        run(trainer)
    with pytest.raises(ValueError, match="accumulation_steps > 1 is not supported"):
        make(MultiscaleSupervisedTrainer, strategy="mge", accumulation_steps=2)
    with pytest.raises(ValueError, match="sets iteration_update itself"):
        make(MultiscaleSupervisedTrainer, iteration_update=lambda engine, batch: None)


def test_batchnorm_warning_names_the_fix() -> None:
    torch.manual_seed(0)
    model = UNet(2, 1, 1, channels=(4, 8), strides=(2,), norm="batch")
    with pytest.warns(UserWarning, match=r"BatchNorm.*norm='instance'"):
        make(MultiscaleSupervisedTrainer, model=model, strategy="mge", levels=1)


def test_missing_ignite_names_the_install_command(monkeypatch) -> None:
    import mge_monai.engines.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "has_ignite", False)
    with pytest.raises(ImportError, match="pip install pytorch-ignite"):
        make(MultiscaleSupervisedTrainer, strategy="mge")
