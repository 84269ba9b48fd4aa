"""The device-resident pipeline: small datasets held in accelerator memory, shuffled and augmented
on the device inside ``jit``. It needs no TensorFlow at train time.

Arrays come from an ``.npz`` cache, ``ARRAY_DIR/NAME-KEY.npz`` (``dataset.array_dir``; ''
= ``$JAXCNN_ARRAY_DIR`` or ``~/.cache/jaxcnn/arrays``), which holds the decoded uint8 train and
eval splits as stored. Where TensorFlow is installed, the first run writes it from tfds
(:func:`jaxcnn.data.streaming.export_arrays`); on an accelerator machine without TensorFlow, copy
the file over (or write it with ``python -m jaxcnn.data.export --config FILE``), or decode it
there from the dataset's TFDS TFRecords with ``benchmarks/tfrecord_arrays.py``.

Order: epoch ``e`` visits the train split in the permutation drawn from ``(seed, e)``; the batch
of step ``s`` is the slice ``s mod steps_per_epoch`` of it (the last partial batch is dropped).
Augmentation of the example at stream position ``p`` (= ``s * batch_size + i``) is seeded by
``(seed, p)``. Both depend on the step alone, so a resumed run continues the exact stream.
Augmentations (crop, flip, random erasing) draw from the same distributions as the streaming
pipeline's (:mod:`jaxcnn.data.augment`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn.data.boxes import erase_box
from jaxcnn.data.interface import (
    Batch,
    DatasetInfo,
    EvalBatches,
    Preprocessing,
    resolve_preprocessing,
    split_names,
)
from jaxcnn.data.presets import get_preset
from jaxcnn.errors import UserError

DEVICE_AUGMENTS = ("none", "flip", "crop", "crop_flip")
_ORDER_STREAM, _AUGMENT_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """How batches should come out, as the parallel strategy's ``shard_batch`` lays them out:
    the leading (example) dimensions of every array, and their sharding."""

    leading: tuple[int, ...]
    sharding: jax.sharding.NamedSharding

    @property
    def size(self) -> int:
        return math.prod(self.leading)


def array_path(config: ml_collections.ConfigDict) -> str:
    """The ``.npz`` cache of ``config.dataset``'s decoded splits."""
    root = config.array_dir or os.environ.get("JAXCNN_ARRAY_DIR") or "~/.cache/jaxcnn/arrays"
    preset = get_preset(config.name)
    origin = "|".join(
        [preset.tfds_name if preset else config.name, config.data_dir, config.path]
        + list(split_names(config))
    )
    digest = hashlib.sha256(origin.encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.name)
    return os.path.join(os.path.expanduser(root), f"{name}-{digest}.npz")


