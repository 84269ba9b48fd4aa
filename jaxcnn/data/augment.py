"""Per-example training augmentations for tf.data, stateless: each example's randomness comes
from a seed made of (seed, example index), so a resumed run augments every later example exactly
as before.

Images are float32 HWC in [0, 255] except for :func:`random_erasing`, which works on normalised
images (as it fills with unit-normal noise). The device-resident pipeline implements the same
distributions in JAX (:mod:`jaxcnn.data.device_resident`); ``tests/test_augment.py`` checks
that they agree.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import tensorflow as tf

from jaxcnn.data.boxes import erase_box
from jaxcnn.data.interface import AUGMENTS
from jaxcnn.errors import unknown_choice

Augment = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
# The functions of jax.numpy that jaxcnn.data.boxes uses, in TensorFlow.
_TF_MATH = types.SimpleNamespace(
    exp=tf.exp, sqrt=tf.sqrt, round=tf.round, floor=tf.floor, clip=tf.clip_by_value
)

# Inception-style crops: the fraction of the image area and the aspect-ratio range they sample.
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
EVAL_CROP_FRACTION = 0.875  # center crop of 224 out of a 256 resize
# libjpeg's accurate integer DCT, as Pillow decodes; TensorFlow defaults to the fast one.
ACCURATE_DCT = "INTEGER_ACCURATE"


def _split(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def random_crop(image: tf.Tensor, seed: tf.Tensor, padding: int, fill: str = "zeros") -> tf.Tensor:
    """Pad by ``padding`` pixels (zeros, or the edge mirrored with ``fill='reflect'``) and crop
    back to the original size at a uniform offset."""
    mode = "REFLECT" if fill == "reflect" else "CONSTANT"
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]], mode=mode)
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip half the images left-right."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)


def random_crop_flip(
    image: tf.Tensor, seed: tf.Tensor, padding: int, fill: str = "zeros"
) -> tf.Tensor:
    """:func:`random_crop`, then :func:`random_flip`."""
    crop_seed, flip_seed = _split(seed, 2)
    return random_flip(random_crop(image, crop_seed, padding, fill), flip_seed)


def get_augment(name: str, *, crop_padding: int, crop_fill: str = "zeros") -> Augment | None:
    """The geometric augmentation ``name`` on a decoded image (None when there is none to do
    there: 'none', and 'inception_crop', which crops while decoding)."""
    choices: dict[str, Augment | None] = {
        "none": None,
        "flip": random_flip,
        "crop": lambda image, seed: random_crop(image, seed, crop_padding, crop_fill),
        "crop_flip": lambda image, seed: random_crop_flip(image, seed, crop_padding, crop_fill),
        "inception_crop": random_flip,
    }
    if name not in choices:
        raise unknown_choice("dataset.augment", name, AUGMENTS)
    return choices[name]


def decode_random_resized_crop(encoded: tf.Tensor, seed: tf.Tensor, channels: int) -> tf.Tensor:
    """Decode a random crop covering 8%–100% of the area at aspect ratio 3/4–4/3 (uint8).

    JPEGs decode only the cropped window, which is what makes ImageNet pipelines fast.
    """

    def crop_window(shape: tf.Tensor) -> tf.Tensor:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed,
            area_range=CROP_AREA,
            aspect_ratio_range=CROP_ASPECT,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return tf.stack([begin[0], begin[1], size[0], size[1]])

    def from_jpeg() -> tf.Tensor:
        window = crop_window(tf.image.extract_jpeg_shape(encoded))
        return tf.image.decode_and_crop_jpeg(
            encoded, window, channels=channels, dct_method=ACCURATE_DCT
        )

    def from_other() -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        window = crop_window(tf.shape(image))
        return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], -1])

    image = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other)
    return tf.ensure_shape(image, [None, None, channels])


def resize_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize the shorter side to ``size / 0.875``, then take the central ``size``² crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / EVAL_CROP_FRACTION / tf.reduce_min(shape)
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_shape, method="bilinear", antialias=True)
    top, left = (new_shape[0] - size) // 2, (new_shape[1] - size) // 2
    return tf.slice(image, [top, left, 0], [size, size, -1])


def random_erasing(image: tf.Tensor, seed: tf.Tensor, prob: float) -> tf.Tensor:
    """With probability ``prob``, replace a random box (2%–33% of the area, aspect ratio
    0.3–3.3, clipped to the image) of a normalised image with unit-normal noise."""
    box_seed, noise_seed = _split(seed, 2)
    height, width = image.shape[0], image.shape[1]
    u = tf.unstack(tf.random.stateless_uniform([5], box_seed))
    apply, top, left, box_h, box_w = erase_box(u, height, width, prob, _TF_MATH)
    rows = tf.range(height, dtype=tf.float32)[:, None, None]
    cols = tf.range(width, dtype=tf.float32)[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    noise = tf.random.stateless_normal(tf.shape(image), noise_seed)
    return tf.where(inside & apply, noise, image)
