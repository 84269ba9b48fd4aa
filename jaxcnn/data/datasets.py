"""Where examples come from: TFDS datasets by name, a user's image folders, a user's prepared TFDS
directory, each failing fast with one line when the data is not there.

``config.dataset.name`` selects the source:

- a preset (:mod:`jaxcnn.data.presets`) or any TFDS name, prepared under ``data_dir``; datasets
  that TFDS builds from manually downloaded archives (``imagenet2012``) read them from
  ``manual_dir``;
- ``image_folder``: ``path`` holds ``SPLIT/CLASS/IMAGE`` files, read with
  ``tfds.folder_dataset.ImageFolder``;
- ``tfds_dir``: ``path`` is a prepared TFDS dataset directory (``.../NAME/VERSION``, as written by
  ``tfds build``), read with ``tfds.builder_from_directory``.

Every source reads the same way: :meth:`Source.read` gives part ``i`` of ``n`` (tfds even splits
of any split string such as ``train[:90%]``) as encoded images and labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import socket

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxcnn.data import digits  # noqa: F401  (registers the offline 'digits' builder)
from jaxcnn.data.presets import PRESETS, get_preset
from jaxcnn.errors import UserError

IMAGE_FOLDER = "image_folder"
TFDS_DIR = "tfds_dir"

# Builders whose preparation needs no download.
_OFFLINE_BUILDABLE = {"digits"}
_DOWNLOAD_HOST = "storage.googleapis.com"


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset ready to read: its TFDS builder (whose ``info`` describes features and splits)."""

    builder: tfds.core.DatasetBuilder

    @property
    def image_shape(self) -> tuple[int | None, int | None, int]:
        height, width, channels = self.builder.info.features["image"].shape
        return height, width, channels or 3

    @property
    def num_classes(self) -> int:
        return self.builder.info.features["label"].num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """The label's names by class id (tfds gives '0', '1', ... where a dataset has none)."""
        return tuple(self.builder.info.features["label"].names)

    def part_sizes(self, split: str, num_parts: int) -> list[int]:
        """Example counts of the ``num_parts`` even parts of ``split``."""
        splits = self.builder.info.splits
        return [splits[part].num_examples for part in tfds.even_splits(split, num_parts)]

    def read(
        self, split: str, *, part: int = 0, num_parts: int = 1, shuffle_seed: int | None = None
    ) -> tf.data.Dataset:
        """Part ``part`` of ``num_parts`` of ``split``: ``{'image': encoded bytes, 'label'}``.

        The order is fixed, except that ``shuffle_seed`` shuffles the order of files.
        """
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_optimization.map_parallelization = True
        subsplit = tfds.even_splits(split, num_parts)[part]
        skip_decoding = {"image": tfds.decode.SkipDecoding()}
        if isinstance(self.builder, tfds.folder_dataset.ImageFolder):
            # ImageFolder reads whole splits only (and shuffles them unseeded): slice it here.
            (instruction,) = self.builder.info.splits[subsplit].file_instructions
            ds = self.builder.as_dataset(split.partition("[")[0], decoders=skip_decoding)
            ds = ds.skip(instruction.skip).take(instruction.take).with_options(options)
        else:
            ds = self.builder.as_dataset(
                split=subsplit,
                shuffle_files=shuffle_seed is not None,
                read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options),
                decoders=skip_decoding,
            )
        return ds.map(lambda example: {"image": example["image"], "label": example["label"]})

    def check_split(self, key: str, split: str) -> None:
        """Raise a one-line error if ``split`` (``dataset.<key>``) is not a split of the data."""
        splits = self.builder.info.splits
        try:
            splits[split]
        except (KeyError, ValueError, AssertionError):
            raise UserError(
                f"dataset.{key} {split!r} is not a split of {self.builder.name!r}; valid splits: "
                f"{', '.join(sorted(splits))} (slices like 'train[:90%]' work too)"
            ) from None


def _online() -> bool:
    """Whether downloads could work: a name lookup fails at once on a machine without network."""
    try:
        socket.getaddrinfo(_DOWNLOAD_HOST, 443)
    except OSError:
        return False
    return True


def _data_dir_root(builder: tfds.core.DatasetBuilder) -> str:
    # builder.data_dir is ROOT/NAME/VERSION (or ROOT/NAME/CONFIG/VERSION).
    path = builder.data_dir
    depth = 3 if builder.builder_config else 2
    for _ in range(depth):
        path = os.path.dirname(path)
    return path


def _require_directory(field: str, path: str, what: str) -> str:
    path = os.path.expanduser(path)
    if not path:
        raise UserError(f"dataset.{field} is empty; set it to {what}")
    if not os.path.isdir(path):
        raise UserError(f"dataset.{field} {path!r} is not a directory; set it to {what}")
    return path


