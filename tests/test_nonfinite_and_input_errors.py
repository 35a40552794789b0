"""Hostile inputs at every entry point: non-finite losses and gradients, and bad data or settings.

Non-finite values are injected at one chosen evaluation of a step (``mge="mge"``, 2 levels, per-term
batches 2, 4, 8): the level losses are evaluated in the order term 0 at levels 0 and 1, term 1 at
levels 1 and 2, term 2 at level 2. Every row checks the message and that the weights and the
optimizer state are bit for bit as before the step.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from mge_plugins import MGEConfig, NonFiniteError, mge_step, restrict
from mge_plugins.nonfinite import NonFinitePolicy, NonFiniteStepWarning

dinv = pytest.importorskip("deepinv")
monai = pytest.importorskip("monai")
pytest.importorskip("ignite")
nib = pytest.importorskip("nibabel")

from mge_deepinv import MultiscaleTrainer  # noqa: E402
from mge_deepinv.data import folder_images  # noqa: E402
from mge_monai import MultiscaleSupervisedTrainer  # noqa: E402
from mge_monai.data import nifti_files, write_synthetic_volumes  # noqa: E402
from monai.data import DataLoader as MonaiLoader  # noqa: E402
from monai.data import Dataset as MonaiDataset  # noqa: E402
from PIL import Image  # noqa: E402

SIZE, BATCH = 16, 8
ORDER = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]  # (term, level) of each level-loss evaluation in a step


class Injector:
    """A value transform that makes the ``at``-th level evaluation of a step non-finite.

    ``kind="loss"`` turns that evaluation's loss into NaN; ``kind="gradient"`` keeps it finite
    but adds ``sqrt(|p - p.detach()|)``, which is 0 with a NaN gradient. Single-sample
    evaluations (the hosts' one-sample FLOP probe) are not counted.
    """

    def __init__(self, at: int | None, kind: str = "loss") -> None:
        self.at, self.kind, self.calls = at, kind, 0

    def __call__(self, pred: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        if pred.shape[0] < 2:
            return loss
        hit = self.calls == self.at
        self.calls += 1
        if not hit:
            return loss
        if self.kind == "loss":
            return loss * float("nan")
        return loss + (pred - pred.detach()).abs().sqrt().sum()


class InjectedMSE(nn.Module):
    def __init__(self, injector: Injector) -> None:
        super().__init__()
        self.injector = injector

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.injector(pred, nn.functional.mse_loss(pred, target))


def images(n: int = BATCH, size: int = SIZE, channels: int = 1, dims: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, *([size] * dims), generator=g)


def conv_net(channels: int = 1, dims: int = 2) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return nn.Sequential(conv(channels, 4, 3, padding=1), nn.ReLU(), conv(4, channels, 3, padding=1))


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[list[torch.Tensor], dict]:
    state = {
        i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
        for i, s in optimizer.state_dict()["state"].items()
    }
    return [p.detach().clone() for p in model.parameters()], state


def assert_untouched(model: nn.Module, optimizer: torch.optim.Optimizer, before) -> None:
    weights, state = before
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), weights, strict=True))
    now = optimizer.state_dict()["state"]
    assert now.keys() == state.keys()
    for i in state:
        for k, v in state[i].items():
            assert torch.equal(now[i][k], v) if isinstance(v, torch.Tensor) else now[i][k] == v
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


# --- entry points, each running one MGE step with an injector -------------------------------------


def run_step(injector: Injector, nonfinite: str):
    model = conv_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = snapshot(model, optimizer)
    x = images()
    policy = NonFinitePolicy(nonfinite)

    def loss_fn(pred, target):
        return injector(pred, nn.functional.mse_loss(pred, target))

    stats = mge_step(model, optimizer, loss_fn, (x, x), MGEConfig(levels=2, batch_size=2, growth=2), nonfinite=policy)
    assert stats.skipped
    return model, optimizer, before, policy.skipped


class DeepinvInjectedLoss(dinv.loss.SupLoss):
    def __init__(self, injector: Injector) -> None:
        super().__init__()
        self.injector = injector

    def forward(self, x_net, x, y, physics, model, **kwargs):
        return self.injector(x_net, super().forward(x_net=x_net, x=x, y=y, physics=physics, model=model, **kwargs))


class Clean(torch.utils.data.Dataset):
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


def deepinv_trainer(data: torch.Tensor | None = None, model: nn.Module | None = None, injector=None, **kwargs):
    data = images() if data is None else data
    model = model or dinv.models.ArtifactRemoval(dinv.models.DnCNN(1, 1, depth=2, nf=4, pretrained=None))
    options = dict(strategy="mge", levels=2, epochs=1, batch_size=BATCH)
    options.update(kwargs)
    loader = torch.utils.data.DataLoader(Clean(data), batch_size=options.pop("batch_size"), shuffle=False)
    losses = [DeepinvInjectedLoss(injector)] if injector is not None else [dinv.loss.SupLoss()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MultiscaleTrainer(
            model=model, physics=dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1)),
            optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), train_dataloader=loader, losses=losses,
            online_measurements=True, save_path=None, verbose=False, show_progress_bar=False, device="cpu",
            **options,
        )  # fmt: skip


def train_quietly(trainer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        trainer.train() if isinstance(trainer, MultiscaleTrainer) else trainer.run()


def run_deepinv(injector: Injector, nonfinite: str):
    trainer = deepinv_trainer(injector=injector, nonfinite=nonfinite)
    before = snapshot(trainer.model, trainer.optimizer)
    train_quietly(trainer)
    return trainer.model, trainer.optimizer, before, trainer.skipped_steps


def monai_samples(n: int = BATCH, size: int = SIZE, dims: int = 2, channels: int = 1, image_shape=None) -> list:
    data = images(n, size, channels, dims)
    return [{"image": d if image_shape is None else d.reshape(image_shape), "label": d} for d in data]


def monai_trainer(data: list | None = None, model: nn.Module | None = None, injector=None, batch_size=BATCH, **kw):
    model = model or conv_net()
    loss = InjectedMSE(injector) if injector is not None else nn.MSELoss()
    options = dict(strategy="mge", levels=2)
    options.update(kw)
    loader = MonaiLoader(MonaiDataset(data or monai_samples()), batch_size=batch_size, shuffle=False)
    return MultiscaleSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=loader, network=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), loss_function=loss, **options,
    )  # fmt: skip


def run_monai(injector: Injector, nonfinite: str):
    trainer = monai_trainer(injector=injector, nonfinite=nonfinite)
    before = snapshot(trainer.network, trainer.optimizer)
    train_quietly(trainer)
    assert trainer.state.mge_skipped_steps == trainer.skipped_steps
    return trainer.network, trainer.optimizer, before, trainer.skipped_steps


ENTRY_POINTS = {"mge_step": run_step, "deepinv": run_deepinv, "monai": run_monai}

# (evaluation index, kind, message)
NONFINITE_CASES = [
    pytest.param(0, "loss", r"MGE term 0 \(levels 0 - 1\): the loss at level 0 is nan", id="loss-term0-level0"),
    pytest.param(1, "loss", r"MGE term 0 \(levels 0 - 1\): the loss at level 1 is nan", id="loss-term0-level1"),
    pytest.param(3, "loss", r"MGE term 1 \(levels 1 - 2\): the loss at level 2 is nan", id="loss-term1-level2"),
    pytest.param(4, "loss", r"MGE term 2 \(level 2\): the loss at level 2 is nan", id="loss-term2-level2"),
    pytest.param(
        2,
        "gradient",
        r"MGE term 1 \(levels 1 - 2\): the accumulated gradients are not finite .*\(first: \S+weight\)",
        id="gradient-term1",
    ),
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("at, kind, match", NONFINITE_CASES)
def test_nonfinite_raise_names_term_and_level_and_leaves_the_weights(entry, at, kind, match) -> None:
    injector = Injector(at, kind)
    with pytest.raises(NonFiniteError, match=match) as info:
        ENTRY_POINTS[entry](injector, "raise")
    term, level = ORDER[at]
    assert info.value.term == term and info.value.quantity == kind
    assert info.value.level == (level if kind == "loss" else None)
    # The checks are read once, after the step's last pass (one device sync per step), so every pass ran.
    assert injector.calls == len(ORDER)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("at, kind, match", [NONFINITE_CASES[i] for i in (0, 3, 4)])
def test_nonfinite_skip_takes_no_step_warns_and_counts(entry, at, kind, match) -> None:
    term, level = ORDER[at]
    where = f"{kind} of term {term} at level {level}" if kind == "loss" else f"{kind} of term {term} at levels 1, 2"
    with pytest.warns(NonFiniteStepWarning, match=where):
        model, optimizer, before, skipped = ENTRY_POINTS[entry](Injector(at, kind), "skip")
    assert skipped == 1
    assert_untouched(model, optimizer, before)


def test_nonfinite_raise_leaves_weights_and_optimizer_state_after_earlier_steps() -> None:
    model = conv_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, config = images(), MGEConfig(levels=2, batch_size=2, growth=2)
    mge_step(model, optimizer, nn.MSELoss(), (x, x), config)  # Adam now has moments and a step count
    before = snapshot(model, optimizer)
    with pytest.raises(NonFiniteError, match="level 1 is nan"):
        mge_step(model, optimizer, InjectedMSE(Injector(2)), (x, x), config)
    assert_untouched(model, optimizer, before)


def test_skip_policy_warns_with_the_count_and_training_goes_on() -> None:
    model = conv_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, config, policy = images(), MGEConfig(levels=1, batch_size=4, growth=2), NonFinitePolicy("skip")
    with pytest.warns(NonFiniteStepWarning) as record:
        for _ in range(5):
            mge_step(model, optimizer, InjectedMSE(Injector(0)), (x, x), config, nonfinite=policy)
    assert policy.skipped == 5 and len(record) == 3  # the 1st, 2nd and 4th skip warn
    assert "4 skipped so far, 4 in a row" in str(record[-1].message)
    before = [p.detach().clone() for p in model.parameters()]
    assert not mge_step(model, optimizer, nn.MSELoss(), (x, x), config, nonfinite=policy).skipped
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_skips_in_a_row_stop_training_with_the_likely_cause() -> None:
    model = conv_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, config, policy = (
        images(),
        MGEConfig(levels=1, batch_size=4, growth=2),
        NonFinitePolicy("skip", max_consecutive=3),
    )
    with pytest.warns(NonFiniteStepWarning):
        for _ in range(2):
            mge_step(model, optimizer, InjectedMSE(Injector(0)), (x, x), config, nonfinite=policy)
        mge_step(model, optimizer, nn.MSELoss(), (x, x), config, nonfinite=policy)  # a finite step resets the run
        for _ in range(2):
            mge_step(model, optimizer, InjectedMSE(Injector(0)), (x, x), config, nonfinite=policy)
        with pytest.raises(NonFiniteError, match=r"3 training steps in a row were skipped.*float32.*learning rate"):
            mge_step(model, optimizer, InjectedMSE(Injector(0)), (x, x), config, nonfinite=policy)


def test_an_overflowing_gradient_norm_is_not_clipped_into_a_normal_step() -> None:
    model = conv_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, config = images(), MGEConfig(levels=1, batch_size=4, growth=2)
    before = [p.detach().clone() for p in model.parameters()]
    huge = (x * 1e30, x)  # finite losses whose squared gradient norm overflows float32
    with pytest.raises(NonFiniteError, match="gradient"):
        mge_step(model, optimizer, nn.MSELoss(), huge, config, max_grad_norm=1.0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    policy = NonFinitePolicy("skip")
    with pytest.warns(NonFiniteStepWarning):
        stats = mge_step(model, optimizer, nn.MSELoss(), huge, config, max_grad_norm=1.0, nonfinite=policy)
    assert stats.skipped and policy.skipped == 1
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


@pytest.mark.parametrize("mixed_precision", [False, True], ids=["fp32", "fp16-grad-scaler"])
def test_deepinv_skipped_step_then_training_goes_on(mixed_precision: bool) -> None:
    # A skipped step under deepinv's own step(), with its GradScaler enabled or not; the optimizer's
    # step is its own again afterwards.
    trainer = deepinv_trainer(data=images(16), injector=Injector(0), nonfinite="skip", mixed_precision=mixed_precision)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.warns(NonFiniteStepWarning, match="loss of term 0 at level 0"):
        train_quietly(trainer)
    assert trainer.skipped_steps == 1 and trainer.cost.steps == 2
    assert "step" not in vars(trainer.optimizer)
    changed = not all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), before))
    if mixed_precision:
        # The skip left the scale at 2**16; the second step's fp16 gradients overflowed and the
        # scaler, not the trainer, skipped that step and halved its scale (no NonFiniteError).
        assert trainer.scaler.get_scale() == 2.0**15 and not changed
    else:
        assert changed


def test_with_a_grad_scaler_gradient_overflow_is_left_to_the_scaler_but_a_nan_loss_still_raises() -> None:
    model = conv_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, config = images(), MGEConfig(levels=2, batch_size=2, growth=2)
    before = [p.detach().clone() for p in model.parameters()]
    stats = mge_step(model, optimizer, InjectedMSE(Injector(2, "gradient")), (x, x), config, scaler=scaler)
    assert not stats.skipped and scaler.get_scale() == 512.0  # the scaler found the NaN and skipped the step
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    with pytest.raises(NonFiniteError, match="level 0 is nan"):
        mge_step(model, optimizer, InjectedMSE(Injector(0)), (x, x), config, scaler=scaler)


# --- input checks -------------------------------------------------------------------------------


def step_with(x: torch.Tensor, model: nn.Module | None = None, levels: int = 2) -> None:
    model = model or conv_net()
    mge_step(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.MSELoss(),
        (x, x),
        MGEConfig(levels=levels, batch_size=2, growth=2),
    )


def deepinv_with(data: torch.Tensor, model: nn.Module | None = None, **kwargs) -> None:
    train_quietly(deepinv_trainer(data=data, model=model, **kwargs))


def monai_with(data: list, model: nn.Module | None = None, **kwargs) -> None:
    train_quietly(monai_trainer(data=data, model=model, **kwargs))


def dncnn(channels: int = 1) -> nn.Module:
    return dinv.models.ArtifactRemoval(dinv.models.DnCNN(channels, channels, depth=2, nf=4, pretrained=None))


RANK = r"have shape \(.*\): multiscale training needs (batches|samples) of \(B?,? ?C, H, W\) images.*channel axis"
CHANNELS = r"first convolution .* expects 1 input channels but the data have 3; build the network with in_channels=3"
SMALL = r"spatial size 12 \(axis H\).*level 3 cannot be formed|12 \(axis H\) gives side .* at level 3"
SHORT = r"training dataset has 4 samples, fewer than one loaded batch of 8.*DataLoader\(batch_size"
DIMS = r"first convolution .*\(Conv2d\) takes 2D data but the images are 3D.*spatial_dims=3"

INPUT_CASES = [
    ("rank", "mge_step", lambda: step_with(torch.rand(8, SIZE, SIZE)), RANK),
    ("rank", "deepinv", lambda: deepinv_with(torch.rand(8, SIZE, SIZE)), RANK),
    ("rank", "monai", lambda: monai_with(monai_samples(image_shape=(SIZE, SIZE))), RANK),
    ("channels", "mge_step", lambda: step_with(images(channels=3)), r"expected input.* to have 1 channels"),
    ("channels", "deepinv", lambda: deepinv_with(images(channels=3), dncnn(1)), CHANNELS),
    ("channels", "monai", lambda: monai_with(monai_samples(channels=3)), CHANNELS),
    ("too small", "mge_step", lambda: step_with(images(n=16, size=12), levels=3), SMALL),
    ("too small", "deepinv", lambda: deepinv_with(images(size=12), levels=3), SMALL),
    ("short dataset", "deepinv", lambda: deepinv_with(images(n=4)), SHORT),
    ("short dataset", "monai", lambda: monai_with(monai_samples(n=4)), SHORT),
    ("2D net, 3D data", "deepinv", lambda: deepinv_with(images(size=8, dims=3), levels=1), DIMS),
    ("2D net, 3D data", "monai", lambda: monai_with(monai_samples(size=8, dims=3), levels=1), DIMS),
]


@pytest.mark.parametrize(
    "run, match", [pytest.param(run, match, id=f"{case}-{entry}") for case, entry, run, match in INPUT_CASES]
)
def test_bad_input_gives_an_error_naming_the_setting(run, match) -> None:
    with pytest.raises((ValueError, RuntimeError), match=match):
        run()


def test_monai_trains_images_too_small_for_the_levels_with_fewer_and_one_warning() -> None:
    trainer = monai_trainer(data=monai_samples(size=12), levels=3)
    with pytest.warns(
        UserWarning, match=r"using levels=2 instead of the requested levels=3: spatial size 12 \(axis H\)"
    ):
        trainer.run()
    assert trainer.multiscale.built_strategy.coarsest_level == 2


# --- data loaders -------------------------------------------------------------------------------


def write_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = (torch.rand(3, 32, 32) * 255).to(torch.uint8)
    pixels = Image.fromarray(image.permute(1, 2, 0).numpy())  # Pillow: torchvision's encoders are deprecated
    pixels.save(folder / "good.png")
    pixels.save(folder / "photo.jpg")
    return folder


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def png_cut_in_half(folder: Path) -> Path:
    truncate(write_images(folder) / "good.png")
    return folder / "good.png"


def jpeg_cut_in_half(folder: Path) -> Path:
    truncate(write_images(folder) / "photo.jpg")
    return folder / "photo.jpg"


def text_named_png(folder: Path) -> Path:
    write_images(folder)
    (folder / "notes.png").write_text("not an image")
    return folder / "notes.png"


def write_volumes(folder: Path, count: int = 2) -> list[Path]:
    return write_synthetic_volumes(folder, count=count, size=16, dims=3)


def nii_gz_cut_in_half(folder: Path) -> Path:
    path = write_volumes(folder)[1]
    truncate(path)
    return path


def text_named_nii_gz(folder: Path) -> Path:
    write_volumes(folder)
    path = folder / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti file"))
    return path


def nii_cut_short(folder: Path) -> Path:
    write_volumes(folder)
    path = folder / "plain.nii"
    nib.save(nib.Nifti1Image(torch.rand(16, 16, 16).numpy(), torch.eye(4).numpy()), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    return path


@pytest.mark.parametrize(
    "loader, make_bad, match",
    [
        (folder_images, png_cut_in_half, r"cannot decode .*good\.png .*truncated, corrupt or not an image"),
        (folder_images, jpeg_cut_in_half, r"cannot decode .*photo\.jpg .*truncated, corrupt or not an image"),
        (folder_images, text_named_png, r"cannot decode .*notes\.png .*replace or remove it"),
        (nifti_files, nii_gz_cut_in_half, r"phantom_001\.nii\.gz is truncated or corrupt.*replace or remove"),
        (nifti_files, text_named_nii_gz, r"notes\.nii\.gz is not a readable NIfTI file"),
        (nifti_files, nii_cut_short, r"plain\.nii is truncated: its header needs \d+ bytes but it holds \d+"),
    ],
    ids=["png-cut", "jpeg-cut", "text-png", "nii.gz-cut", "text-nii.gz", "nii-cut"],
)
def test_unreadable_file_is_named(tmp_path: Path, loader, make_bad, match) -> None:
    bad = make_bad(tmp_path / "data")
    with pytest.raises(ValueError, match=match) as info:
        loader(tmp_path / "data")
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    "loader, match",
    [
        (folder_images, r"no image files \(\.png.*\) in .*empty"),
        (nifti_files, r"no NIfTI files \(\.nii.*\) in .*empty"),
    ],
)
def test_empty_folder_is_named(tmp_path: Path, loader, match) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=match):
        loader(tmp_path / "empty")


def test_valid_files_pass_the_checks(tmp_path: Path) -> None:
    assert len(folder_images(write_images(tmp_path / "img"))) == 2
    assert len(nifti_files(tmp_path / "vol" if write_volumes(tmp_path / "vol", 3) else None)) == 3


def test_docs_errors_snippet_runs() -> None:
    import re

    doc = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
    (block,) = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    namespace: dict = {}
    with pytest.warns(NonFiniteStepWarning, match="loss of term 0 at level 0"):
        exec(compile(block, str(doc), "exec"), namespace)
    assert namespace["stats"].skipped and namespace["policy"].skipped == 1


def test_half_precision_weights_broken_by_the_first_update_are_named() -> None:
    model = conv_net().half()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e3, eps=1e-12)  # the update overflows float16
    x = images().half()
    with pytest.raises(NonFiniteError, match=r"weights are not finite after the optimizer step.*float32.*autocast"):
        mge_step(model, optimizer, nn.MSELoss(), (x, x), MGEConfig(levels=1, batch_size=4, growth=2), step=0)


def test_a_loaded_batch_too_small_for_the_levels_is_warned_about() -> None:
    with pytest.warns(UserWarning, match=r"per-term batches \[1, 1, 1\] cost 1.62x a single-scale step of 1 samples"):
        monai_trainer(data=monai_samples(n=4), batch_size=1, strategy="mge", levels=2).run()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: deepinv_trainer(levels=-1), "levels must be an integer >= 0, got -1"),
        (lambda: deepinv_trainer(iterations=2.5), "iterations must be an integer >= 1, got 2.5"),
        (lambda: deepinv_trainer(growth=float("inf")), "growth must be a finite number >= 1"),
        (lambda: deepinv_trainer(coarse_noise="kep"), r"coarse_noise must be one of \('keep', 'restrict'\)"),
        (lambda: deepinv_trainer(strategy="full_multiscale"), "Did you mean 'full-multiscale'"),
        (lambda: monai_trainer(strategy="mgee"), "Did you mean 'mge'"),
        (lambda: monai_trainer(restriction="aera"), r"unknown restriction 'aera' \(did you mean 'area'\?\)"),
        (lambda: monai_trainer(label_restriction="majority"), r"unknown label_restriction 'majority'; use one of"),
        (lambda: monai_trainer(nonfinite="ignore"), "nonfinite must be one of 'raise', 'skip'"),
    ],
    ids=[
        "levels",
        "iterations",
        "growth",
        "coarse-noise",
        "deepinv-name",
        "monai-name",
        "restriction",
        "label-restriction",
        "nonfinite",
    ],
)
def test_bad_options_fail_at_construction_not_at_the_first_step(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_offline_measurements_say_that_coarse_samples_are_restricted() -> None:
    from mge_deepinv.training.levels import LevelPoser

    poser = LevelPoser("auto")
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    with pytest.warns(UserWarning, match=r"restricts the fine measurements of Denoising because the measurements are"):
        assert poser.mode_for(physics, has_x=True, online=False) == "restrict"


@pytest.mark.parametrize(
    "network, match",
    [
        (
            lambda: nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), nn.AvgPool2d(2), nn.InstanceNorm2d(4)
            ),
            r"a normalisation layer has one voxel per channel there.*2 downsamplings.*crops of at least \(32, 32\)",
        ),
        (
            lambda: SkipUNet(),
            r"on mismatched sizes.*1 downsamplings need sides divisible by 8 at level 2.*smallest fine crop that "
            r"works is \(16, 16\).*size_multiple=2.*register_coarsening.*coarse_mode='restrict'",
        ),
        (
            lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), nn.AvgPool2d(2)),
            r"2 downsamplings leave nothing at that level.*smallest fine crop that works is \(16, 16\)",
        ),
    ],
    ids=["one-voxel-norm", "skip-sizes", "too-small"],
)
def test_the_cause_of_a_coarse_failure_is_classified_with_its_fix(network, match: str) -> None:
    from mge_plugins.checks import check_network

    model = network()
    side = 16 if "voxel" in match else 12  # 12 px at level 2 is 3 px: odd sizes break the skip
    probe = torch.rand(1, 1, side, side)
    with pytest.raises(ValueError, match=match):
        check_network(lambda: model(restrict(probe, 2)), model, level=2, input_shape=(8, 1, side, side))


class SkipUNet(nn.Module):
    """One pooling and a skip connection: odd sides cannot be concatenated back."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.conv = nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(self.conv(self.down(x)), scale_factor=2)
        return torch.cat([x, up], dim=1)
