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

from jaxcnn.data.interface import Batch
from jaxcnn.errors import UserError, unknown_choice
from jaxcnn.training.state import TrainState

Metrics = dict[str, jax.Array]
EMA_WARMUPS = ("none", "count", "cubic")
TTA_MODES = ("none", "flip", "flip+translate")


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    """Per-example cross-entropy; ``labels`` are class ids (B,) or distributions (B, C)."""
    num_classes = logits.shape[-1]
    targets = labels if labels.ndim == 2 else jax.nn.one_hot(labels, num_classes)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def _class_ids(labels: jax.Array) -> jax.Array:
    return labels if labels.ndim == 1 else jnp.argmax(labels, axis=-1)


def ema_decay_schedule(
    decay: float, warmup: str, total_steps: int
) -> Callable[[jax.Array], jax.Array]:
    """``decay_at(step)``: the EMA decay of the update after ``step`` optimizer steps."""
    if warmup == "none":
        return lambda step: jnp.asarray(decay, jnp.float32)
    if warmup == "count":
        return lambda step: jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    if warmup == "cubic":
        return lambda step: decay * (step / total_steps) ** 3
    raise unknown_choice("ema.warmup", warmup, EMA_WARMUPS)


def update_ema(
    state: TrainState, decay_at: Callable[[jax.Array], jax.Array], every: int, lookahead: bool
) -> TrainState:
    """Move ``state.ema`` towards the weights when ``state.step`` is a multiple of ``every``;
    with ``lookahead``, the weights then restart from the average (Zhang et al., 2019)."""
    due = state.step % every == 0
    decay = jnp.where(due, decay_at(state.step.astype(jnp.float32)), 1.0)
    ema = jax.tree.map(lambda avg, w: avg + (1.0 - decay) * (w - avg), state.ema, state.variables())
    state = state.replace(ema=ema)
    if lookahead:
        synced = jax.tree.map(lambda avg, w: jnp.where(due, avg, w), ema, state.variables())
        state = state.replace(params=synced["params"], batch_stats=synced["batch_stats"])
    return state


def classification_metrics(logits: jax.Array, labels: jax.Array) -> Metrics:
    """Per-example ``correct`` (top-1) and, with more than 5 classes, ``correct_top5``."""
    ids = _class_ids(labels)
    metrics = {"correct": (jnp.argmax(logits, -1) == ids).astype(jnp.float32)}
    if logits.shape[-1] > 5:
        top5 = jax.lax.top_k(logits, 5)[1]
        metrics["correct_top5"] = jnp.any(top5 == ids[:, None], axis=-1).astype(jnp.float32)
    return metrics


