"""Input pipelines: sources, resumable order, multi-process sharding and eval coverage, for both
the streaming (tf.data) and the device-resident pipeline, on tiny generated datasets."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcnn import data
from jaxcnn.config import base_config
from jaxcnn.data import datasets, device_resident, streaming
from jaxcnn.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA_DIR = os.path.join(REPO, "..", "shared", "datasets")
NUM_TRAIN, NUM_TEST, SIZE = 24, 10, 8


def _id_image(example_id: int) -> np.ndarray:
    """A grey image whose every pixel encodes the example's id (as 3 * id + 3)."""
    return np.full((SIZE, SIZE), 3 * example_id + 3, np.uint8)


def _ids(images: np.ndarray) -> np.ndarray:
    """Example ids back from un-normalised images (the center pixel survives crops)."""
    return (np.rint(np.asarray(images)[..., SIZE // 2, SIZE // 2, 0]).astype(int) - 3) // 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """An ImageFolder: train/ and test/ with two classes of id-encoded PNGs."""
    root = tmp_path_factory.mktemp("folder")
    for split, count in {"train": NUM_TRAIN, "test": NUM_TEST}.items():
        for example in range(count):
            directory = root / split / f"class{example % 2}"
            directory.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_id_image(example)).save(directory / f"{example}.png")
    return str(root)


def _config(**fields):
    config = base_config().dataset
    # Identity normalisation keeps pixel values, so tests can read ids off the images.
    config.update({"mean": (0.0,), "std": (1 / 255,), "augment": "none", "shuffle_buffer": 64})
    config.update(fields)
    return config


def _folder_config(folder: str, **fields):
    return _config(name="image_folder", path=folder, image_size=SIZE, **fields)


@pytest.fixture(scope="module")
def id_arrays(tmp_path_factory) -> str:
    """An array cache of id-encoded images, as the device pipeline reads it."""
    array_dir = str(tmp_path_factory.mktemp("arrays"))
    config = _config(name="ids", array_dir=array_dir)
    train = np.stack([_id_image(i) for i in range(NUM_TRAIN)])[..., None]
    test = np.stack([_id_image(i) for i in range(NUM_TEST)])[..., None]
    np.savez(
        device_resident.array_path(config),
        train_image=train,
        train_label=np.arange(NUM_TRAIN, dtype=np.int32) % 2,
        eval_image=test,
        eval_label=np.arange(NUM_TEST, dtype=np.int32) % 2,
        num_classes=np.int32(2),
    )
    return array_dir


def _train(config, *, batch_size, steps, start_step=0, process_index=0, process_count=1):
    """``steps`` host batches of this process from either pipeline."""
    module = data.pipeline(config)
    batches = module.train_iterator(
        config,
        batch_size=batch_size * process_count,
        seed=0,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
    )
    return [{k: np.asarray(v) for k, v in b.items()} for b in itertools.islice(batches, steps)]


def _eval_ids(config, *, batch_size, process_index, process_count):
    module = data.pipeline(config)
    split = module.eval_batches(
        config,
        batch_size=batch_size * process_count,
        process_index=process_index,
        process_count=process_count,
    )
    batches, num_batches = list(split), len(split)
    assert [b["label"].tolist() for b in split] == [b["label"].tolist() for b in batches]
    assert len(batches) == num_batches
    return [int(i) for b in batches for i in _ids(b["image"])[np.asarray(b["mask"])]]


def _pipeline_config(kind: str, folder: str, id_arrays: str, **fields):
    if kind == "device":
        return _config(name="ids", pipeline="device", array_dir=id_arrays, **fields)
    return _folder_config(folder, **fields)


@pytest.mark.parametrize("kind", ["streaming", "device"])
def test_resumed_stream_continues_the_same_batches(kind, folder, id_arrays):
    config = _pipeline_config(kind, folder, id_arrays, augment="crop_flip", erase_prob=0.5)
    full = _train(config, batch_size=4, steps=8)
    again = _train(config, batch_size=4, steps=8)
    resumed = _train(config, batch_size=4, steps=3, start_step=5)
    for a, b in zip(full, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])  # deterministic for a seed
    for a, b in zip(full[5:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    if kind == "device":  # each epoch visits every example once, in a new order
        plain = _pipeline_config(kind, folder, id_arrays)
        epoch_ids = [_ids(b["image"]) for b in _train(plain, batch_size=4, steps=12)]
        first, second = np.concatenate(epoch_ids[:6]), np.concatenate(epoch_ids[6:])
        assert sorted(first) == sorted(second) == list(range(NUM_TRAIN))
        assert not np.array_equal(first, second)


@pytest.mark.parametrize("kind", ["streaming", "device"])
def test_processes_read_disjoint_train_shards(kind, folder, id_arrays):
    config = _pipeline_config(kind, folder, id_arrays)
    steps_per_epoch = NUM_TRAIN // 2 // 4
    seen = []
    for process in (0, 1):
        batches = _train(
            config, batch_size=4, steps=steps_per_epoch, process_index=process, process_count=2
        )
        ids = np.concatenate([_ids(b["image"]) for b in batches])
        assert len(set(ids)) == len(ids) == NUM_TRAIN // 2  # no repeats within the epoch
        seen.append(set(ids))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(NUM_TRAIN))


@pytest.mark.parametrize("kind", ["streaming", "device"])
def test_eval_covers_each_example_once_across_processes(kind, folder, id_arrays):
    config = _pipeline_config(kind, folder, id_arrays)
    for process_count in (1, 2, 3):
        ids = [
            i
            for process in range(process_count)
            for i in _eval_ids(
                config, batch_size=3, process_index=process, process_count=process_count
            )
        ]
        assert sorted(ids) == list(range(NUM_TEST))


def test_image_folder_channels_resize_and_split_slices(folder):
    config = _folder_config(folder, channels=1, train_split="train[:50%]")
    config.image_size = 12
    info = streaming.dataset_info(config)
    assert info.image_shape == (12, 12, 1)
    assert info.num_classes == 2
    assert info.num_train_examples == NUM_TRAIN // 2
    (batch,) = _train(config, batch_size=4, steps=1)
    assert batch["image"].shape == (4, 12, 12, 1)
    # A constant image stays constant through grey conversion and resizing.
    np.testing.assert_allclose(batch["image"].std(axis=(1, 2, 3)), 0.0, atol=1e-3)


def test_device_pipeline_resizes_and_converts_channels(id_arrays):
    config = _config(name="ids", pipeline="device", array_dir=id_arrays, channels=3)
    config.image_size = 16
    assert device_resident.dataset_info(config).image_shape == (16, 16, 3)
    (batch,) = _train(config, batch_size=4, steps=1)
    assert batch["image"].shape == (4, 16, 16, 3)
    assert batch["image"].dtype == np.float32


def test_tfds_digits_export_and_device_pipeline_agree_on_eval(tmp_path):
    config = _config(name="digits", data_dir=str(tmp_path / "tfds"), array_dir=str(tmp_path))
    config.update(mean=(), std=())  # the preset's statistics
    host = streaming.eval_batches(config, batch_size=120)
    config.pipeline = "device"
    on_device = device_resident.eval_batches(config, batch_size=120)
    for a, b in zip(host, on_device, strict=True):
        np.testing.assert_allclose(a["image"], np.asarray(b["image"]), atol=1e-5)
        np.testing.assert_array_equal(a["label"], np.asarray(b["label"]))
    assert os.path.exists(device_resident.array_path(config))


@pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED_DATA_DIR, "cifar10_jpeg")),
    reason="the prepared cifar10_jpeg copy is not at ../shared/datasets",
)
def test_cifar10_jpeg_by_preset_and_as_tfds_dir():
    by_name = streaming.dataset_info(_config(name="cifar10_jpeg", data_dir=SHARED_DATA_DIR))
    path = os.path.join(SHARED_DATA_DIR, "cifar10_jpeg", "1.0.0")
    by_path = streaming.dataset_info(_config(name="tfds_dir", path=path))
    assert by_name.num_classes == by_path.num_classes == 10
    assert by_name.num_train_examples == by_path.num_train_examples == 50_000
    assert by_name.image_shape == by_path.image_shape == (32, 32, 3)


