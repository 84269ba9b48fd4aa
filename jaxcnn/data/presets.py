"""Dataset presets: what a user would otherwise look up for each dataset.

A preset names the TFDS dataset, its number of classes, the image shape fed to a model by
default, per-channel mean/std (in [0, 1] units), the train/eval splits and the default training
augmentation. Any other TFDS image-classification dataset works by name too, with statistics of
0.5/0.5 unless the config gives them. This module needs neither TensorFlow nor TFDS, so the
device-resident pipeline can use it on machines without them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetPreset:
    tfds_name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # native, or the default model input for varying sizes
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_split: str = "train"
    eval_split: str = "test"
    augment: str = "none"


_CIFAR10_STATS = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_STATS = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

PRESETS: dict[str, DatasetPreset] = {
    "digits": DatasetPreset("digits", 10, (8, 8, 1), (0.3053,), (0.3761,)),
    "mnist": DatasetPreset("mnist", 10, (28, 28, 1), (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetPreset("fashion_mnist", 10, (28, 28, 1), (0.2860,), (0.3530,)),
    "cifar10": DatasetPreset("cifar10", 10, (32, 32, 3), *_CIFAR10_STATS, augment="crop_flip"),
    "cifar10_jpeg": DatasetPreset(
        "cifar10_jpeg", 10, (32, 32, 3), *_CIFAR10_STATS, augment="crop_flip"
    ),
    "cifar100": DatasetPreset(
        "cifar100",
        100,
        (32, 32, 3),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        augment="crop_flip",
    ),
    # Digits are not mirror-symmetric: crop only (crop_flip's flip would change their meaning).
    "svhn_cropped": DatasetPreset(
        "svhn_cropped",
        10,
        (32, 32, 3),
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        augment="crop",
    ),
    "imagenette": DatasetPreset(
        "imagenette/full-size-v2",
        10,
        (224, 224, 3),
        *_IMAGENET_STATS,
        eval_split="validation",
        augment="inception_crop",
    ),
    "imagenet2012": DatasetPreset(
        "imagenet2012",
        1000,
        (224, 224, 3),
        *_IMAGENET_STATS,
        eval_split="validation",
        augment="inception_crop",
    ),
}


def get_preset(name: str) -> DatasetPreset | None:
    """The preset for ``name``, or None for a dataset without one."""
    return PRESETS.get(name)