def micro_batches(batch: Batch, count: int) -> Batch:
    """``batch`` as ``count`` micro-batches along a new leading axis; micro-batch ``i`` takes
    every ``count``-th example from ``i`` on, so that each device of a sharded batch holds a
    part of every micro-batch."""
    size = batch["label"].shape[0]
    if size % count:
        raise UserError(
            f"optimizer.accum_steps={count} does not divide the {size} examples of each "
            "device's batch; use a batch_size that does"
        )
    return jax.tree.map(
        lambda x: x.reshape(size // count, count, *x.shape[1:]).swapaxes(0, 1), batch
    )


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.3,
    axis_name: str | None = None,
    accum_steps: int = 1,
    ema_decay_at: Callable[[jax.Array], jax.Array] | None = None,
    ema_every: int = 1,
    ema_lookahead: bool = False,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``train_step(state, batch) -> (state, metrics)``: one optimizer update, then (with
    ``ema_decay_at``) one of the weights' moving average (:func:`update_ema`).

    With ``accum_steps`` > 1 the batch is split into that many micro-batches whose gradients
    are averaged before the update (the update of the whole batch, in less memory); each
    micro-batch updates the BatchNorm statistics in turn. Metrics: ``loss``, ``accuracy``,
    ``top5_accuracy`` (more than 5 classes), ``grad_norm`` (before clipping), ``learning_rate``.
    """

    def mean_over_devices(tree: Any) -> Any:
        return jax.lax.pmean(tree, axis_name) if axis_name else tree

    def gradients(
        params: Any, batch_stats: Any, batch: Batch, dropout_key: jax.Array
    ) -> tuple[Any, Any, Metrics]:
        """(gradients, updated BatchNorm statistics, metrics) of one (micro-)batch."""

        def loss_fn(params):
            variables = {"params": params, "batch_stats": batch_stats}
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

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        correct = classification_metrics(logits, batch["label"])
        metrics = {"loss": loss, "accuracy": jnp.mean(correct["correct"])}
        if "correct_top5" in correct:
            metrics["top5_accuracy"] = jnp.mean(correct["correct_top5"])
        return grads, new_stats, metrics

    def accumulated_gradients(
        params: Any, batch_stats: Any, batch: Batch, dropout_key: jax.Array
    ) -> tuple[Any, Any, Metrics]:
        def add_micro_batch(carry, inputs):
            stats, grad_sum = carry
            index, micro = inputs
            grads, stats, metrics = gradients(
                params, stats, micro, jax.random.fold_in(dropout_key, index)
            )
            return (stats, jax.tree.map(jnp.add, grad_sum, grads)), metrics

        (batch_stats, grad_sum), metrics = jax.lax.scan(
            add_micro_batch,
            (batch_stats, jax.tree.map(jnp.zeros_like, params)),
            (jnp.arange(accum_steps), micro_batches(batch, accum_steps)),
        )
        grads = jax.tree.map(lambda g: g / accum_steps, grad_sum)
        return grads, batch_stats, jax.tree.map(jnp.mean, metrics)

    compute_gradients = gradients if accum_steps == 1 else accumulated_gradients

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        dropout_key = jax.random.fold_in(state.rng, state.step)
        if axis_name:
            dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))
        grads, batch_stats, metrics = compute_gradients(
            state.params, state.batch_stats, batch, dropout_key
        )
        grads = mean_over_devices(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        if ema_decay_at is not None:
            new_state = update_ema(new_state, ema_decay_at, ema_every, ema_lookahead)
        metrics = mean_over_devices(metrics)
        metrics["grad_norm"] = optax.tree.norm(grads)
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


def _shift(images: jax.Array, dy: int, dx: int) -> jax.Array:
    """NHWC ``images`` moved by (dy, dx) pixels, the edge mirrored into the gap."""
    pad = max(abs(dy), abs(dx))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    height, width = images.shape[1:3]
    return padded[:, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def tta_logits(apply: Callable[[jax.Array], jax.Array], images: jax.Array, mode: str):
    """Logits of ``apply`` averaged over the test-time views of ``mode`` (:data:`TTA_MODES`).

    ``flip+translate`` is airbench's: half the weight on the image and its mirror image, half
    on both of them shifted one pixel up-left and one pixel down-right.
    """
    if mode == "none":
        return apply(images)

    def with_mirror(x: jax.Array) -> jax.Array:
        return 0.5 * (apply(x) + apply(x[:, :, ::-1]))

    if mode == "flip":
        return with_mirror(images)
    if mode == "flip+translate":
        shifted = 0.5 * (with_mirror(_shift(images, -1, -1)) + with_mirror(_shift(images, 1, 1)))
        return 0.5 * (with_mirror(images) + shifted)
    check_tta(mode)


def check_tta(mode: str) -> None:
    """Raise for a test-time augmentation that :func:`tta_logits` does not know."""
    if mode not in TTA_MODES:
        raise unknown_choice("eval_tta", mode, TTA_MODES)


def make_eval_step(
    model: nn.Module, *, axis_name: str | None = None, tta: str = "none", confusion: bool = False
) -> Callable[[dict[str, Any], Batch], Metrics]:
    """``eval_step(variables, batch) -> sums``: loss and correct-prediction sums (top-1, and
    top-5 with more than 5 classes) over the unmasked examples and their count, so that padded
    batches average correctly. ``tta`` averages the logits of test-time views
    (:func:`tta_logits`). With ``confusion`` the sums include ``confusion``, the (true class,
    predicted class) counts, summed on the device; training's evaluations leave it out."""
    check_tta(tta)

    def eval_step(variables: dict[str, Any], batch: Batch) -> Metrics:
        def apply(images: jax.Array) -> jax.Array:
            return model.apply(variables, images, train=False)

        logits = tta_logits(apply, batch["image"], tta)
        mask = batch["mask"].astype(jnp.float32)
        per_example = {
            "loss": cross_entropy(logits, batch["label"], 0.0),
            **classification_metrics(logits, batch["label"]),
        }
        sums = {k: jnp.sum(v * mask) for k, v in per_example.items()}
        sums["count"] = jnp.sum(mask)
        if confusion:
            num_classes = logits.shape[-1]
            truth = jax.nn.one_hot(_class_ids(batch["label"]), num_classes) * mask[:, None]
            predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes)
            sums["confusion"] = truth.T @ predicted  # exact counts below 2**24 per cell
        return jax.lax.psum(sums, axis_name) if axis_name else sums

    return eval_step
