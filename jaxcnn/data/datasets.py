"""Dataset presets and locating prepared TFDS data, failing fast when offline.

A preset names what a user would otherwise look up for each dataset: the TFDS name, the number
of classes, the native image shape, per-channel mean/std (in [0, 1] units) and the default
training augmentation. Any other TFDS image-classification dataset works by name too, with
statistics of 0.5/0.5 unless given in the config.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import tensorflow_datasets as tfds

from jaxcnn.data import digits  # noqa: F401  (registers the offline 'digits' builder)
from jaxcnn.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetPreset:
    tfds_name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_split: str = "train"
    eval_split: str = "test"
    augment: str = "none"


_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

PRESETS: dict[str, DatasetPreset] = {
    "digits": DatasetPreset("digits", 10, (8, 8, 1), (0.3053,), (0.3761,)),
    "mnist": DatasetPreset("mnist", 10, (28, 28, 1), (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetPreset("fashion_mnist", 10, (28, 28, 1), (0.2860,), (0.3530,)),
    "cifar10": DatasetPreset(
        "cifar10", 10, (32, 32, 3), _CIFAR10_MEAN, _CIFAR10_STD, augment="crop_flip"
    ),
    "cifar10_jpeg": DatasetPreset(
        "cifar10_jpeg", 10, (32, 32, 3), _CIFAR10_MEAN, _CIFAR10_STD, augment="crop_flip"
    ),
    "cifar100": DatasetPreset(
        "cifar100",
        100,
        (32, 32, 3),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        augment="crop_flip",
    ),
}

# Builders whose preparation needs no download.
_OFFLINE_BUILDABLE = {"digits"}
_DOWNLOAD_HOST = "storage.googleapis.com"


def get_preset(name: str) -> DatasetPreset | None:
    """The preset for ``name``, or None for a dataset without one."""
    return PRESETS.get(name)


def _online() -> bool:
    """Whether downloads could work: a name lookup fails at once on a machine without network."""
    try:
        socket.getaddrinfo(_DOWNLOAD_HOST, 443)
    except OSError:
        return False
    return True


def _data_dir_root(builder: tfds.core.DatasetBuilder) -> str:
    # builder.data_dir is ROOT/NAME/VERSION (or ROOT/NAME/CONFIG/VERSION).
    path = builder.data_dir
    depth = 3 if builder.builder_config else 2
    for _ in range(depth):
        path = os.path.dirname(path)
    return path


def prepared_builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """A TFDS builder for ``name`` whose data is ready to read.

    Prepares datasets that need no network (``digits``) and, on a machine with network,
    downloads and prepares the others as tfds does. Offline and unprepared, it raises a
    :class:`UserError` at once instead of letting tfds retry downloads for minutes.
    """
    data_dir = data_dir or None
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f"dataset.data_dir {data_dir!r} is not a directory")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        where = data_dir or os.environ.get("TFDS_DATA_DIR") or "the default TFDS data dir"
        raise UserError(
            f"unknown dataset {name!r}: not a TFDS dataset and not prepared in {where}; "
            f"presets: {', '.join(sorted(PRESETS))} (or any TFDS image-classification dataset)"
        ) from None
    if builder.is_prepared():
        return builder
    if name not in _OFFLINE_BUILDABLE and not _online():
        raise UserError(
            f"dataset {name!r} is not prepared in {_data_dir_root(builder)} and this machine "
            f"has no network to download it; run `tfds build {name} --data_dir DIR` where there "
            "is network and set dataset.data_dir (or TFDS_DATA_DIR) to DIR"
        )
    builder.download_and_prepare()
    return builder
