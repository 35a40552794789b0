"""Stock MONAI pipelines (segmentation, classification) with only the trainer class swapped."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

monai = pytest.importorskip("monai")
pytest.importorskip("ignite")

from ignite.engine import Events  # noqa: E402
from ignite.metrics import Accuracy  # noqa: E402
from mge_monai import LevelPyramidd, MultiscaleSupervisedTrainer, RestrictLeveld  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402
from monai.data import DataLoader, Dataset, MetaTensor, create_test_image_3d  # noqa: E402
from monai.engines import SupervisedTrainer  # noqa: E402
from monai.handlers import from_engine  # noqa: E402
from monai.inferers import SimpleInferer  # noqa: E402
from monai.losses import DiceLoss  # noqa: E402
from monai.metrics import DiceMetric  # noqa: E402
from monai.networks.nets import DenseNet, UNet  # noqa: E402
from monai.transforms import Activationsd, AsDiscreted, Compose  # noqa: E402

from mge_plugins import build_strategy, restrict  # noqa: E402

from .test_engines import make, run, samples  # noqa: E402

FITTED = "instead of the requested"


# --- 3D segmentation: MONAI's modules/engines/unet_training_dict.py, small ---------------------


def segmentation_data(n: int = 16, size: int = 32, seed: int = 0) -> list[dict]:
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        image, seg = create_test_image_3d(
            size, size, size, num_objs=4, rad_max=10, rad_min=4, num_seg_classes=1, random_state=rng
        )
        out.append({"image": torch.as_tensor(image)[None].float(), "label": torch.as_tensor(seg)[None].float()})
    return out


def segmentation_trainer(cls, *, epochs: int = 1, data: list[dict] | None = None, **kwargs):
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(8, 16), strides=(2,), num_res_units=1)
    post = Compose([Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)])
    loader = DataLoader(Dataset(data or segmentation_data()), batch_size=8)
    return cls(
        device="cpu", max_epochs=epochs, train_data_loader=loader,
        network=net, optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=DiceLoss(sigmoid=True),
        inferer=SimpleInferer(), postprocessing=post,
        key_train_metric={"train_acc": Accuracy(output_transform=from_engine(["pred", "label"]))}, amp=True,
        **kwargs,
    )  # fmt: skip


@torch.no_grad()
def fine_dice(model: torch.nn.Module, data: list[dict]) -> float:
    model.eval()
    image = torch.stack([d["image"] for d in data])
    label = torch.stack([d["label"] for d in data])
    pred = (torch.sigmoid(model(image)) > 0.5).float()
    return DiceMetric()(pred, label).mean().item()


def test_stock_segmentation_pipeline_runs_with_the_stock_trainer() -> None:
    trainer = run(segmentation_trainer(SupervisedTrainer))
    assert 0 <= trainer.state.metrics["train_acc"] <= 1


@pytest.mark.parametrize("strategy", ["mge", "full-multiscale"])
def test_segmentation_trains_with_only_the_class_swapped(strategy: str) -> None:
    held_out = segmentation_data(n=4, seed=7)
    trainer = segmentation_trainer(MultiscaleSupervisedTrainer, epochs=8, strategy=strategy, levels=2)
    before = fine_dice(trainer.network, held_out)
    labels = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: labels.append(e.state.output[0]["label"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    after = fine_dice(trainer.network, held_out)
    assert trainer.multiscale.label_rule.rule == "mode"
    assert all(bool(((y == 0) | (y == 1)).all()) for y in labels)  # coarse labels stay binary
    assert {y.shape[-1] for y in labels} >= ({32} if strategy == "mge" else {8, 16, 32})
    assert 0 <= trainer.state.metrics["train_acc"] <= 1
    assert after > before + 0.2 and after > 0.6, (before, after)
    assert trainer.cost.saving > 1.5


def test_area_averaged_labels_are_soft_and_ignite_accuracy_refuses_them() -> None:
    # The control: what "mode" is for (the coarse stage's label reaches the metric).
    trainer = segmentation_trainer(
        MultiscaleSupervisedTrainer, strategy="full-multiscale", levels=1, label_restriction="area"
    )
    with pytest.raises(ValueError, match="For binary cases, y must be comprised of 0's and 1's"):
        run(trainer)


def test_nearest_restriction_of_images_and_labels_gives_contiguous_tensors() -> None:
    trainer = segmentation_trainer(
        MultiscaleSupervisedTrainer, strategy="mge", levels=1, restriction="nearest", label_restriction="nearest"
    )
    run(trainer)  # ignite's Accuracy calls .view on the strided views restrict used to return
    assert trainer.cost.steps == 2


def test_integer_labels_and_a_one_hot_dice_loss_take_the_mode() -> None:
    data = [{"image": d["image"], "label": d["label"].long()} for d in segmentation_data(n=8)]
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16), strides=(2,), num_res_units=1)
    trainer = MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(Dataset(data), batch_size=8), network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_function=DiceLoss(to_onehot_y=True, softmax=True),
        strategy="mge", levels=1,
    )  # fmt: skip
    run(trainer)
    assert trainer.multiscale.label_rule.rule == "mode" and trainer.state.output[0]["label"].dtype == torch.int64


# --- classification: the target has no resolution ----------------------------------------------


def classification_data(n: int = 32, size: int = 32, seed: int = 0, label_shape: tuple = ()) -> list[dict]:
    """A square brighter (class 1) or darker (class 0) than the background, anywhere."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        image = 0.1 * torch.randn(1, size, size, generator=g)
        cls = i % 2
        top = int(torch.randint(0, size - 8, (1,), generator=g))
        left = int(torch.randint(0, size - 8, (1,), generator=g))
        image[:, top : top + 8, left : left + 8] += 1.0 if cls else -1.0
        out.append({"image": image, "label": torch.tensor(cls).reshape(label_shape)})
    return out


