"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998).

C1 conv6-5x5 → S2 pool → C3 conv16-5x5 → S4 pool → C5 dense120 → F6 dense84 → output.
As in the standard re-implementations: C3 is fully connected to all six S2 maps (the paper's
sparse connection table is dropped), S2/S4 are plain 2×2 average pools (the paper's trainable
coefficient and bias per map are dropped), and the output is a dense layer instead of the
RBF units. With tanh activations this is 61,706 parameters at 32×32×1 with 10 classes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import Layers
from jaxcnn.models.registry import register

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


class LeNet5(nn.Module):
    num_classes: int = 10
    activation: str = "tanh"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        act = _ACTIVATIONS[self.activation]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = act(self.layers.conv(6, (5, 5), padding="VALID", name="c1", **kw)(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = act(self.layers.conv(16, (5, 5), padding="VALID", name="c3", **kw)(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(120, name="c5", **kw)(x))
        x = act(nn.Dense(84, name="f6", **kw)(x))
        return nn.Dense(self.num_classes, name="output", **kw)(x).astype(jnp.float32)


register("lenet5", LeNet5, family="LeNet", input_shape=(32, 32, 1), num_classes=10)
