"""The streaming pipeline: tfds → tf.data batches of numpy arrays, for training and evaluation.

Training: an endless, seeded, reshuffled stream of this process's part of the train split,
decoded and augmented in parallel. Each example carries its position in that stream, which seeds
its augmentation; a run resumed at step ``s`` skips the first ``s`` batches of records before
decoding, so it sees exactly the batches an uninterrupted run would have seen.

Evaluation: each process reads a disjoint part of the eval split; every part is padded to the
same number of batches with masked-out examples, so every example is counted exactly once.
Preprocessing is deterministic: resize (or, after Inception-style training crops, resize and
center-crop) and normalise.

:func:`export_arrays` writes the decoded splits to the ``.npz`` file that the device-resident
pipeline (:mod:`jaxcnn.data.device_resident`) loads without TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from jaxcnn.data.augment import (
    ACCURATE_DCT,
    decode_random_resized_crop,
    get_augment,
    random_erasing,
    resize_center_crop,
)
from jaxcnn.data.datasets import Source, open_source
from jaxcnn.data.device_resident import write_arrays
from jaxcnn.data.interface import (
    Batch,
    DatasetInfo,
    EvalBatches,
    Preprocessing,
    resolve_preprocessing,
)
from jaxcnn.data.randaugment import rand_augment
from jaxcnn.errors import UserError


def open_dataset(config: ml_collections.ConfigDict) -> tuple[Source, Preprocessing]:
    """The source of ``config`` (``config.dataset``) and how to preprocess it; checks splits."""
    source = open_source(config)
    spec = resolve_preprocessing(config, source.image_shape)
    source.check_split("train_split", spec.train_split)
    source.check_split("eval_split", spec.eval_split)
    return source, spec


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
    """Prepare (or locate) the dataset of ``config.dataset`` and describe it."""
    source, spec = open_dataset(config)
    splits = source.builder.info.splits
    return DatasetInfo(
        name=config.name,
        num_classes=source.num_classes,
        image_shape=spec.image_shape,
        num_train_examples=splits[spec.train_split].num_examples,
        num_eval_examples=splits[spec.eval_split].num_examples,
        class_names=source.class_names,
    )


def decode_image(encoded: tf.Tensor, stored_shape: tuple) -> tf.Tensor:
    """An encoded image decoded to the dataset's stored channels (``stored_shape``; None for
    sizes that vary). JPEGs are decoded with libjpeg's accurate integer DCT, as Pillow (and so
    ``benchmarks/tfrecord_arrays.py`` and torchvision) decode them: TensorFlow's default, the
    fast DCT, is off by up to 5 levels in about 65% of CIFAR-10's pixels."""
    channels = stored_shape[-1] or 0
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=channels, dct_method=ACCURATE_DCT),
        lambda: tf.io.decode_image(encoded, channels=channels, expand_animations=False),
    )
    return tf.ensure_shape(image, stored_shape)


def _to_model_input(image: tf.Tensor, spec: Preprocessing, resize: bool = True) -> tf.Tensor:
    """Float32 image with the model's channels and (when ``resize``) its height and width."""
    channels = spec.image_shape[-1]
    if image.shape[-1] != channels:
        convert = tf.image.grayscale_to_rgb if channels == 3 else tf.image.rgb_to_grayscale
        image = convert(image)
    image = tf.cast(image, tf.float32)
    if resize and image.shape[:2] != spec.image_shape[:2]:
        image = tf.image.resize(image, spec.image_shape[:2], method="bilinear", antialias=True)
    return image


def _normalize(image: tf.Tensor, spec: Preprocessing) -> tf.Tensor:
    return (image - tf.constant(spec.mean)) / tf.constant(spec.std)


def _train_preprocess(source: Source, spec: Preprocessing):
    """``fn(seed, example) -> {'image', 'label'}``: decode, augment, normalise."""
    augment = get_augment(spec.augment, crop_padding=spec.crop_padding, crop_fill=spec.crop_fill)

    def preprocess(seed: tf.Tensor, example: dict) -> dict:
        crop_seed, augment_seed, randaugment_seed, erase_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4)
        )
        if spec.augment == "inception_crop":
            channels = source.image_shape[-1]
            image = decode_random_resized_crop(example["image"], crop_seed, channels)
        else:
            image = decode_image(example["image"], source.image_shape)
        image = _to_model_input(image, spec)
        if augment is not None:
            image = augment(image, augment_seed)
        if spec.randaugment_layers:
            image = rand_augment(
                image,
                randaugment_seed,
                num_layers=spec.randaugment_layers,
                magnitude=spec.randaugment_magnitude,
            )
        image = _normalize(image, spec)
        if spec.erase_prob:
            image = random_erasing(image, erase_seed, spec.erase_prob)
        return {"image": image, "label": tf.cast(example["label"], tf.int32)}

    return preprocess


