"""Device batches for the training loop, from either pipeline (``dataset.pipeline``).

``streaming`` (:mod:`jaxcnn.data.pipeline`) decodes and augments with tf.data on the host and
copies each batch to the devices a few batches ahead; ``device`` (:mod:`jaxcnn.data.device`)
keeps the dataset in accelerator memory and builds each batch there, needing no TensorFlow.
Both give the same augmentations, the same stateless per-step order, and mix batches
(:mod:`jaxcnn.data.mix`) on the device. TensorFlow is imported only for the streaming pipeline.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcnn.data import device
from jaxcnn.data.mix import mix_batch
from jaxcnn.data.spec import DatasetInfo
from jaxcnn.errors import UserError

Batch = dict[str, jax.Array]
ShardBatch = Callable[[dict[str, np.ndarray]], Batch]
_MIX_STREAM = 2


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
    """Describe the dataset of ``config`` (``config.dataset``), preparing it if needed."""
    if config.pipeline == "device":
        return device.dataset_info(config)
    from jaxcnn.data import pipeline

    return pipeline.dataset_info(config)


def first_train_images(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
    """The first ``count`` images of the train split in stored order, normalised and not
    augmented, the same in every process: the data of a model's data-dependent initialisation
    (``data_init``, e.g. a whitening layer fitted to image patches)."""
    if config.pipeline == "device":
        return device.first_train_images(config, count)
    from jaxcnn.data import pipeline

    return pipeline.first_train_images(config, count)


def prefetch(iterator: Iterator[Any], transform: Callable[[Any], Any], size: int = 2):
    """Apply ``transform`` (the host → device copy) in a thread, ``size`` batches ahead."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def producer() -> None:
        try:
            for item in iterator:
                buffer.put(transform(item))
        except Exception as error:  # handed to the consumer, raised there
            buffer.put(error)
        buffer.put(done)

    threading.Thread(target=producer, daemon=True).start()
    while (item := buffer.get()) is not done:
        if isinstance(item, Exception):
            raise item
        yield item


def _layout(shard_batch: ShardBatch, local_batch_size: int) -> device.BatchLayout:
    """Where ``shard_batch`` puts a batch: read off a batch of zeros."""
    placed = shard_batch({"label": np.zeros((local_batch_size,), np.int32)})["label"]
    return device.BatchLayout(leading=placed.shape, sharding=placed.sharding)


def _mixer(config: ml_collections.ConfigDict, seed: int, num_classes: int):
    """``fn(batch, step) -> batch`` mixing in pairs (or None without mixup/cutmix)."""
    if not (config.mixup_alpha or config.cutmix_alpha):
        return None

    def mix(batch: Batch, step: int) -> Batch:
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _MIX_STREAM), step)
        shapes = {k: v.shape for k, v in batch.items()}
        flat = {k: v.reshape(-1, *v.shape[len(shapes["label"]) :]) for k, v in batch.items()}
        mixed = mix_batch(
            flat,
            key,
            num_classes=num_classes,
            mixup_alpha=config.mixup_alpha,
            cutmix_alpha=config.cutmix_alpha,
        )
        mixed["label"] = mixed["label"].reshape(*shapes["label"], num_classes)
        mixed["image"] = mixed["image"].reshape(shapes["image"])
        return mixed

    compiled = jax.jit(mix)
    per_device = None

    def apply(batch: Batch, step: int) -> Batch:
        nonlocal per_device
        if per_device is None:
            per_device = batch["label"].size // len(batch["label"].sharding.device_set)
            if per_device % 2:
                raise UserError(
                    f"mixup/cutmix pair examples on each device, which gets {per_device}; "
                    "use a batch_size with an even number of examples per device"
                )
        return compiled(batch, step)

    return apply


def train_batches(
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    seed: int,
    shard_batch: ShardBatch,
    start_step: int = 0,
) -> Iterator[Batch]:
    """Endless global training batches (``batch_size`` over all processes) from ``start_step``,
    placed as ``shard_batch`` places a process's numpy batch."""
    process_index, process_count = jax.process_index(), jax.process_count()
    local_batch_size = batch_size // process_count
    info = dataset_info(config)
    if config.pipeline == "device":
        layout = _layout(shard_batch, local_batch_size)
        batches = device.train_iterator(
            config,
            batch_size=batch_size,
            seed=seed,
            start_step=start_step,
            process_index=process_index,
            process_count=process_count,
            layout=layout,
        )
    else:
        from jaxcnn.data import pipeline

        local = pipeline.train_iterator(
            config,
            batch_size=local_batch_size,
            seed=seed,
            start_step=start_step,
            process_index=process_index,
            process_count=process_count,
        )
        batches = prefetch(local, shard_batch)
    mix = _mixer(config, seed, info.num_classes)
    if mix is None:
        return batches
    return (mix(batch, step) for step, batch in enumerate(batches, start_step))


def eval_batches(
    config: ml_collections.ConfigDict, *, batch_size: int, shard_batch: ShardBatch
) -> Iterator[Batch]:
    """One pass of padded global eval batches with a ``mask`` (False on padding)."""
    process_index, process_count = jax.process_index(), jax.process_count()
    local_batch_size = batch_size // process_count
    if config.pipeline == "device":
        batches, _ = device.eval_iterator(
            config,
            batch_size=batch_size,
            process_index=process_index,
            process_count=process_count,
            layout=_layout(shard_batch, local_batch_size),
        )
        return batches
    from jaxcnn.data import pipeline

    local, _ = pipeline.eval_iterator(
        config,
        batch_size=local_batch_size,
        process_index=process_index,
        process_count=process_count,
    )
    return prefetch(local, shard_batch)
