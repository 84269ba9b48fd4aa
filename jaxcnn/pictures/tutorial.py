"""The tutorial's worked examples (``jaxcnn/ops.py``, ``tests/test_ops.py``), computed by the
framework's own layers: the horizontal-edge Sobel filter on a 5×5 step image, through the
convolution every model builds (``Layers.conv``), and 2×2 max pooling of a 4×4 image
(``flax.linen.max_pool``, what the models call)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.models.conv import resolve_impl
from jaxcnn.models.layers import Layers

# Bottom row minus top row: responds where intensity changes from one row to the next.
SOBEL = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32)
# Dark (0) in its top two rows, bright (1) below: a horizontal step edge.
STEP_IMAGE = np.array([[0] * 5] * 2 + [[1] * 5] * 3, np.float32)
POOL_IMAGE = np.array([[1, 3, 2, 4], [5, 6, 1, 2], [4, 2, 8, 1], [3, 4, 5, 7]], np.float32)


def sobel_feature_map(conv_impl: str = "auto") -> np.ndarray:
    """The feature map of :data:`SOBEL` over :data:`STEP_IMAGE` with zero padding 1: one
    convolution module of the models' kind, its kernel set to the Sobel filter."""
    conv = Layers(resolve_impl(conv_impl)).conv(1, (3, 3), padding=1, use_bias=False)
    image = jnp.asarray(STEP_IMAGE)[None, :, :, None]
    variables = {"params": {"kernel": jnp.asarray(SOBEL)[:, :, None, None]}}
    return np.asarray(jax.jit(conv.apply)(variables, image)[0, :, :, 0])


def max_pool_example() -> np.ndarray:
    """2×2 max pooling with stride 2 of :data:`POOL_IMAGE`."""
    image = jnp.asarray(POOL_IMAGE)[None, :, :, None]
    return np.asarray(nn.max_pool(image, (2, 2), strides=(2, 2))[0, :, :, 0])
