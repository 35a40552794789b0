"""3D denoising or 2x super-resolution of NIfTI volumes with MONAI, trained by multiscale training.

Loads volumes with ``LoadImaged`` from ``--data DIR`` (any folder of NIfTI files) or, by default,
from small synthetic phantoms the example writes itself. The corruption is applied to the fine
crop in the transform pipeline; the trainer restricts image and label to each level.

    python examples/monai_3d.py [--task denoise|sr] [--strategy mge|full-multiscale|single]
"""

from __future__ import annotations

import torch
from example_args import fail
from mge_monai import RestrictLeveld
from mge_monai.data import nifti_files, write_synthetic_volumes
from monai.data import CacheDataset
from monai.networks.layers import SkipConnection
from monai.networks.nets import SegResNet
from monai.transforms import (
    Compose,
    CopyItemsd,
    EnsureChannelFirstd,
    LoadImaged,
    RandGaussianNoised,
    RandSpatialCropd,
    Resized,
    ScaleIntensityd,
)
from monai_common import parse_args, train_and_report

args = parse_args(__doc__, ("denoise", "sr"), size=32, batch_size=8, iterations_per_epoch=75)
if args.data:
    try:
        files = nifti_files(args.data)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error) if str(error).startswith("--data") else f"--data: {error}")
    if len(files) < 3:
        fail(
            f"--data {args.data}: {len(files)} NIfTI file(s); the example needs at least 3 (2 are held out for testing)"
        )
else:
    files = write_synthetic_volumes(args.out / "monai_3d" / "volumes", count=12)
size = (args.size,) * 3
corrupt = (
    [RandGaussianNoised(keys="image", prob=1.0, mean=0.0, std=0.05, sample_std=False)]
    if args.task == "denoise"
    else [RestrictLeveld(keys="image", level=1), Resized(keys="image", spatial_size=size, mode="trilinear")]
)
transform = Compose(
    [
        LoadImaged(keys="label"),
        EnsureChannelFirstd(keys="label"),
        ScaleIntensityd(keys="label"),
        RandSpatialCropd(keys="label", roi_size=size, random_size=False),
        CopyItemsd(keys="label", names="image"),
        *corrupt,
    ]
)
train_set = CacheDataset([{"label": str(f)} for f in files[:-2]] * 4, transform, progress=False)
test_set = CacheDataset([{"label": str(f)} for f in files[-2:]] * 2, transform, progress=False)
torch.manual_seed(0)
test_samples = [test_set[i] for i in range(len(test_set))]  # one draw per sample: image and label agree
test_batch = {key: torch.stack([sample[key] for sample in test_samples]) for key in ("image", "label")}
# SegResNet (instance norm, residual blocks) learning a residual. Two downsamplings: crops of 32
# reach level 2 at 8 voxels per side with a 2-voxel bottleneck.
network = SkipConnection(
    SegResNet(3, init_filters=8, in_channels=1, out_channels=1, blocks_down=(1, 1, 1), blocks_up=(1, 1)), mode="add"
)
train_and_report(args, "monai_3d", network, train_set, test_batch)
