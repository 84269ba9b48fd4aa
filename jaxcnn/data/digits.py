"""The UCI handwritten digits as a TFDS dataset, built offline from scikit-learn's copy.

scikit-learn ships the 1,797 8×8 grey-level digits (Alpaydin & Kaynak, UCI ML repository)
inside its package, so this builder prepares without any network access. It exists so that the
offline quickstart runs through the same tfds → tf.data → device path as every other dataset.

Pixels, 0..16 in the source, are scaled to 0..255. The test split is every fifth example
(index % 5 == 0, 360 images), the train split the other 1,437.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

_TEST_EVERY = 5


class Digits(tfds.core.GeneratorBasedBuilder):
    """UCI optical recognition of handwritten digits (8×8, 10 classes)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release, built from scikit-learn's bundled copy."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        labels = digits.target.astype(np.int64)
        is_test = np.arange(len(labels)) % _TEST_EVERY == 0
        return {
            "train": self._generate_examples(images[~is_test], labels[~is_test]),
            "test": self._generate_examples(images[is_test], labels[is_test]),
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": image, "label": label}
