"""The train and eval steps: pure functions of (state, batch), compiled by jaxcnn.training.parallel.

One definition serves both parallel paths. Under ``jit`` over a device mesh the batch is one
global array and means are global; under ``pmap`` each device sees its slice and ``axis_name``
names the device axis over which gradients, BatchNorm statistics and metrics are averaged.
``scan_steps`` runs several train steps in one compiled call (``steps_per_dispatch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcnn.errors import UserError
from jaxcnn.training.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Per-example cross-entropy; ``labels`` are class ids (B,) or distributions (B, C)."""
    num_classes = logits.shape[-1]
    targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def _class_ids(labels: jax.Array) -> jax.Array:
    return labels if labels.ndim == 1 else jnp.argmax(labels, axis=-1)


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.3,
    axis_name: str | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``train_step(state, batch) -> (state, metrics)``: one optimizer update."""

    def mean_over_devices(tree: Any) -> Any:
        return jax.lax.pmean(tree, axis_name) if axis_name else tree

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        dropout_key = jax.random.fold_in(state.rng, state.step)
        if axis_name:
            dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            logits, updates = model.apply(
                variables,
                batch["image"],
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats", "aux_logits"],
            )
            loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
            for aux in jax.tree.leaves(updates.get("aux_logits", {})):
                loss += aux_loss_weight * cross_entropy(aux, batch["label"], label_smoothing).mean()
            return loss, (logits, updates.get("batch_stats", {}))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        grads = mean_over_devices(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        accuracy = jnp.mean(jnp.argmax(logits, -1) == _class_ids(batch["label"]))
        metrics = mean_over_devices({"loss": loss, "accuracy": accuracy})
        metrics["learning_rate"] = schedule(state.step)
        return new_state, metrics

    return train_step


# On the CPU, XLA allocates a compiled call's temporary buffers (a train step's activations,
# ~290 MB for ResNet-20 at batch 128) afresh on every call, and glibc maps them in from zeroed
# pages each time; a scan over several steps allocates them once per call (BENCHMARKS.md,
# "Steps per dispatch"). Accelerators keep a caching allocator and gain nothing.
_AUTO_STEPS_PER_DISPATCH = {"cpu": 8}


def steps_per_dispatch(requested: int) -> int:
    """Train steps per compiled call: ``requested``, or if 0 the default for this backend."""
    if requested < 0:
        raise UserError(f"steps_per_dispatch must be 0 (auto) or more, not {requested}")
    return requested or _AUTO_STEPS_PER_DISPATCH.get(jax.default_backend(), 1)


def scan_steps(
    train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``train_steps(state, batches) -> (state, metrics)``: ``train_step`` over each batch of
    ``batches`` (arrays with a leading axis of steps) in turn; metrics gain that leading axis."""

    def train_steps(state: TrainState, batches: Batch) -> tuple[TrainState, Metrics]:
        return jax.lax.scan(train_step, state, batches)

    return train_steps


def make_eval_step(
    model: nn.Module, *, axis_name: str | None = None
) -> Callable[[TrainState, Batch], Metrics]:
    """``eval_step(state, batch) -> sums``: loss and correct-prediction sums over the unmasked
    examples and their count, so that padded batches average correctly."""

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        logits = model.apply(variables, batch["image"], train=False)
        mask = batch["mask"].astype(jnp.float32)
        sums = {
            "loss": jnp.sum(cross_entropy(logits, batch["label"], 0.0) * mask),
            "correct": jnp.sum((jnp.argmax(logits, -1) == _class_ids(batch["label"])) * mask),
            "count": jnp.sum(mask),
        }
        return jax.lax.psum(sums, axis_name) if axis_name else sums

    return eval_step
