"""The run's predictions over its eval split: the confusion matrix and the most confidently
misclassified images, in one pass (with the config's test-time augmentation, so the matrix's
accuracy is the one the run reported)."""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any

import jax
import numpy as np

from jaxcnn import data
from jaxcnn.training.setup import Setup
from jaxcnn.training.step import tta_logits


@dataclasses.dataclass(frozen=True)
class Mistake:
    """A misclassified eval image: its model input, true and predicted class, and the
    probability the model gave its prediction."""

    image: np.ndarray
    label: int
    predicted: int
    confidence: float


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """What one pass over the eval split found."""

    confusion: np.ndarray  # (classes, classes): rows true class, columns predicted
    mistakes: list[Mistake]  # the most confident first
    samples: np.ndarray  # the split's first images (model inputs)
    sample_labels: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.confusion.sum()))


def predict_split(
    setup: Setup, variables: Any, num_mistakes: int = 16, num_samples: int = 4
) -> SplitPredictions:
    """Predict every example of the reported eval split with ``variables``; keep the
    confusion counts, the ``num_mistakes`` most confident errors and the first
    ``num_samples`` images."""
    model, tta = setup.model, setup.config.eval_tta

    @jax.jit
    def probabilities(v: Any, images: jax.Array) -> jax.Array:
        logits = tta_logits(lambda x: model.apply(v, x, train=False), images, tta)
        return jax.nn.softmax(logits)

    classes = setup.info.num_classes
    confusion = np.zeros((classes, classes), np.int64)
    worst: list[tuple[float, int, Mistake]] = []  # a min-heap of the most confident errors
    samples, sample_labels = [], []
    batches = data.eval_batches(
        setup.dataset,
        batch_size=setup.config.eval_batch_size,
        shard_batch=setup.parallel.shard_batch,
    )
    seen = 0
    for batch in batches:
        probs = np.asarray(probabilities(variables, batch["image"]))
        mask, labels = np.asarray(batch["mask"]), np.asarray(batch["label"])
        predicted = probs.argmax(axis=1)
        np.add.at(confusion, (labels[mask], predicted[mask]), 1)
        wanted = num_samples - len(samples)
        if wanted > 0:
            images = np.asarray(batch["image"])[mask][:wanted]
            samples.extend(images)
            sample_labels.extend(labels[mask][:wanted])
        for i in np.flatnonzero(mask & (predicted != labels)):
            confidence = float(probs[i, predicted[i]])
            key = (confidence, -(seen + int(i)))  # ties: the earlier example
            if len(worst) < num_mistakes or key > worst[0][:2]:
                mistake = Mistake(
                    np.asarray(batch["image"][i]), int(labels[i]), int(predicted[i]), confidence
                )
                item = (*key, mistake)
                if len(worst) < num_mistakes:
                    heapq.heappush(worst, item)
                else:
                    heapq.heapreplace(worst, item)
        seen += len(labels)
    mistakes = [m for *_, m in sorted(worst, key=lambda item: item[:2], reverse=True)]
    return SplitPredictions(confusion, mistakes, np.stack(samples), np.asarray(sample_labels))


def class_names(setup: Setup) -> list[str]:
    """The dataset's class names (tfds ``features['label'].names``); numbers where it has none
    or cannot be opened here (a device-pipeline run without TensorFlow)."""
    numbers = [str(i) for i in range(setup.info.num_classes)]
    try:
        from jaxcnn.data.streaming import open_dataset

        source, _ = open_dataset(setup.dataset)
        names = list(source.builder.info.features["label"].names)
    except Exception:  # noqa: BLE001 - any failure here only costs the names
        return numbers
    return names if len(names) == len(numbers) else numbers
