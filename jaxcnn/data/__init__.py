"""Input pipelines: dataset presets and sources, streaming (tf.data) and device-resident batches.

Importing this package does not import TensorFlow: the device-resident pipeline runs without it.
The streaming pipeline's host iterators (``train_iterator``, ``eval_iterator``) load it on use.
"""

from jaxcnn.data.batches import (
    dataset_info,
    eval_batches,
    first_train_images,
    prefetch,
    train_batches,
)
from jaxcnn.data.presets import PRESETS, DatasetPreset
from jaxcnn.data.spec import DatasetInfo

__all__ = [
    "PRESETS",
    "DatasetInfo",
    "DatasetPreset",
    "dataset_info",
    "eval_batches",
    "eval_iterator",
    "first_train_images",
    "prefetch",
    "train_batches",
    "train_iterator",
]


def __getattr__(name: str):
    if name in ("train_iterator", "eval_iterator"):
        from jaxcnn.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