def tiny_classifier(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 2),
    )  # fmt: skip


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: list[dict]) -> float:
    model.eval()
    logits = model(torch.stack([d["image"] for d in data]))
    return (logits.argmax(1) == torch.stack([d["label"] for d in data]).reshape(-1)).float().mean().item()


def classifier_trainer(cls, model: torch.nn.Module, *, epochs: int, data: list[dict], loss=None, **kwargs):
    kwargs.setdefault("key_train_metric", {"train_acc": Accuracy(output_transform=from_engine(["pred", "label"]))})
    return cls(
        device="cpu", max_epochs=epochs, train_data_loader=DataLoader(Dataset(data), batch_size=16, shuffle=False),
        network=model, optimizer=torch.optim.Adam(model.parameters(), 1e-2),
        loss_function=loss or torch.nn.CrossEntropyLoss(), **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("strategy", ["mge", "full-multiscale"])
def test_classification_trains_with_only_the_class_swapped(strategy: str) -> None:
    held_out = classification_data(n=32, seed=5)
    trainer = classifier_trainer(
        MultiscaleSupervisedTrainer, tiny_classifier(), epochs=8, data=classification_data(), strategy=strategy
    )
    before = accuracy(trainer.network, held_out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    assert not [w for w in caught if FITTED in str(w.message)]
    assert trainer.multiscale.label_rule.rule == "keep"
    assert trainer.multiscale.built_strategy.coarsest_level == 2  # the network saw 8x8 images
    after = accuracy(trainer.network, held_out)
    assert after >= max(0.9, before + 0.3), (before, after)
    assert trainer.cost.saving > 1.5


def test_classification_labels_of_shape_b1_are_kept_too() -> None:
    data = classification_data(n=16, label_shape=(1,))
    data = [{"image": d["image"], "label": d["label"].float()} for d in data]
    model = torch.nn.Sequential(*list(tiny_classifier())[:-1], torch.nn.Linear(16, 1))
    trainer = classifier_trainer(
        MultiscaleSupervisedTrainer, model, epochs=1, data=data, loss=torch.nn.BCEWithLogitsLoss(), strategy="mge",
        key_train_metric=None,
    )  # fmt: skip
    run(trainer)
    assert trainer.multiscale.label_rule.rule == "keep" and trainer.cost.steps == 1


def test_a_densenet_too_deep_for_the_coarsest_level_trains_with_fewer_levels() -> None:
    # An instance-normed DenseNet reaches 1x1 at level 2 of 32 px images: level 1 is the deepest that runs.
    torch.manual_seed(0)
    model = DenseNet(
        spatial_dims=2, in_channels=1, out_channels=2, init_features=8, growth_rate=4, block_config=(2, 2),
        bn_size=2, norm="instance",
    )  # fmt: skip
    trainer = classifier_trainer(
        MultiscaleSupervisedTrainer, model, epochs=1, data=classification_data(n=16), strategy="mge", levels=2
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    fitted = [str(w.message) for w in caught if FITTED in str(w.message)]
    assert len(fitted) == 1 and re.match(
        r"using levels=1 instead of the requested levels=2: the network fails at level 2 \(input \(8, 8\)", fitted[0]
    ), fitted
    assert trainer.multiscale.built_strategy.coarsest_level == 1


def test_spatial_rules_on_a_class_label_are_refused_naming_keep() -> None:
    trainer = classifier_trainer(
        MultiscaleSupervisedTrainer, tiny_classifier(), epochs=1, data=classification_data(n=16), strategy="mge",
        label_restriction="mode",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"the label has shape \(16,\), not \(B, C, \*spatial\).*use 'keep'"):
        run(trainer)
    with pytest.raises(ValueError, match="unknown label_restriction 'majority'"):
        MultiscaleSupervisedTrainer(
            device="cpu", max_epochs=1, train_data_loader=DataLoader(Dataset(samples()), batch_size=16),
            network=tiny_classifier(), optimizer=torch.optim.SGD(tiny_classifier().parameters(), 0.1),
            loss_function=torch.nn.MSELoss(), label_restriction="majority",
        )  # fmt: skip


def test_label_restriction_from_a_bundle_config() -> None:
    parser = ConfigParser(
        {
            "network": "$torch.nn.Conv2d(1, 1, 3, padding=1)",
            "trainer": {
                "_target_": "mge_monai.MultiscaleSupervisedTrainer",
                "device": "cpu",
                "max_epochs": 1,
                "train_data_loader": "$monai.data.DataLoader([{'image': torch.rand(1, 8, 8)}] * 4, batch_size=4)",
                "network": "@network",
                "optimizer": "$torch.optim.SGD(@network.parameters(), 0.1)",
                "loss_function": "$torch.nn.MSELoss()",
                "strategy": "mge",
                "label_restriction": "keep",
            },
        }
    )
    assert parser.get_parsed_content("trainer").multiscale.label_restriction == "keep"


# --- runs too short, images too small ----------------------------------------------------------


def fitted_warnings(trainer) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    return [str(w.message) for w in caught if FITTED in str(w.message)]


def test_a_run_too_short_for_the_stages_uses_fewer_with_one_warning() -> None:
    trainer = make(MultiscaleSupervisedTrainer, epochs=1, strategy="full-multiscale", levels=3)  # 2 iterations
    fitted = fitted_warnings(trainer)
    assert fitted == [
        "using levels=1 instead of the requested levels=3: a run of 2 iterations is too short for the 3 stages of "
        "levels=2 (total_steps=2 is too few to give each of 3 stages at least one step when halving; use at least 4 "
        "steps, fewer levels, or explicit per-stage iterations). Pass levels=1 to choose this yourself (and silence "
        "this warning), or give the run more iterations or larger images"
    ]
    assert [s.level for s in trainer.multiscale.built_strategy.schedule.stages] == [1, 0]
    assert trainer.cost.steps == 2


def test_images_too_small_for_the_levels_use_fewer_with_one_warning() -> None:
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    trainer = make(MultiscaleSupervisedTrainer, model=model, data=samples(size=12), strategy="mge", levels=3)
    fitted = fitted_warnings(trainer)
    assert len(fitted) == 1 and fitted[0].startswith(
        "using levels=2 instead of the requested levels=3: spatial size 12 (axis H) is not divisible by 2**3 = 8"
    )
    assert trainer.multiscale.built_strategy.coarsest_level == 2


def test_a_built_strategy_is_used_as_given() -> None:
    strategy = build_strategy("mge", levels=3, loaded_batch_size=16)
    trainer = make(MultiscaleSupervisedTrainer, data=samples(size=12), strategy=strategy)
    with pytest.raises(ValueError, match=r"spatial size 12 \(axis H\).*level 3 cannot be formed"):
        run(trainer)


# --- AMP on the CPU: the dtype the network sees -------------------------------------------------


def conv_dtypes(cls, **kwargs) -> set[torch.dtype]:
    trainer = make(cls, epochs=1, amp=True, **kwargs)
    seen: set[torch.dtype] = set()
    first_conv = next(m for m in trainer.network.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    run(trainer)
    return seen


def test_amp_on_the_cpu_runs_float32_like_the_stock_trainer() -> None:
    assert conv_dtypes(SupervisedTrainer) == {torch.float32}
    assert conv_dtypes(MultiscaleSupervisedTrainer, strategy="single") == {torch.float32}
    assert conv_dtypes(MultiscaleSupervisedTrainer, strategy="mge", levels=1) == {torch.float32}
    # The control: the hook sees CPU autocast when it runs (asked for with an explicit dtype).
    bf16 = {"dtype": torch.bfloat16}
    assert conv_dtypes(MultiscaleSupervisedTrainer, strategy="mge", levels=1, amp_kwargs=bf16) == {torch.bfloat16}


# --- the transforms share the rule ------------------------------------------------------------


def test_restrict_leveld_infers_a_rule_per_key() -> None:
    g = torch.Generator().manual_seed(0)
    affine = torch.diag(torch.tensor([0.5, 0.75, 1.0, 1.0])).double()
    image = MetaTensor(torch.rand(1, 8, 8, 8, generator=g), affine=affine)
    sample = {
        "image": image,
        "label": MetaTensor(torch.randint(0, 3, (1, 8, 8, 8), generator=g), affine=affine),
        "mask": (torch.rand(1, 8, 8, 8, generator=g) > 0.5).float(),
        "class": torch.tensor([1]),
    }
    out = RestrictLeveld(["image", "label", "mask", "class"], level=1)(sample)
    torch.testing.assert_close(out["image"].as_tensor(), restrict(image.as_tensor()[None], 1)[0])
    assert out["label"].dtype == torch.int64 and out["label"].shape == (1, 4, 4, 4)
    assert set(out["label"].unique().tolist()) <= {0, 1, 2} and out["label"].is_contiguous()
    torch.testing.assert_close(out["label"].affine, out["image"].affine)  # the same coarser grid
    assert bool(((out["mask"] == 0) | (out["mask"] == 1)).all())
    assert out["class"] is sample["class"]
    per_key = RestrictLeveld(["image", "mask"], level=1, method=["nearest", "area"])(sample)
    assert torch.equal(per_key["image"].as_tensor(), image.as_tensor()[:, ::2, ::2, ::2])
    assert not bool(((per_key["mask"] == 0) | (per_key["mask"] == 1)).all())  # area of a mask: soft
    with pytest.raises(ValueError, match="unknown method 'majority'"):
        RestrictLeveld("label", method="majority")


def test_level_pyramid_of_a_label_stays_a_label() -> None:
    label = (torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    out = LevelPyramidd(["image", "label"], levels=2)({"image": torch.rand(1, 16, 16), "label": label})
    for level in (1, 2):
        coarse = torch.as_tensor(out[f"label_level{level}"])
        assert coarse.shape == (1, 16 // 2**level, 16 // 2**level) and bool(((coarse == 0) | (coarse == 1)).all())
    assert not bool(((out["image_level1"] == 0) | (out["image_level1"] == 1)).all())