def load_arrays(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The cached arrays of ``config.dataset``, writing the cache first if TensorFlow can."""
    path = array_path(config)
    if not os.path.exists(path):
        try:
            from jaxcnn.data.streaming import export_arrays
        except ImportError:
            raise UserError(
                f"no array cache {path} for dataset {config.name!r}, and writing one needs "
                "TensorFlow; run `python -m jaxcnn.data.export --config FILE` where it is "
                "installed and copy the file here (or set dataset.array_dir)"
            ) from None
        export_arrays(config, path)
    return _read_arrays(path)


def write_arrays(
    path: str,
    *,
    train_image: np.ndarray,
    train_label: np.ndarray,
    eval_image: np.ndarray,
    eval_label: np.ndarray,
    num_classes: int,
    class_names: Sequence[str],
) -> None:
    """Write an array cache: images uint8 NHWC as stored, labels int32. It goes to a temporary
    name first, so a failure leaves no partial file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.npz"
    np.savez(
        tmp,
        train_image=train_image,
        train_label=np.asarray(train_label, np.int32),
        eval_image=eval_image,
        eval_label=np.asarray(eval_label, np.int32),
        num_classes=np.int32(num_classes),
        class_names=np.asarray(class_names, dtype=str),
    )
    os.replace(tmp, path)


@functools.lru_cache(maxsize=2)
def _read_arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def _spec(config: ml_collections.ConfigDict, arrays: Mapping[str, np.ndarray]) -> Preprocessing:
    spec = resolve_preprocessing(config, arrays["train_image"].shape[1:])
    if spec.augment not in DEVICE_AUGMENTS or spec.randaugment_layers:
        what = "randaugment" if spec.randaugment_layers else f"augment {spec.augment!r}"
        raise UserError(
            f"dataset.{what} runs in the streaming pipeline only; the device pipeline does "
            f"{', '.join(DEVICE_AUGMENTS)}, erasing, mixup and cutmix "
            "(set dataset.pipeline='streaming')"
        )
    return spec


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
    """Describe the dataset of ``config.dataset`` from its array cache."""
    arrays = load_arrays(config)
    return DatasetInfo(
        name=config.name,
        num_classes=int(arrays["num_classes"]),
        image_shape=_spec(config, arrays).image_shape,
        num_train_examples=len(arrays["train_label"]),
        num_eval_examples=len(arrays["eval_label"]),
        # Caches written before class names were kept have none.
        class_names=tuple(str(name) for name in arrays.get("class_names", ())),
    )


def _to_model_input(images: jax.Array, spec: Preprocessing) -> jax.Array:
    """uint8 (N, h, w, c) → float32 (N, H, W, C) with the model's channels and size."""
    images = images.astype(jnp.float32)
    channels = spec.image_shape[-1]
    if images.shape[-1] != channels:
        if channels == 3:
            images = jnp.repeat(images, 3, axis=-1)
        else:  # ITU-R 601 luma, as tf.image.rgb_to_grayscale
            images = images @ jnp.array([[0.2989], [0.5870], [0.1140]])
    if images.shape[1:3] != spec.image_shape[:2]:
        shape = (images.shape[0], *spec.image_shape)
        images = jax.image.resize(images, shape, method="bilinear", antialias=True)
    return images


def _normalize(images: jax.Array, spec: Preprocessing) -> jax.Array:
    return (images - jnp.array(spec.mean)) / jnp.array(spec.std)


def random_crop(key: jax.Array, image: jax.Array, padding: int, fill: str = "zeros") -> jax.Array:
    """Pad by ``padding`` pixels (zeros, or the edge mirrored with ``fill='reflect'``) and crop
    back to the original size at a uniform offset."""
    height, width, channels = image.shape
    mode = "reflect" if fill == "reflect" else "constant"
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=mode)
    top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """Flip half the images left-right."""
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def random_erasing(key: jax.Array, image: jax.Array, prob: float) -> jax.Array:
    """As :func:`jaxcnn.data.augment.random_erasing`: a noise box, with probability ``prob``."""
    box_key, noise_key = jax.random.split(key)
    height, width = image.shape[:2]
    u = jax.random.uniform(box_key, (5,))
    apply, top, left, box_h, box_w = erase_box(list(u), height, width, prob, jnp)
    rows = jnp.arange(height)[:, None, None]
    cols = jnp.arange(width)[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    noise = jax.random.normal(noise_key, image.shape)
    return jnp.where(inside & apply, noise, image)


def augment_example(key: jax.Array, image: jax.Array, spec: Preprocessing) -> jax.Array:
    """Augment one float image in [0, 255] and normalise it."""
    crop_key, flip_key, erase_key = jax.random.split(key, 3)
    if spec.augment in ("crop", "crop_flip"):
        image = random_crop(crop_key, image, spec.crop_padding, spec.crop_fill)
    if spec.augment in ("flip", "crop_flip"):
        image = random_flip(flip_key, image)
    image = _normalize(image, spec)
    if spec.erase_prob:
        image = random_erasing(erase_key, image, spec.erase_prob)
    return image


def _train_batch(
    images: jax.Array,
    labels: jax.Array,
    step: jax.Array,
    *,
    seed: int,
    spec: Preprocessing,
    batch_size: int,
    start: int,
    count: int,
) -> Batch:
    """Examples ``start : start + count`` of the global batch of ``step``."""
    steps_per_epoch = len(labels) // batch_size
    epoch, batch_in_epoch = step // steps_per_epoch, step % steps_per_epoch
    key = jax.random.key(seed)
    order = jax.random.permutation(
        jax.random.fold_in(jax.random.fold_in(key, _ORDER_STREAM), epoch), len(labels)
    )
    offsets = start + jnp.arange(count)
    indices = order[batch_in_epoch * batch_size + offsets]
    positions = step * batch_size + offsets
    augment_key = jax.random.fold_in(key, _AUGMENT_STREAM)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(augment_key, positions)
    batch_images = _to_model_input(images[indices], spec)
    batch_images = jax.vmap(functools.partial(augment_example, spec=spec))(keys, batch_images)
    return {"image": batch_images, "label": labels[indices]}


def _eval_batch(
    images: jax.Array,
    labels: jax.Array,
    index: jax.Array,
    *,
    spec: Preprocessing,
    part_starts: tuple[int, ...],
    part_sizes: tuple[int, ...],
    local_batch_size: int,
    start: int,
    count: int,
) -> Batch:
    """Examples ``start : start + count`` of eval batch ``index``, in which process ``p`` holds
    positions ``[p * local_batch_size, (p + 1) * local_batch_size)`` of its part; padded."""
    offsets = start + jnp.arange(count)
    part, within = offsets // local_batch_size, offsets % local_batch_size
    position = index * local_batch_size + within
    mask = position < jnp.array(part_sizes)[part]
    indices = jnp.where(mask, jnp.array(part_starts)[part] + position, 0)
    batch_images = _normalize(_to_model_input(images[indices], spec), spec)
    return {
        "image": jnp.where(mask[:, None, None, None], batch_images, 0.0),
        "label": jnp.where(mask, labels[indices], 0),
        "mask": mask,
    }


def first_train_images(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
    """The first ``count`` train images in stored order, preprocessed as for evaluation."""
    arrays = load_arrays(config)
    spec = _spec(config, arrays)
    images = _to_model_input(jnp.asarray(arrays["train_image"][:count]), spec)
    return np.asarray(_normalize(images, spec))


def _placement(
    layout: BatchLayout | None, batch_size: int, process_index: int, process_count: int
) -> tuple[int, int, jax.sharding.Sharding | None]:
    """(first example, number of examples, where the dataset lives) for this layout."""
    local_batch_size = batch_size // process_count
    if layout is None:
        return process_index * local_batch_size, local_batch_size, None
    if layout.size not in (batch_size, local_batch_size):
        raise ValueError(f"layout of {layout.size} examples for batch size {batch_size}")
    start = 0 if layout.size == batch_size else process_index * local_batch_size
    replicated = jax.sharding.NamedSharding(layout.sharding.mesh, jax.sharding.PartitionSpec())
    return start, layout.size, replicated


@functools.lru_cache(maxsize=16)
def _compile(fn: Callable, options: tuple[tuple[str, Any], ...], layout: BatchLayout | None):
    """``fn`` with keyword ``options``, jitted, its outputs laid out as ``layout`` says (cached:
    one compilation per configuration, however many iterators a run creates)."""
    make = functools.partial(fn, **dict(options))
    if layout is None:
        return jax.jit(make)

    def laid_out(*args):
        return {k: v.reshape(*layout.leading, *v.shape[1:]) for k, v in make(*args).items()}

    return jax.jit(laid_out, out_shardings=layout.sharding)


def train_iterator(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    layout: BatchLayout | None = None,
) -> Iterator[Batch]:
    """Endless device batches from ``start_step`` on, of global size ``batch_size``.

    Without ``layout``: this process's share, flat. With it: the examples, shape and sharding
    that ``layout`` gives (the global batch, or this process's share).
    """
    arrays = load_arrays(config)
    spec = _spec(config, arrays)
    num_examples = len(arrays["train_label"])
    if num_examples < batch_size:
        raise UserError(
            f"batch_size={batch_size} exceeds the {num_examples} training examples of "
            f"{config.name!r}"
        )
    start, count, placement = _placement(layout, batch_size, process_index, process_count)
    images = jax.device_put(arrays["train_image"], placement)
    labels = jax.device_put(arrays["train_label"], placement)
    options = dict(seed=seed, spec=spec, batch_size=batch_size, start=start, count=count)
    batch_fn = _compile(_train_batch, tuple(options.items()), layout)
    step = start_step
    while True:
        yield batch_fn(images, labels, step)
        step += 1


def eval_batches(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    layout: BatchLayout | None = None,
) -> EvalBatches:
    """Padded, masked eval batches of global size ``batch_size`` (laid out as in
    :func:`train_iterator`); each process covers a contiguous part of the eval split, as in
    the streaming pipeline."""
    arrays = load_arrays(config)
    spec = _spec(config, arrays)
    num_examples = len(arrays["eval_label"])
    bounds = [num_examples * p // process_count for p in range(process_count + 1)]
    part_sizes = tuple(b - a for a, b in zip(bounds, bounds[1:], strict=False))
    local_batch_size = batch_size // process_count
    num_batches = math.ceil(max(part_sizes) / local_batch_size)
    start, count, placement = _placement(layout, batch_size, process_index, process_count)
    images = jax.device_put(arrays["eval_image"], placement)
    labels = jax.device_put(arrays["eval_label"], placement)
    options = dict(
        spec=spec,
        part_starts=tuple(bounds[:-1]),
        part_sizes=part_sizes,
        local_batch_size=local_batch_size,
        start=start,
        count=count,
    )
    batch_fn = _compile(_eval_batch, tuple(options.items()), layout)

    def one_pass() -> Iterator[Batch]:
        return (batch_fn(images, labels, index) for index in range(num_batches))

    return EvalBatches(one_pass, num_batches)