def test_jpeg_decodes_as_pillow_does_and_png_exactly():
    """The pipeline decodes JPEGs with the accurate DCT (Pillow's pixels, so the streaming and
    device pipelines see the same CIFAR-10; TensorFlow's default differs), PNGs losslessly."""
    import io

    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    for fmt, options in (("JPEG", {"quality": 75}), ("PNG", {})):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, fmt, **options)
        encoded = tf.constant(buffer.getvalue())
        expected = np.asarray(Image.open(buffer))
        decoded = streaming.decode_image(encoded, (32, 32, 3)).numpy()
        np.testing.assert_array_equal(decoded, expected, err_msg=fmt)
        if fmt == "JPEG":
            assert not np.array_equal(tf.io.decode_jpeg(encoded).numpy(), expected)


def test_bad_sources_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_online", lambda: False)
    empty = str(tmp_path)
    cases = {
        ("mnist", ""): ["'mnist'", empty, "tfds build mnist"],
        ("imagenet2012", ""): ["'imagenet2012'", "dataset.manual_dir"],
        ("image_folder", ""): ["dataset.path"],
        ("image_folder", empty): ["SPLIT/CLASS/IMAGE"],
        ("tfds_dir", empty): ["dataset_info.json"],
        ("no_such_dataset", ""): ["'no_such_dataset'", "image_folder"],
    }
    for (name, path), fragments in cases.items():
        with pytest.raises(UserError) as error:
            streaming.dataset_info(_config(name=name, path=path, data_dir=empty))
        message = str(error.value)
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message


