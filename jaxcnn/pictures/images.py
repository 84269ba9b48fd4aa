"""Images in and out: image files as model inputs (the eval preprocessing of the run), and
normalised model inputs back as images to draw."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxcnn.data.interface import Preprocessing, resolve_preprocessing
from jaxcnn.errors import UserError
from jaxcnn.training.setup import Setup


def preprocessing(setup: Setup) -> Preprocessing:
    """How the run of ``setup`` turns images into model inputs (size, channels, mean, std)."""
    return resolve_preprocessing(setup.dataset, setup.info.image_shape)


def check_readable(paths: Sequence[str]) -> None:
    """A ``UserError`` naming the first of ``paths`` that is not a readable file."""
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"cannot read image {path!r}: no such file")
        if not os.access(path, os.R_OK):
            raise UserError(f"cannot read image {path!r}: permission denied")


def read_images(paths: Sequence[str]) -> list[Any]:
    """The image files ``paths`` (BMP, GIF, JPEG, PNG) decoded (uint8 HWC tensors, without
    alpha); a ``UserError`` naming the first that cannot be read. Needs no run, so a bad
    file fails at once."""
    check_readable(paths)
    if not paths:
        return []
    import tensorflow as tf

    decoded = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                encoded = f.read()
            image = tf.io.decode_image(encoded, expand_animations=False)
        except OSError as error:
            raise UserError(f"cannot read image {path!r}: {error.strerror}") from None
        except (tf.errors.InvalidArgumentError, ValueError):
            raise UserError(
                f"cannot read image {path!r}: not a BMP, GIF, JPEG or PNG image"
            ) from None
        if image.shape[-1] in (2, 4):  # drop the alpha channel
            image = image[..., : image.shape[-1] - 1]
        decoded.append(image)
    return decoded


def model_inputs(decoded: Sequence[Any], spec: Preprocessing) -> np.ndarray:
    """Decoded images (:func:`read_images`) as a batch of model inputs (N, H, W, C),
    preprocessed as the run's eval split."""
    from jaxcnn.data.streaming import eval_image

    return np.stack([eval_image(image, spec).numpy() for image in decoded])


def to_display(images: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Normalised model inputs (N, H, W, C) back to [0, 1] images: (N, H, W) for grey,
    (N, H, W, 3) for colour."""
    pixels = images * np.asarray(spec.std, np.float32) + np.asarray(spec.mean, np.float32)
    pixels = np.clip(pixels / 255.0, 0.0, 1.0)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels
