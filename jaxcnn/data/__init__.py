"""Input pipelines: dataset presets, tfds → tf.data iterators for training and evaluation."""

from jaxcnn.data.datasets import PRESETS, DatasetPreset, prepared_builder
from jaxcnn.data.pipeline import DatasetInfo, dataset_info, eval_iterator, train_iterator

__all__ = [
    "PRESETS",
    "DatasetInfo",
    "DatasetPreset",
    "dataset_info",
    "eval_iterator",
    "prepared_builder",
    "train_iterator",
]
