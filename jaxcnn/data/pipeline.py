"""tfds → tf.data input pipelines for training and evaluation.

Training: an endless, seeded, reshuffled stream of this process's shard of the train split.
Each example carries its position in that stream, which seeds its augmentation; a run resumed at
step ``s`` skips the first ``s`` batches of records before decoding, so it sees exactly the
batches an uninterrupted run would have seen.

Evaluation: each process reads a disjoint part of the eval split; every part is padded to the
same number of batches with masked-out examples, so every example is counted exactly once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcnn.data.augment import get_augment
from jaxcnn.data.datasets import get_preset, prepared_builder
from jaxcnn.errors import UserError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the loop need to know about the data."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # as fed to the model, after resizing
    num_train_examples: int
    num_eval_examples: int


@dataclasses.dataclass(frozen=True)
class _Resolved:
    builder: tfds.core.DatasetBuilder
    train_split: str
    eval_split: str
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str


def _resolve(config: ml_collections.ConfigDict) -> _Resolved:
    preset = get_preset(config.name)
    builder = prepared_builder(preset.tfds_name if preset else config.name, config.data_dir)
    image_feature = builder.info.features["image"]
    native = tuple(image_feature.shape)
    if preset:
        native = preset.image_shape
    if None in native:
        if not config.image_size:
            raise UserError(
                f"dataset {config.name!r} has images of varying size; set dataset.image_size"
            )
        native = (config.image_size, config.image_size, native[-1] or 3)
    size = config.image_size or native[0]
    channels = native[-1]
    mean = tuple(config.mean) if config.mean else (preset.mean if preset else (0.5,) * channels)
    std = tuple(config.std) if config.std else (preset.std if preset else (0.5,) * channels)
    augment = config.augment
    if augment == "default":
        augment = preset.augment if preset else "none"
    get_augment(augment, crop_padding=config.crop_padding)  # reject unknown names up front
    splits = builder.info.splits
    train_split = config.train_split or (preset.train_split if preset else "train")
    eval_split = config.eval_split or (preset.eval_split if preset else "test")
    for key, split in (("train_split", train_split), ("eval_split", eval_split)):
        try:
            splits[split]
        except (KeyError, ValueError):
            raise UserError(
                f"dataset.{key} {split!r} is not a split of {config.name!r}; "
                f"valid splits: {', '.join(sorted(splits))} (slices like 'train[:90%]' work too)"
            ) from None
    return _Resolved(builder, train_split, eval_split, (size, size, channels), mean, std, augment)


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
    """Prepare (or locate) the dataset of ``config.dataset`` and describe it."""
    resolved = _resolve(config)
    splits = resolved.builder.info.splits
    return DatasetInfo(
        name=config.name,
        num_classes=resolved.builder.info.features["label"].num_classes,
        image_shape=resolved.image_shape,
        num_train_examples=splits[resolved.train_split].num_examples,
        num_eval_examples=splits[resolved.eval_split].num_examples,
    )


def _preprocess_fn(resolved: _Resolved, augment_name: str, crop_padding: int):
    """``fn(index, example) -> {'image', 'label'}``: decode, resize, augment, normalise."""
    height, width, channels = resolved.image_shape
    mean = tf.constant(resolved.mean, tf.float32) * 255.0
    std = tf.constant(resolved.std, tf.float32) * 255.0
    augment = get_augment(augment_name, crop_padding=crop_padding)
    decode = resolved.builder.info.features["image"].decode_example

    def preprocess(seed: tf.Tensor, example: dict) -> dict:
        image = decode(example["image"])
        if image.shape[-1] != channels:
            image = (
                tf.image.grayscale_to_rgb(image)
                if channels == 3
                else tf.image.rgb_to_grayscale(image)
            )
        image = tf.cast(image, tf.float32)
        if image.shape[:2] != (height, width):
            image = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
        if augment is not None:
            image = augment(image, seed)
        image = (image - mean) / std
        return {"image": image, "label": tf.cast(example["label"], tf.int32)}

    return preprocess


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return options


def train_iterator(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """Endless batches of ``batch_size`` (this process's share) from ``start_step`` on."""
    resolved = _resolve(config)
    split = tfds.split_for_jax_process(
        resolved.train_split, process_index=process_index, process_count=process_count
    )
    read_config = tfds.ReadConfig(shuffle_seed=seed, options=_options())
    ds = resolved.builder.as_dataset(
        split=split,
        shuffle_files=True,
        read_config=read_config,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    if config.cache:
        ds = ds.cache()
    ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    # Position in the stream → a per-example augmentation seed that survives resumption.
    ds = ds.enumerate().skip(start_step * batch_size)
    preprocess = _preprocess_fn(resolved, resolved.augment, config.crop_padding)
    ds = ds.map(
        lambda index, example: preprocess(tf.stack([tf.cast(seed, tf.int64), index]), example),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def eval_iterator(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[Iterator[Batch], int]:
    """Padded, masked eval batches of this process's part of the eval split, and their number.

    All processes get the same number of batches; ``batch['mask']`` is False on padding.
    """
    resolved = _resolve(config)
    parts = tfds.even_splits(resolved.eval_split, n=process_count)
    sizes = [resolved.builder.info.splits[part].num_examples for part in parts]
    num_batches = math.ceil(max(sizes) / batch_size)
    ds = resolved.builder.as_dataset(
        split=parts[process_index],
        shuffle_files=False,
        read_config=tfds.ReadConfig(options=_options()),
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    preprocess = _preprocess_fn(resolved, "none", 0)
    ds = ds.map(
        lambda example: {**preprocess(tf.zeros(2, tf.int64), example), "mask": True},
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    padding = num_batches * batch_size - sizes[process_index]
    filler = {
        "image": tf.zeros(resolved.image_shape, tf.float32),
        "label": tf.constant(0, tf.int32),
        "mask": False,
    }
    ds = ds.concatenate(tf.data.Dataset.from_tensors(filler).repeat(padding))
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator(), num_batches