def _image_folder(path: str, check_images: bool) -> tfds.core.DatasetBuilder:
    root = _require_directory("path", path, "a folder of SPLIT/CLASS/IMAGE files")
    builder = tfds.folder_dataset.ImageFolder(root)
    if not builder.info.splits:
        raise UserError(
            f"dataset.path {root!r} has no SPLIT/CLASS/IMAGE files (e.g. train/cat/1.jpg); "
            "image_folder expects one folder per split holding one folder per class"
        )
    if check_images:
        _check_images(os.path.abspath(root), os.path.getmtime(root))
    return builder


@functools.lru_cache(maxsize=8)
def _check_images(root: str, mtime: float) -> None:
    """Decode every image under ``root`` once per process (``mtime`` renews the cache); raise a
    one-line :class:`UserError` naming the files that do not decode, before any training."""
    from PIL import Image

    bad = []
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                with Image.open(path) as image:
                    image.load()
            except Exception as error:  # PIL raises OSError, SyntaxError, ValueError...
                bad.append(f"{os.path.relpath(path, root)} ({type(error).__name__})")
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UserError(
            f"{len(bad)} image(s) under dataset.path {root!r} cannot be decoded: {shown}. "
            "Remove or replace them (or set dataset.check_images=False to find out when read)"
        )


def _tfds_dir(path: str) -> tfds.core.DatasetBuilder:
    directory = _require_directory("path", path, "a prepared TFDS dataset directory")
    if not os.path.isfile(os.path.join(directory, "dataset_info.json")):
        raise UserError(
            f"dataset.path {directory!r} is not a prepared TFDS dataset (no dataset_info.json); "
            "give the version directory written by `tfds build`, e.g. DATA_DIR/NAME/1.0.0"
        )
    return tfds.builder_from_directory(directory)


def _tfds_builder(name: str, data_dir: str, manual_dir: str) -> tfds.core.DatasetBuilder:
    """The builder of TFDS dataset ``name``, preparing it when that can work."""
    if data_dir and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f"dataset.data_dir {data_dir!r} is not a directory")
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
        where = data_dir or os.environ.get("TFDS_DATA_DIR") or "the default TFDS data dir"
        raise UserError(
            f"unknown dataset {name!r}: not a TFDS dataset and not prepared in {where}; presets: "
            f"{', '.join(sorted(PRESETS))}, or {IMAGE_FOLDER} / {TFDS_DIR} with dataset.path "
            "(or any TFDS image-classification dataset)"
        ) from None
    if builder.is_prepared():
        return builder
    root = _data_dir_root(builder)
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        return _prepare_from_manual_dir(builder, manual_dir, root)
    if name not in _OFFLINE_BUILDABLE and not _online():
        raise UserError(
            f"dataset {name!r} is not prepared in {root} and this machine has no network to "
            f"download it; run `tfds build {name} --data_dir DIR` where there is network and set "
            "dataset.data_dir (or TFDS_DATA_DIR) to DIR"
        )
    _quietly_prepare(builder, root)
    return builder


def _quietly_prepare(builder: tfds.core.DatasetBuilder, root: str, **kwargs) -> None:
    """``builder.download_and_prepare`` with one line of ours in place of tfds's banner and
    progress bars (which write terminal escape codes into logs)."""
    print(f"Preparing dataset {builder.name!r} in {root} (once)...", flush=True)
    tfds.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(**kwargs)
    finally:
        tfds.enable_progress_bar()


def _prepare_from_manual_dir(
    builder: tfds.core.DatasetBuilder, manual_dir: str, root: str
) -> tfds.core.DatasetBuilder:
    """Prepare a dataset whose archives the user downloaded by hand (e.g. imagenet2012)."""
    name = builder.name
    how = (
        f"download its archives by hand (see `tfds build {name}` or the TFDS catalog page of "
        f"{name!r}) into a folder and set dataset.manual_dir to it"
    )
    if not manual_dir:
        raise UserError(f"dataset {name!r} is not prepared in {root}; {how}")
    manual_dir = os.path.expanduser(manual_dir)
    if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
        raise UserError(
            f"dataset.manual_dir {manual_dir!r} is missing or empty, so {name!r} cannot be "
            f"prepared in {root}; {how}"
        )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    try:
        _quietly_prepare(builder, root, download_config=config)
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"cannot prepare {name!r} from {manual_dir}: {reason}") from None
    return builder


def open_source(config: ml_collections.ConfigDict) -> Source:
    """The source that ``config`` (``config.dataset``) names, ready to read."""
    if config.name == IMAGE_FOLDER:
        return Source(_image_folder(config.path, config.check_images))
    if config.name == TFDS_DIR:
        return Source(_tfds_dir(config.path))
    preset = get_preset(config.name)
    name = preset.tfds_name if preset else config.name
    return Source(_tfds_builder(name, config.data_dir, config.manual_dir))
