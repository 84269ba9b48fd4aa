"""The interface of the two input pipelines, and what a config's ``dataset`` section resolves
to (no TensorFlow).

A pipeline (``streaming``: tf.data on the host; ``device_resident``: arrays in accelerator
memory) is a module with the functions of :class:`Pipeline`; ``batches.py`` picks one by
``dataset.pipeline`` and places its batches on the devices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import ml_collections
import numpy as np

from jaxcnn.data.presets import get_preset
from jaxcnn.errors import UserError, unknown_choice

PIPELINES = ("streaming", "device")
# "image" (normalised NHWC float32), "label" (class ids, or distributions after mixing) and, in
# eval batches, "mask" (False on padding): numpy arrays on the host, jax.Arrays on the devices.
Batch = dict[str, Any]
AUGMENTS = ("none", "flip", "crop", "crop_flip", "inception_crop")
CROP_FILLS = ("zeros", "reflect")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the loop need to know about the data."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # as fed to the model, after resizing
    num_train_examples: int
    num_eval_examples: int
    # The label's names, by class id, where the dataset has them (tfds ClassLabel names,
    # image_folder's folder names); () where it does not. Evaluation and prediction show them.
    class_names: tuple[str, ...] = ()

    def class_name(self, index: int) -> str:
        """The name of class ``index``, or its number where the dataset names none."""
        return self.class_names[index] if index < len(self.class_names) else str(index)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How to turn stored images into model inputs, for training and for evaluation."""

    image_shape: tuple[int, int, int]  # model input
    mean: tuple[float, ...]  # per channel, in [0, 255] units
    std: tuple[float, ...]
    augment: str  # one of AUGMENTS
    crop_padding: int
    crop_fill: str  # one of CROP_FILLS
    randaugment_layers: int
    randaugment_magnitude: float
    erase_prob: float
    train_split: str
    eval_split: str


class EvalBatches(Iterable[Batch]):
    """One eval split, opened once: every iteration is a full pass of padded, masked batches
    (``batch["mask"]`` is False on padding), the same number in every process.

    ``passes`` starts a pass over what the pipeline opened (a tf.data pipeline, arrays on the
    devices)."""

    def __init__(self, passes: Callable[[], Iterator[Batch]], num_batches: int) -> None:
        self._passes, self._num_batches = passes, num_batches

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[Batch]:
        return self._passes()


class Pipeline(Protocol):
    """The functions every input pipeline module provides. ``batch_size`` is global (over all
    processes); each process gets its part. ``layout`` (device-resident only: where the
    parallel strategy puts a batch) makes batches device arrays; else they are host arrays."""

    def dataset_info(self, config: ml_collections.ConfigDict) -> DatasetInfo: ...

    def first_train_images(self, config: ml_collections.ConfigDict, count: int) -> np.ndarray: ...

    def train_iterator(
        self,
        config: ml_collections.ConfigDict,
        *,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[Batch]: ...

    def eval_batches(
        self,
        config: ml_collections.ConfigDict,
        *,
        batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
    ) -> EvalBatches: ...


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise UserError(f"dataset.{name}={value} is out of range; valid: {low} to {high}")


def split_names(config: ml_collections.ConfigDict) -> tuple[str, str]:
    """The (train, eval) split strings of ``config`` (``config.dataset``) or its preset."""
    preset = get_preset(config.name)
    train = config.train_split or (preset.train_split if preset else "train")
    return train, config.eval_split or (preset.eval_split if preset else "test")


def resolve_preprocessing(
    config: ml_collections.ConfigDict, stored_shape: tuple[int | None, int | None, int]
) -> Preprocessing:
    """The :class:`Preprocessing` of ``config`` (``config.dataset``) for images stored at
    ``stored_shape`` (None for sizes that vary)."""
    if config.pipeline not in PIPELINES:
        raise unknown_choice("dataset.pipeline", config.pipeline, PIPELINES)
    preset = get_preset(config.name)
    height, width, channels = stored_shape
    if preset:
        height, width = preset.image_shape[:2]
    size = config.image_size or height
    if not size or not (config.image_size or width):
        raise UserError(
            f"dataset {config.name!r} has images of varying size; set dataset.image_size"
        )
    if config.channels not in (0, 1, 3):
        raise unknown_choice("dataset.channels", config.channels, ("0", "1", "3"))
    channels = config.channels or channels
    height, width = (size, size) if config.image_size else (height, width)

    def statistics(field: str, preset_value: tuple[float, ...] | None) -> tuple[float, ...]:
        given = tuple(config[field])
        if not given and preset_value:  # a grey input of an RGB dataset: the channel mean
            given = (sum(preset_value) / len(preset_value),) if channels == 1 else preset_value
        given = given or (0.5,)
        if len(given) == 1:
            given = given * channels
        if len(given) != channels:
            raise UserError(
                f"dataset.{field} has {len(given)} values for {channels}-channel images"
            )
        return tuple(255.0 * v for v in given)

    mean = statistics("mean", preset.mean if preset else None)
    std = statistics("std", preset.std if preset else None)
    augment = config.augment
    if augment == "default":
        augment = preset.augment if preset else "none"
    if augment not in AUGMENTS:
        raise unknown_choice("dataset.augment", augment, ("default", *AUGMENTS))
    if config.crop_padding < 0:
        raise UserError(f"dataset.crop_padding={config.crop_padding} must be >= 0")
    if config.crop_fill not in CROP_FILLS:
        raise unknown_choice("dataset.crop_fill", config.crop_fill, CROP_FILLS)
    if config.crop_fill == "reflect" and config.crop_padding >= min(height, width):
        raise UserError(
            f"dataset.crop_padding={config.crop_padding} must be below the image size "
            f"{min(height, width)} to reflect"
        )
    _check_range("randaugment_magnitude", config.randaugment_magnitude, 0.0, 10.0)
    _check_range("erase_prob", config.erase_prob, 0.0, 1.0)
    _check_range("mixup_alpha", config.mixup_alpha, 0.0, float("inf"))
    _check_range("cutmix_alpha", config.cutmix_alpha, 0.0, float("inf"))
    train_split, eval_split = split_names(config)
    return Preprocessing(
        image_shape=(height, width, channels),
        mean=mean,
        std=std,
        augment=augment,
        crop_padding=config.crop_padding,
        crop_fill=config.crop_fill,
        randaugment_layers=max(0, config.randaugment_layers),
        randaugment_magnitude=config.randaugment_magnitude,
        erase_prob=config.erase_prob,
        train_split=train_split,
        eval_split=eval_split,
    )
