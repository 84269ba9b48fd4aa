"""Classifying image files with a trained run, for ``python -m jaxcnn.predict``.

Each file is decoded and preprocessed by the streaming pipeline's own evaluation functions
(:mod:`jaxcnn.data.streaming`'s ``decode_image`` and ``eval_image``) with the run's config:
the dataset's stored channel count (an RGB photo fed to a grey-digit model is made grey, as its
test images were), resizing or resize-and-center-crop, and the run's normalisation; any size,
any channel count. The model runs with the weights the run reports (its moving average where it
kept one) and the run's test-time augmentation. A file that cannot be read or decoded is
reported and skipped; the others are still classified.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jaxcnn.errors import UserError
from jaxcnn.training.step import tta_logits
from jaxcnn.training.trained import TrainedRun

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def find_images(paths: Sequence[str]) -> list[str]:
    """The files named, and the image files (by suffix, case-insensitive) under the folders
    named, recursively, in sorted order. A path that does not exist, or a folder without image
    files, is a :class:`UserError` (a bad argument, before the model is loaded)."""
    if not paths:
        raise UserError("name at least one image file or folder to classify")
    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
        elif os.path.isdir(path):
            inside = [
                os.path.join(folder, name)
                for folder, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(IMAGE_SUFFIXES)
            ]
            if not inside:
                raise UserError(
                    f"folder {path!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            found += sorted(inside)
        else:
            raise UserError(f"{path!r}: no such file or folder")
    return found


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The ``top_k`` classes of one image, most probable first."""

    path: str
    classes: list[int]
    names: list[str]
    probabilities: list[float]

    def as_json(self) -> str:
        """One JSON line: the image and its classes with names and probabilities."""
        top = [
            {"class": c, "name": n, "probability": p}
            for c, n, p in zip(self.classes, self.names, self.probabilities, strict=True)
        ]
        return json.dumps({"image": self.path, "top_k": top})


@dataclasses.dataclass(frozen=True)
class Failure:
    """An image that could not be classified, and why (one line)."""

    path: str
    reason: str


class Predictor:
    """The model of a trained run as a function of image files."""

    def __init__(self, trained: TrainedRun) -> None:
        from jaxcnn.data import streaming

        setup = trained.setup
        source, self._spec = streaming.open_dataset(setup.dataset)
        self._stored_shape = (None, None, source.image_shape[-1])
        self._decode, self._eval_image = streaming.decode_image, streaming.eval_image
        self.info = setup.info
        self._variables = trained.variables(ema=True)
        self._batch_size = setup.config.eval_batch_size
        model, tta = setup.model, setup.config.eval_tta

        def probabilities(variables: Any, images: jax.Array) -> jax.Array:
            def apply(x: jax.Array) -> jax.Array:
                return model.apply(variables, x, train=False)

            return jax.nn.softmax(tta_logits(apply, images, tta))

        self._probabilities = jax.jit(probabilities)

    def load(self, path: str) -> np.ndarray:
        """The model input made of the image file ``path``; ``ValueError`` with the reason
        when it cannot be read or decoded."""
        import tensorflow as tf

        try:
            with open(path, "rb") as f:
                encoded = f.read()
            image = self._decode(tf.constant(encoded), self._stored_shape)
            return self._eval_image(image, self._spec).numpy()
        except OSError as error:
            raise ValueError(f"cannot be read ({error.strerror or error})") from None
        except (tf.errors.OpError, ValueError) as error:
            # Without TF's notes of where the op ran: "{{function_node ...}}", "[Op:...]".
            text = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*", "", str(error)).strip()
            reason = text.splitlines()[0] if text else ""
            raise ValueError(
                f"is not an image that can be decoded (JPEG, PNG, BMP or GIF): "
                f"{type(error).__name__}{': ' + reason[:120] if reason else ''}"
            ) from None

    def predict(self, paths: Sequence[str], top_k: int) -> Iterator[Prediction | Failure]:
        """A :class:`Prediction` or :class:`Failure` for each of ``paths``, in order, computed a
        batch at a time (``eval_batch_size``; the last batch padded, so one compiled shape)."""
        top_k = min(top_k, self.info.num_classes)
        batch_size = min(self._batch_size, len(paths))
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images, results = [], {}
            for path in chunk:
                try:
                    images.append((path, self.load(path)))
                except ValueError as error:
                    results[path] = Failure(path, str(error))
            if images:
                batch = np.zeros((batch_size, *self._spec.image_shape), np.float32)
                batch[: len(images)] = np.stack([image for _, image in images])
                probabilities = np.asarray(self._probabilities(self._variables, batch))
                for (path, _), row in zip(images, probabilities, strict=False):
                    order = np.argsort(-row, kind="stable")[:top_k]
                    results[path] = Prediction(
                        path,
                        [int(c) for c in order],
                        [self.info.class_name(int(c)) for c in order],
                        [float(row[c]) for c in order],
                    )
            for path in chunk:
                yield results[path]


def format_table(predictions: Sequence[Prediction]) -> str:
    """A table: one row per image, one column per rank, ``NAME (PROBABILITY)`` in each."""
    if not predictions:
        return ""
    ranks = len(predictions[0].classes)
    header = ["image", *(f"top-{r + 1}" for r in range(ranks))]
    rows = [
        [p.path, *(f"{n} ({q:.1%})" for n, q in zip(p.names, p.probabilities, strict=True))]
        for p in predictions
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
