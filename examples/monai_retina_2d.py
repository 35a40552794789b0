"""2D deblurring or denoising of the high-resolution retina photograph with MONAI, multiscale training.

Random crops of the 1411 x 1411 fundus photograph that ships with scikit-image (or of the 2D
images in ``--data DIR``, NIfTI or PNG); held-out crops come from the bottom fifth of the image.

    python examples/monai_retina_2d.py [--task deblur|denoise] [--strategy mge|full-multiscale|single]
"""

from __future__ import annotations

import torch
from mge_monai.data import retina_image
from monai.data import Dataset
from monai.networks.layers import SkipConnection
from monai.networks.nets import SegResNet
from monai.transforms import Compose, CopyItemsd, GaussianSmoothd, RandGaussianNoised, RandSpatialCropd
from monai_common import parse_args, train_and_report

args = parse_args(__doc__, ("deblur", "denoise"), size=128, batch_size=16)
if args.data:
    from monai.transforms import LoadImage, ScaleIntensity

    images = [ScaleIntensity()(LoadImage(ensure_channel_first=True)(str(p))) for p in sorted(args.data.iterdir())]
    if not images:
        raise SystemExit(f"no images in {args.data}")
else:
    images = [retina_image()]
cut = int(images[0].shape[-2] * 0.8)
corrupt = [GaussianSmoothd(keys="image", sigma=1.5)] if args.task == "deblur" else []
noise = RandGaussianNoised(keys="image", prob=1.0, std=0.02 if args.task == "deblur" else 0.1, sample_std=False)
crop = RandSpatialCropd(keys="label", roi_size=(args.size,) * 2, random_size=False)
transform = Compose([crop, CopyItemsd(keys="label", names="image"), *corrupt, noise])
length = args.iterations_per_epoch * args.batch_size
train_set = Dataset([{"label": images[i % len(images)][..., :cut, :]} for i in range(length)], transform)
test_set = Dataset([{"label": images[0][..., cut:, :]}] * 16, transform)
torch.manual_seed(0)
test_samples = [test_set[i] for i in range(len(test_set))]  # one draw per sample: image and label agree
test_batch = {key: torch.stack([sample[key] for sample in test_samples]) for key in ("image", "label")}
network = SkipConnection(  # SegResNet learning a residual
    SegResNet(2, init_filters=16, in_channels=1, out_channels=1, blocks_down=(1, 1, 1), blocks_up=(1, 1)), mode="add"
)
train_and_report(args, "monai_retina_2d", network, train_set, test_batch)
