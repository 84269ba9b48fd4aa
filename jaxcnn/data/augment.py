"""Training augmentations for tf.data, stateless: each example's randomness comes from
(seed, example index), so a resumed run augments every later example exactly as before."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from jaxcnn.errors import unknown_choice

Augment = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def random_crop_flip(image: tf.Tensor, seed: tf.Tensor, padding: int) -> tf.Tensor:
    """Zero-pad by ``padding`` pixels, crop back to the original size, flip half the images."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip half the images left-right."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def get_augment(name: str, *, crop_padding: int) -> Augment | None:
    """The augmentation called ``name`` (None for 'none'): ``fn(image, seed) -> image``."""
    choices: dict[str, Augment | None] = {
        "none": None,
        "flip": random_flip,
        "crop_flip": lambda image, seed: random_crop_flip(image, seed, crop_padding),
    }
    if name not in choices:
        raise unknown_choice("dataset.augment", name, choices)
    return choices[name]
