"""Input pipelines: dataset presets and sources, streaming (tf.data) and device-resident batches.

``interface.py`` declares what both pipelines provide, ``streaming.py`` and
``device_resident.py`` implement it, and ``batches.py`` chooses one by ``dataset.pipeline`` and
places its batches on the devices. Importing this package does not import TensorFlow: the
device-resident pipeline runs without it.
"""

from jaxcnn.data.batches import (
    dataset_info,
    eval_batches,
    first_train_images,
    pipeline,
    prefetch,
    train_batches,
)
from jaxcnn.data.interface import Batch, DatasetInfo, EvalBatches, Pipeline
from jaxcnn.data.presets import PRESETS, DatasetPreset

__all__ = [
    "PRESETS",
    "Batch",
    "DatasetInfo",
    "DatasetPreset",
    "EvalBatches",
    "Pipeline",
    "dataset_info",
    "eval_batches",
    "first_train_images",
    "pipeline",
    "prefetch",
    "train_batches",
]