def _eval_preprocess(source: Source, spec: Preprocessing):
    """``fn(example) -> {'image', 'label', 'mask'}``: decode, resize (and center-crop after
    Inception-style training crops), normalise."""

    def preprocess(example: dict) -> dict:
        image = eval_image(decode_image(example["image"], source.image_shape), spec)
        image = tf.ensure_shape(image, spec.image_shape)
        return {"image": image, "label": tf.cast(example["label"], tf.int32), "mask": True}

    return preprocess


def eval_image(image: tf.Tensor, spec: Preprocessing) -> tf.Tensor:
    """A decoded image (HWC, any size, the model's or 1 or 3 channels) as the model sees it in
    evaluation: resized (and center-cropped after Inception-style training crops), normalised.
    Also the way an image file from outside the dataset becomes a model input."""
    center_crop = spec.augment == "inception_crop"
    image = _to_model_input(image, spec, resize=not center_crop)
    if center_crop:
        image = resize_center_crop(image, spec.image_shape[0])
    return _normalize(image, spec)


def train_iterator(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """Endless host batches, this process's share of ``batch_size``, from ``start_step`` on."""
    source, spec = open_dataset(config)
    batch_size //= process_count
    ds = source.read(
        spec.train_split, part=process_index, num_parts=process_count, shuffle_seed=seed
    )
    if config.cache:
        ds = ds.cache()
    ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    # Position in the stream → a per-example augmentation seed that survives resumption.
    ds = ds.enumerate().skip(start_step * batch_size)
    preprocess = _train_preprocess(source, spec)
    ds = ds.map(
        lambda index, example: preprocess(tf.stack([tf.cast(seed, tf.int64), index]), example),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def eval_batches(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> EvalBatches:
    """This process's part of the eval split as host batches of its share of ``batch_size``,
    padded so that all processes get the same number of batches (``mask`` False on padding)."""
    source, spec = open_dataset(config)
    batch_size //= process_count
    sizes = source.part_sizes(spec.eval_split, process_count)
    num_batches = math.ceil(max(sizes) / batch_size)
    ds = source.read(spec.eval_split, part=process_index, num_parts=process_count)
    ds = ds.map(_eval_preprocess(source, spec), num_parallel_calls=tf.data.AUTOTUNE)
    filler = {
        "image": tf.zeros(spec.image_shape, tf.float32),
        "label": tf.constant(0, tf.int32),
        "mask": False,
    }
    padding = num_batches * batch_size - sizes[process_index]
    ds = ds.concatenate(tf.data.Dataset.from_tensors(filler).repeat(padding))
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return EvalBatches(ds.as_numpy_iterator, num_batches)


def first_train_images(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
    """The first ``count`` train images in stored order, preprocessed as for evaluation."""
    source, spec = open_dataset(config)
    ds = source.read(spec.train_split).take(count).map(_eval_preprocess(source, spec))
    return next(ds.batch(count).as_numpy_iterator())["image"]


def _decoded_split(source: Source, split: str) -> tuple[np.ndarray, np.ndarray]:
    ds = source.read(split).map(
        lambda example: (decode_image(example["image"], source.image_shape), example["label"]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    images, labels = [], []
    for image_batch, label_batch in ds.batch(4096).prefetch(2).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def export_arrays(config: ml_collections.ConfigDict, path: str) -> None:
    """Write the decoded train and eval splits of ``config.dataset`` to the array cache
    ``path`` (:func:`jaxcnn.data.device_resident.write_arrays`)."""
    source, spec = open_dataset(config)
    if None in source.image_shape:
        raise UserError(
            f"dataset {config.name!r} has images of varying size, which the device pipeline "
            "cannot hold as one array; use dataset.pipeline='streaming'"
        )
    train_image, train_label = _decoded_split(source, spec.train_split)
    eval_image, eval_label = _decoded_split(source, spec.eval_split)
    write_arrays(
        path,
        train_image=train_image,
        train_label=train_label,
        eval_image=eval_image,
        eval_label=eval_label,
        num_classes=source.num_classes,
        class_names=source.class_names,
    )
