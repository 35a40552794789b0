"""2D deblurring or denoising of the high-resolution retina photograph with MONAI, multiscale training.

Random crops of the 1411 x 1411 fundus photograph that ships with scikit-image (or of the 2D
images in ``--data DIR``, NIfTI or PNG); held-out crops come from the bottom fifth of the image.

    python examples/monai_retina_2d.py [--task deblur|denoise] [--strategy mge|full-multiscale|single]
"""

from __future__ import annotations

import torch
from example_args import fail
from mge_monai.data import retina_image
from monai.data import Dataset
from monai.networks.layers import SkipConnection
from monai.networks.nets import SegResNet
from monai.transforms import Compose, CopyItemsd, GaussianSmoothd, RandGaussianNoised, RandSpatialCropd
from monai_common import parse_args, train_and_report

SUFFIXES = (".nii", ".nii.gz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

args = parse_args(__doc__, ("deblur", "denoise"), size=128, batch_size=16)
if args.data:
    from monai.transforms import LoadImage, ScaleIntensity

    paths = sorted(p for p in args.data.iterdir() if p.name.lower().endswith(SUFFIXES))
    if not paths:
        fail(f"--data {args.data}: no image files ({', '.join(SUFFIXES)}) in it; point --data at a folder of 2D images")
    images = []
    for path in paths:
        try:
            image = ScaleIntensity()(LoadImage(ensure_channel_first=True)(str(path)))
        except Exception as error:  # MONAI's readers raise many types; the file is named either way
            fail(f"--data: cannot read {path} ({type(error).__name__}); replace or remove the file")
        if image.dim() != 3:
            fail(f"--data: {path} has shape {tuple(image.shape)}, not a 2D image")
        images.append(image[:1] if image.shape[0] in (3, 4) else image)
    print(f"training on {len(images)} images from {args.data}; testing on the bottom fifth of the first")
else:
    images = [retina_image()]
cut = int(images[0].shape[-2] * 0.8)
small = [tuple(im.shape[-2:]) for im in images if min(im.shape[-2] * 0.8, im.shape[-1]) < args.size]
if small or images[0].shape[-2] - cut < args.size:
    fail(
        f"--size {args.size} is larger than the images allow (shapes {[tuple(im.shape[-2:]) for im in images]}; "
        "training crops come from the top four fifths, test crops from the first image's bottom fifth); "
        "lower --size"
    )
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
