"""Grad-CAM (Selvaraju et al., 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"): where in the image a class's evidence lies.

For a layer with feature maps A_k (here :func:`stages.cam_layer`: the last spatial stage, or a
ViT's last patch-token sequence before the last attention) and a class score y_c (its logit),
each channel is weighted by the mean over positions of dy_c/dA_k, and the map is
ReLU(Σ_k w_k A_k): positions whose features push the class's score up. It is upsampled to the
image (bilinear) and scaled to [0, 1] per image.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.pictures.stages import CamLayer, apply_with_taps


def grad_cam(
    model: nn.Module,
    variables: Any,
    images: jax.Array,
    classes: np.ndarray,
    layer: CamLayer,
) -> tuple[np.ndarray, np.ndarray]:
    """(maps, logits): Grad-CAM maps of ``classes[i]`` for ``images[i]`` at the images'
    height and width, each scaled to [0, 1] (all zeros where nothing supports the class), and
    the logits of the images."""
    index = layer.call.index
    assert layer.call.output_shape is not None
    zeros = jnp.zeros((images.shape[0], *layer.call.output_shape[1:]), jnp.float32)

    @jax.jit
    def compute(v: Any, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        def score(delta: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            logits, outputs, _ = apply_with_taps(model, v, x, keep={index}, add={index: delta})
            # Examples do not interact in eval mode: the sum's gradient is each one's own.
            chosen = jnp.take_along_axis(logits, c[:, None], axis=1)
            return jnp.sum(chosen), (outputs[index], logits)

        grads, (acts, logits) = jax.grad(score, has_aux=True)(zeros)
        grads, acts = layer.to_map(grads), layer.to_map(acts.astype(jnp.float32))
        weights = jnp.mean(grads, axis=(1, 2))  # (N, C)
        maps = nn.relu(jnp.einsum("nhwc,nc->nhw", acts, weights))
        maps = jax.image.resize(maps, (x.shape[0], *x.shape[1:3]), "bilinear")
        peak = jnp.max(maps, axis=(1, 2), keepdims=True)
        return jnp.where(peak > 0, maps / jnp.where(peak > 0, peak, 1.0), 0.0), logits

    maps, logits = compute(variables, images, jnp.asarray(classes, jnp.int32))
    return np.asarray(maps), np.asarray(logits)