def test_bad_fields_fail_in_one_line(folder, id_arrays):
    for fields, fragment in [
        ({"augment": "rotate"}, "crop_flip"),
        ({"channels": 2}, "dataset.channels"),
        ({"train_split": "validation"}, "valid splits: test, train"),
        ({"pipeline": "gpu"}, "streaming"),
    ]:
        with pytest.raises(UserError, match=fragment):
            streaming.dataset_info(_folder_config(folder, **fields))
    config = _config(name="ids", pipeline="device", array_dir=id_arrays, randaugment_layers=2)
    with pytest.raises(UserError, match="streaming pipeline only"):
        device_resident.dataset_info(config)


@pytest.mark.timeout(120)
def test_device_pipeline_runs_without_tensorflow(id_arrays, tmp_path):
    """With TensorFlow unimportable, the device pipeline trains from its cache and, without a
    cache, says how to make one."""
    script = f"""
import sys
sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
import jax.numpy as jnp
from jaxcnn import data
from jaxcnn.config import base_config
from jaxcnn.errors import UserError
from jaxcnn.training.parallel import make_parallel
config = base_config().dataset
config.update(name="ids", pipeline="device", array_dir={id_arrays!r})
shard_batch = make_parallel("jit").shard_batch
batch = next(data.train_batches(config, batch_size=4, seed=0, shard_batch=shard_batch))
assert batch["image"].shape == (4, 8, 8, 1), batch["image"].shape
config.array_dir = {str(tmp_path)!r}
try:
    data.dataset_info(config)
except UserError as error:
    assert "python -m jaxcnn.data.export" in str(error), error
else:
    raise AssertionError("no error without a cache")
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_corrupt_images_in_a_folder_are_named_before_training(tmp_path):
    """A zero-byte and a truncated JPEG: one line naming both, at once, and exit 2 from the
    CLI; with check_images=False the folder opens (the pipeline meets them later)."""
    for split in ("train", "test"):
        for example in range(4):
            directory = tmp_path / split / f"class{example % 2}"
            directory.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_id_image(example)).save(directory / f"{example}.jpg")
    (tmp_path / "train" / "class0" / "empty.jpg").write_bytes(b"")
    good = (tmp_path / "train" / "class1" / "1.jpg").read_bytes()
    (tmp_path / "test" / "class1" / "cut.jpg").write_bytes(good[: len(good) // 3])
    with pytest.raises(UserError) as error:
        streaming.dataset_info(_folder_config(str(tmp_path)))
    message = str(error.value)
    assert "\n" not in message and "2 image(s)" in message
    assert "train/class0/empty.jpg" in message and "test/class1/cut.jpg" in message
    streaming.dataset_info(_folder_config(str(tmp_path), check_images=False))
    from conftest import run_cli

    result = run_cli(
        "jaxcnn.train",
        f"--config={os.path.join(REPO, 'experiments', 'quickstart.py')}",
        f"--workdir={tmp_path / 'run'}",
        "--config.dataset.name=image_folder",
        f"--config.dataset.path={tmp_path}",
        "--config.dataset.image_size=8",
        "--config.dataset.channels=1",
    )
    assert result.returncode == 2 and "cannot be decoded" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
