"""The device pipeline's array cache from a prepared TFDS image dataset, without TensorFlow.

A machine without TensorFlow cannot run ``python -m jaxcnn.data.export``, and the decoded
CIFAR-10 cache (184 MB of uint8) is too large to carry there, while the JPEG TFRecords that
TFDS prepared (``../shared/datasets/cifar10_jpeg/1.0.0``, 60 MB) fit. This reads those files
directly: the TFRecord framing (length, CRC, payload, CRC; the CRCs are not checked), the
``tf.train.Example`` protobuf (parsed by hand, as bytes and int64 lists) and the images
(decoded with Pillow), and writes the cache that ``jaxcnn/data/device_resident.py`` loads.

Pillow decodes JPEGs with libjpeg's accurate integer DCT, identically to TensorFlow's
``decode_jpeg(dct_method='INTEGER_ACCURATE')``, which the streaming pipeline and
``jaxcnn.data.export`` use too (``streaming.decode_image``), so both pipelines see the same
pixels.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jaxcnn.data.device_resident import write_arrays
from jaxcnn.errors import UserError


def records(path: Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file."""
    with open(path, "rb") as f:
        while header := f.read(12):  # uint64 length, uint32 CRC of the length
            (length,) = struct.unpack("<Q", header[:8])
            yield f.read(length)
            f.read(4)  # CRC of the payload


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at ``buf[i]``."""
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a protobuf message: an int for varints, bytes
    for length-delimited and fixed-size fields."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire_type = key & 7
        if wire_type == 0:
            value, i = _varint(buf, i)
        elif wire_type == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, i = buf[i : i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield key >> 3, value


def parse_example(buf: bytes) -> dict[str, list[bytes] | list[int]]:
    """The bytes and int64 features of a serialised ``tf.train.Example`` (float lists are
    left out)."""
    features = {}
    for _, message in _fields(buf):  # Example.features
        for _, entry in _fields(message):  # Features.feature: map entries (key 1, value 2)
            entry_fields = dict(_fields(entry))
            name = entry_fields[1].decode()
            for kind, values in _fields(entry_fields.get(2, b"")):
                if kind == 1:  # BytesList
                    features[name] = [v for _, v in _fields(values)]
                elif kind == 3:  # Int64List, packed or not
                    features[name] = _int64s(values)
    return features


def _int64s(int64_list: bytes) -> list[int]:
    ints = []
    for _, value in _fields(int64_list):
        if isinstance(value, int):
            ints.append(value)
        else:  # packed
            i = 0
            while i < len(value):
                n, i = _varint(value, i)
                ints.append(n)
    return [n - (1 << 64) if n >= 1 << 63 else n for n in ints]


def read_split(files: list[Path], limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images NHWC, int32 labels) of the examples in ``files``, in stored order; the
    first ``limit`` only, if given."""
    from PIL import Image

    images, labels = [], []
    for path in files:
        for record in records(path):
            example = parse_example(record)
            with Image.open(io.BytesIO(example["image"][0])) as image:
                images.append(np.asarray(image.convert("RGB")))
            labels.append(example["label"][0])
            if len(labels) == limit:
                return np.stack(images), np.asarray(labels, np.int32)
    return np.stack(images), np.asarray(labels, np.int32)


def split_files(dataset_dir: Path, name: str, split: str) -> list[Path]:
    """The TFRecord shards of ``split`` in a TFDS dataset version folder."""
    files = sorted(dataset_dir.glob(f"{name}-{split}.tfrecord-*"))
    if not files:
        raise UserError(f"no TFRecord files for split {split!r} of {name!r} in {dataset_dir}")
    return files


def write_cache(dataset_dir: Path, name: str, splits: tuple[str, str], path: str) -> None:
    """Decode the (train, eval) ``splits`` of the RGB TFDS dataset ``name`` in
    ``dataset_dir`` (a version folder, e.g. ``cifar10_jpeg/1.0.0``) into the cache ``path``."""
    train_image, train_label = read_split(split_files(dataset_dir, name, splits[0]))
    eval_image, eval_label = read_split(split_files(dataset_dir, name, splits[1]))
    labels_file = dataset_dir / "label.labels.txt"  # what TFDS writes for a ClassLabel
    class_names = labels_file.read_text().splitlines() if labels_file.exists() else []
    write_arrays(
        path,
        train_image=train_image,
        train_label=train_label,
        eval_image=eval_image,
        eval_label=eval_label,
        num_classes=len(class_names) or int(train_label.max()) + 1,
        class_names=class_names,
    )
