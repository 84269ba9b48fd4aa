"""Device batches for the training loop, from either pipeline (``dataset.pipeline``).

``streaming`` (:mod:`jaxcnn.data.streaming`) decodes and augments with tf.data on the host and
copies each batch to the devices a few batches ahead; ``device``
(:mod:`jaxcnn.data.device_resident`) keeps the dataset in accelerator memory and builds each
batch there, needing no TensorFlow. Both are :class:`~jaxcnn.data.interface.Pipeline` modules,
chosen here and only here. Both give the same augmentations, the same stateless per-step
order, and mix batches (:mod:`jaxcnn.data.mix`) on the device.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcnn.data import device_resident
from jaxcnn.data.interface import Batch, DatasetInfo, EvalBatches, Pipeline
from jaxcnn.data.mix import mix_batch
from jaxcnn.errors import UserError

ShardBatch = Callable[[Batch], Batch]  # a process's host batch → the global device batch
_MIX_STREAM = 2


def pipeline(config: ml_collections.ConfigDict) -> Pipeline:
    """The pipeline module of ``config.pipeline`` (``config.dataset``); TensorFlow is imported
    only for the streaming one."""
    if config.pipeline == "device":
        return device_resident
    from jaxcnn.data import streaming

    return streaming


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
    """Describe the dataset of ``config`` (``config.dataset``), preparing it if needed."""
    return pipeline(config).dataset_info(config)


def first_train_images(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
    """The first ``count`` images of the train split in stored order, normalised and not
    augmented, the same in every process: the data of a model's data-dependent initialisation
    (``data_init``, e.g. a whitening layer fitted to image patches)."""
    return pipeline(config).first_train_images(config, count)


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


def _layout(shard_batch: ShardBatch, local_batch_size: int) -> device_resident.BatchLayout:
    """Where ``shard_batch`` puts a batch: read off a batch of zeros."""
    placed = shard_batch({"label": np.zeros((local_batch_size,), np.int32)})["label"]
    return device_resident.BatchLayout(leading=placed.shape, sharding=placed.sharding)


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
    placed as ``shard_batch`` places a process's host batch."""
    process_index, process_count = jax.process_index(), jax.process_count()
    options = dict(
        batch_size=batch_size,
        seed=seed,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
    )
    if config.pipeline == "device":
        layout = _layout(shard_batch, batch_size // process_count)
        batches = device_resident.train_iterator(config, layout=layout, **options)
    else:
        batches = prefetch(pipeline(config).train_iterator(config, **options), shard_batch)
    mix = _mixer(config, seed, dataset_info(config).num_classes)
    if mix is None:
        return batches
    return (mix(batch, step) for step, batch in enumerate(batches, start_step))


def eval_batches(
    config: ml_collections.ConfigDict, *, batch_size: int, shard_batch: ShardBatch
) -> EvalBatches:
    """The eval split of ``config``, opened once: each iteration is one pass of padded global
    eval batches with a ``mask`` (False on padding), placed as ``shard_batch`` places them."""
    options = dict(
        batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    if config.pipeline == "device":
        layout = _layout(shard_batch, batch_size // jax.process_count())
        return device_resident.eval_batches(config, layout=layout, **options)
    split = pipeline(config).eval_batches(config, **options)
    return EvalBatches(lambda: prefetch(iter(split), shard_batch), len(split))
