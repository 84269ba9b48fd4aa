"""Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) on device batches, in JAX.

Both pipelines apply them after batching, seeded by the batch's training step, so a resumed run
mixes exactly as before. Examples are mixed in neighbouring pairs (0 with 1, 2 with 3, …) of an
already shuffled batch: each pair has its own mixing ratio and never spans two devices, so no
data moves between devices. Labels become distributions (B, C), which the train step accepts.
With both alphas set, each pair uses CutMix or Mixup with equal probability.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcnn.data.interface import Batch


def _cutmix_weights(key: jax.Array, lam: jax.Array, height: int, width: int) -> jax.Array:
    """Per-pair pixel weights (P, H, W): 0 inside a box of area ``1 - lam``, 1 elsewhere."""
    cy_key, cx_key = jax.random.split(key)
    num_pairs = lam.shape[0]
    ratio = jnp.sqrt(1.0 - lam)
    cy = jax.random.uniform(cy_key, (num_pairs,)) * height
    cx = jax.random.uniform(cx_key, (num_pairs,)) * width
    top = jnp.clip(jnp.round(cy - ratio * height / 2), 0, height)[:, None, None]
    bottom = jnp.clip(jnp.round(cy + ratio * height / 2), 0, height)[:, None, None]
    left = jnp.clip(jnp.round(cx - ratio * width / 2), 0, width)[:, None, None]
    right = jnp.clip(jnp.round(cx + ratio * width / 2), 0, width)[:, None, None]
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return jnp.where(inside, 0.0, 1.0)


def mix_batch(
    batch: Batch,
    key: jax.Array,
    *,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
) -> Batch:
    """Mix ``batch`` (images (B, H, W, C), class ids (B,), B even) in pairs; soft labels out."""
    images, labels = batch["image"], batch["label"]
    size, height, width = images.shape[:3]
    num_pairs = size // 2
    mixup_key, cutmix_key, box_key, choice_key = jax.random.split(key, 4)
    ones = jnp.ones((num_pairs,))
    weights = jnp.ones((num_pairs, height, width))
    if mixup_alpha:
        lam = jax.random.beta(mixup_key, mixup_alpha, mixup_alpha, (num_pairs,))
        weights = lam[:, None, None] * weights
    if cutmix_alpha:
        lam = jax.random.beta(cutmix_key, cutmix_alpha, cutmix_alpha, (num_pairs,))
        cut = _cutmix_weights(box_key, lam, height, width)
        use_cutmix = jax.random.bernoulli(choice_key, 0.5, (num_pairs,)) if mixup_alpha else ones
        weights = jnp.where(use_cutmix[:, None, None] > 0, cut, weights)
    lam = weights.mean(axis=(1, 2))  # the label weight: the share of each image's own pixels

    pairs = images.reshape(num_pairs, 2, *images.shape[1:])
    partners = pairs[:, ::-1]
    pixel_weights = weights[:, None, :, :, None].astype(images.dtype)
    mixed = pixel_weights * pairs + (1 - pixel_weights) * partners
    targets = jax.nn.one_hot(labels, num_classes).reshape(num_pairs, 2, num_classes)
    label_weights = lam[:, None, None]
    soft = label_weights * targets + (1 - label_weights) * targets[:, ::-1]
    return {
        **batch,
        "image": mixed.reshape(images.shape),
        "label": soft.reshape(size, num_classes),
    }
