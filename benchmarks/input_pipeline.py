"""Input-pipeline throughput against what a train step consumes.

    python -m benchmarks.input_pipeline [--batches 100] [--data_dir ../shared/datasets]

Prints images/s for: the CIFAR-10 training pipeline with crop + flip, streaming (tf.data on
``cifar10_jpeg``) and device-resident (arrays cached once under a temporary directory); an
ImageNet-style streaming pipeline (JPEG decode + random-resized crop to 224 + flip) on generated
JPEGs in a temporary ImageFolder; and the ResNet-20 train step (batch 128) on this machine, with
the ratio of each pipeline to that step. On a shared machine, compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
from PIL import Image

from jaxcnn import cli
from jaxcnn.config import base_config
from jaxcnn.data import DatasetInfo, device_resident
from jaxcnn.training.setup import build_setup

BATCH = 128


def images_per_sec(batches: Iterator, batch_size: int, num_batches: int, warmup: int = 10):
    """Throughput of ``num_batches`` batches after ``warmup`` (waiting for device arrays)."""
    for batch in itertools.islice(batches, warmup):
        jax.block_until_ready(batch)
    start = time.perf_counter()
    for batch in itertools.islice(batches, num_batches):
        jax.block_until_ready(batch)
    return num_batches * batch_size / (time.perf_counter() - start)


def cifar_config(data_dir: str, array_dir: str):
    config = base_config().dataset
    config.update(name="cifar10_jpeg", data_dir=data_dir, array_dir=array_dir)
    return config


def write_jpeg_folder(root: str, count: int) -> None:
    """``count`` random 400×350 JPEGs in two classes, as ``root/train/CLASS/i.jpg``."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = os.path.join(root, "train", f"class{i % 2}")
        os.makedirs(folder, exist_ok=True)
        # Smooth random images compress like photos, unlike white noise.
        small = rng.integers(0, 255, (25, 22, 3), np.uint8)
        Image.fromarray(small).resize((400, 350), Image.BILINEAR).save(
            os.path.join(folder, f"{i}.jpg"), quality=90
        )


def resnet20_step_rate(num_batches: int) -> float:
    """Images/s of jaxcnn's ResNet-20 train step at batch 128 on CIFAR-sized inputs, built as
    the training CLI builds it."""
    config = base_config()
    config.model.name, config.batch_size = "resnet20", BATCH
    setup = build_setup(config, info=DatasetInfo("generated", 10, (32, 32, 3), 50_000, 10_000))
    parallel = setup.parallel
    state = parallel.init(setup.init_fn())
    train_step = parallel.compile_train(setup.train_step())
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch(
        {
            "image": rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32),
            "label": rng.integers(0, 10, BATCH).astype(np.int32),
        }
    )

    def steps() -> Iterator:
        nonlocal state
        while True:
            state, metrics = train_step(state, batch)
            yield metrics

    return images_per_sec(steps(), BATCH, num_batches, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.input_pipeline", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--data_dir", default="../shared/datasets")
    args = parser.parse_args()
    # tf.data loads with the pipeline: as quiet as in training, and not for --help.
    cli.quiet_tensorflow()
    from jaxcnn.data import streaming

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cifar = cifar_config(args.data_dir, tmp)
        benches: list[tuple[str, Callable[[], float]]] = [
            (
                "CIFAR-10 streaming (cifar10_jpeg, crop+flip)",
                lambda: images_per_sec(
                    streaming.train_iterator(cifar, batch_size=BATCH, seed=0), BATCH, args.batches
                ),
            ),
            (
                "CIFAR-10 device-resident (crop+flip, in jit)",
                lambda: images_per_sec(
                    device_resident.train_iterator(cifar, batch_size=BATCH, seed=0),
                    BATCH,
                    args.batches,
                ),
            ),
        ]
        folder = os.path.join(tmp, "jpegs")
        write_jpeg_folder(folder, 256)
        imagenet = base_config().dataset
        imagenet.update(name="image_folder", path=folder, image_size=224, augment="inception_crop")
        imagenet.eval_split = "train"
        benches.append(
            (
                "ImageNet-style streaming (JPEG 400x350 -> RRC 224, flip)",
                lambda: images_per_sec(
                    streaming.train_iterator(imagenet, batch_size=32, seed=0),
                    32,
                    max(1, args.batches // 4),
                ),
            )
        )
        step_batches = max(5, args.batches // 10)
        benches.append(
            ("ResNet-20 train step, batch 128 (consumer)", lambda: resnet20_step_rate(step_batches))
        )
        for name, bench in benches:
            rows.append((name, bench()))

    step_rate = rows[-1][1]
    print(f"\n{jax.devices()[0].platform} x{jax.device_count()}, {os.cpu_count()} CPU cores")
    print(f"{'pipeline':<60} {'images/s':>10} {'x step':>8}")
    for name, rate in rows:
        print(f"{name:<60} {rate:>10,.0f} {rate / step_rate:>8.1f}")


if __name__ == "__main__":
    main()
