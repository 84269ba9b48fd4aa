"""Augmentations: each one's distribution, and agreement between the TensorFlow (streaming) and
JAX (device-resident) implementations, measured on batches of a few thousand tiny images."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from jaxcnn.data import augment, device_resident, randaugment
from jaxcnn.data.boxes import ERASE_AREA
from jaxcnn.data.mix import mix_batch

SIZE, PADDING, N = 16, 4, 2000


def _position_image() -> np.ndarray:
    """Pixel value = 1 + row * SIZE + column, so a crop's offset and flip can be read back."""
    return (1 + np.arange(SIZE * SIZE, dtype=np.float32)).reshape(SIZE, SIZE, 1)


def _offsets_and_flips(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row offset, column offset, flipped) in padded coordinates, from the center pixels."""
    c = SIZE // 2
    value = images[:, c, c, 0].astype(int) - 1
    flipped = images[:, c, c + 1, 0] < images[:, c, c, 0]
    row, col = value // SIZE, value % SIZE
    dy = row - c + PADDING
    dx = np.where(flipped, col - (SIZE - 1 - c), col - c) + PADDING
    return dy, dx, flipped


def _tf_batch(fn) -> np.ndarray:
    image = tf.constant(_position_image())
    ds = tf.data.Dataset.range(N).map(lambda i: fn(image, tf.stack([tf.constant(0, tf.int64), i])))
    return next(ds.batch(N).as_numpy_iterator())


def _jax_batch(fn) -> np.ndarray:
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(0), jnp.arange(N))
    image = jnp.asarray(_position_image())
    return np.asarray(jax.jit(jax.vmap(lambda key: fn(key, image)))(keys))


def _device_crop_flip(key, image):
    crop_key, flip_key = jax.random.split(key)
    return device_resident.random_flip(
        flip_key, device_resident.random_crop(crop_key, image, PADDING)
    )


@pytest.mark.parametrize("implementation", ["tensorflow", "jax"])
def test_crop_offsets_cover_the_padded_range_and_half_are_flipped(implementation):
    if implementation == "tensorflow":
        images = _tf_batch(lambda image, seed: augment.random_crop_flip(image, seed, PADDING))
    else:
        images = _jax_batch(_device_crop_flip)
    dy, dx, flipped = _offsets_and_flips(images)
    for offsets in (dy, dx):
        counts = np.bincount(offsets, minlength=2 * PADDING + 1)
        assert len(counts) == 2 * PADDING + 1  # never outside [0, 2 * padding]
        expected = N / (2 * PADDING + 1)
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))  # ~uniform
    assert abs(flipped.mean() - 0.5) < 0.05


def _erased(images: np.ndarray) -> np.ndarray:
    """Per-image erased fraction: noise replaces the (non-zero, integer) pixel values."""
    original = _position_image()[None]
    return (images != original).mean(axis=(1, 2, 3))


def test_random_erasing_agrees_between_tensorflow_and_jax():
    prob = 0.6
    tf_fraction = _erased(_tf_batch(lambda image, seed: augment.random_erasing(image, seed, prob)))
    jax_fraction = _erased(
        _jax_batch(lambda key, image: device_resident.random_erasing(key, image, prob))
    )
    for fraction in (tf_fraction, jax_fraction):
        erased = fraction[fraction > 0]
        assert abs(len(erased) / N - prob) < 0.05
        assert erased.min() >= 1 / SIZE**2 and erased.max() <= ERASE_AREA[1] * 1.5
    tf_area, jax_area = tf_fraction[tf_fraction > 0], jax_fraction[jax_fraction > 0]
    assert abs(tf_area.mean() - jax_area.mean()) < 0.02


def _jpeg(height: int, width: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_random_resized_crop_samples_area_and_aspect_ranges():
    encoded = tf.constant(_jpeg(96, 128))
    shapes = np.array(
        [
            augment.decode_random_resized_crop(encoded, tf.constant([0, i], tf.int64), 3).shape
            for i in range(200)
        ]
    )
    area = shapes[:, 0] * shapes[:, 1] / (96 * 128)
    aspect = shapes[:, 1] / shapes[:, 0]
    assert area.min() >= 0.07 and area.max() <= 1.0 and area.std() > 0.1
    assert aspect.min() >= 0.7 and aspect.max() <= 1.4
    assert np.all(shapes[:, 2] == 3)


def test_eval_center_crop_is_deterministic_and_square():
    image = tf.io.decode_jpeg(_jpeg(96, 128))
    first = augment.resize_center_crop(tf.cast(image, tf.float32), 64)
    second = augment.resize_center_crop(tf.cast(image, tf.float32), 64)
    assert first.shape == (64, 64, 3)
    np.testing.assert_array_equal(first.numpy(), second.numpy())


def test_randaugment_operations_keep_shape_and_range():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32))
    changed = 0
    for name, op in randaugment.OPS.items():
        out = op(image, tf.constant(0.5)).numpy()
        assert out.shape == image.shape, name
        assert out.min() >= 0.0 and out.max() <= 255.0, name
        changed += not np.allclose(out, image.numpy())
    assert changed == len(randaugment.OPS) - 1  # all but identity change the image

    def run(seed):
        seed = tf.constant(seed, tf.int64)
        return randaugment.rand_augment(image, seed, num_layers=2, magnitude=9).numpy()

    np.testing.assert_array_equal(run([0, 1]), run([0, 1]))  # stateless
    assert not np.array_equal(run([0, 1]), run([0, 2]))


@pytest.mark.parametrize("mixup_alpha,cutmix_alpha", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixing_weights_labels_by_the_share_of_pixels(mixup_alpha, cutmix_alpha):
    # Image i is constant i % 2, label i % 2: a mixed image's mean is its partner's weight.
    size, classes = 512, 2
    labels = jnp.arange(size) % 2
    images = jnp.broadcast_to(labels[:, None, None, None], (size, 8, 8, 3)).astype(jnp.float32)
    batch = {"image": images, "label": labels}
    mixed = mix_batch(
        batch,
        jax.random.key(1),
        num_classes=classes,
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
    )
    soft = np.asarray(mixed["label"])
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    share_of_ones = np.asarray(mixed["image"]).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(soft[:, 1], share_of_ones, atol=1e-5)
    own = soft[np.arange(size), np.asarray(labels)]
    assert own.min() >= 0.0 and own.max() <= 1.0 and own.std() > 0.05  # varies per pair
