"""RandAugment (Cubuk et al., 2020) for tf.data, stateless.

Each image gets ``num_layers`` operations drawn uniformly from :data:`OPS`, all at one magnitude
``magnitude`` on a 0–10 scale; geometric and enhancement operations take a random sign. Images
are float32 HWC in [0, 255]; pixels that geometric operations uncover are filled with grey (128).
Histogram equalisation, in the paper's list, is left out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tensorflow as tf

MAX_MAGNITUDE = 10.0
_FILL = 128.0


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grey(image: tf.Tensor) -> tf.Tensor:
    if image.shape[-1] == 1:
        return image
    return tf.broadcast_to(tf.image.rgb_to_grayscale(image), tf.shape(image))


def _affine(image: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """Warp with ``matrix`` (3×3, output pixel → input pixel, in pixel coordinates)."""
    transform = tf.reshape(matrix, [9])[:8][None]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=_FILL,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]


def _about_center(image: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    height, width = float(image.shape[0]), float(image.shape[1])
    cy, cx = (height - 1) / 2, (width - 1) / 2
    to_center = tf.constant([[1.0, 0, cx], [0, 1, cy], [0, 0, 1]])
    from_center = tf.constant([[1.0, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    return _affine(image, to_center @ matrix @ from_center)


def _rotate(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    angle = level * 30.0 * 3.141592653589793 / 180.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    return _about_center(image, tf.stack([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]]))


def _shear_x(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    return _about_center(image, tf.stack([[1.0, level * 0.3, 0.0], [0.0, 1.0, 0.0], [0, 0, 1.0]]))


def _shear_y(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    return _about_center(image, tf.stack([[1.0, 0.0, 0.0], [level * 0.3, 1.0, 0.0], [0, 0, 1.0]]))


def _translate_x(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    shift = level * 0.45 * image.shape[1]
    return _affine(image, tf.stack([[1.0, 0.0, shift], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def _translate_y(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    shift = level * 0.45 * image.shape[0]
    return _affine(image, tf.stack([[1.0, 0.0, 0.0], [0.0, 1.0, shift], [0.0, 0.0, 1.0]]))


def _auto_contrast(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    del level
    low = tf.reduce_min(image, axis=(0, 1), keepdims=True)
    high = tf.reduce_max(image, axis=(0, 1), keepdims=True)
    scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1e-3), 1.0)
    return tf.clip_by_value(tf.where(high > low, (image - low) * scale, image), 0.0, 255.0)


def _solarize(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    threshold = 256.0 - tf.abs(level) * 256.0
    return tf.where(image < threshold, image, 255.0 - image)


def _posterize(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    shift = tf.round(tf.abs(level) * 4.0)  # keep 8 - shift bits
    step = tf.pow(2.0, shift)
    return tf.floor(image / step) * step


def _color(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    return _blend(_grey(image), image, 1.0 + 0.9 * level)


def _contrast(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    return _blend(tf.reduce_mean(_grey(image)), image, 1.0 + 0.9 * level)


def _brightness(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    return _blend(tf.zeros_like(image), image, 1.0 + 0.9 * level)


def _sharpness(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    kernel = tf.constant([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13.0
    channels = image.shape[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "SAME")[0]
    return _blend(smooth, image, 1.0 + 0.9 * level)


def _identity(image: tf.Tensor, level: tf.Tensor) -> tf.Tensor:
    del level
    return image


OPS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "identity": _identity,
    "auto_contrast": _auto_contrast,
    "rotate": _rotate,
    "solarize": _solarize,
    "color": _color,
    "posterize": _posterize,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}


def rand_augment(
    image: tf.Tensor, seed: tf.Tensor, *, num_layers: int, magnitude: float
) -> tf.Tensor:
    """Apply ``num_layers`` random operations of :data:`OPS` at ``magnitude`` (0–10)."""
    ops = list(OPS.values())
    choice_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    choices = tf.random.stateless_uniform([num_layers], choice_seed, 0, len(ops), tf.int32)
    signs = tf.where(tf.random.stateless_uniform([num_layers], sign_seed) < 0.5, -1.0, 1.0)
    for layer in range(num_layers):
        level = signs[layer] * magnitude / MAX_MAGNITUDE
        branches = [functools.partial(op, image, level) for op in ops]
        image = tf.ensure_shape(tf.switch_case(choices[layer], branches), image.shape)
    return image
