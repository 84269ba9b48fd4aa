"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012, "ImageNet Classification with Deep
Convolutional Neural Networks"; single-tower form of Krizhevsky, 2014, "One weird trick").

Five convolutions (64-11×11/4, 192-5×5, 384-3×3, 256-3×3, 256-3×3) with three 3×3/2 max pools,
an adaptive average pool to 6×6, and a classifier of two 4096-unit dense layers with dropout.
This follows torchvision rather than the 2012 paper: one tower instead of two GPU groups
(64/192 filters instead of 96/256), no local response normalisation, and an adaptive pool that
lets any input of at least 63×63 work. 61,100,840 parameters at 224×224 with 1000 classes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import Layers, adaptive_avg_pool
from jaxcnn.models.registry import register


class AlexNet(nn.Module):
    """AlexNet; ``classifier_width`` sets the size of the two hidden dense layers."""

    num_classes: int = 1000
    classifier_width: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def pool(x: jnp.ndarray) -> jnp.ndarray:
            return nn.max_pool(x, (3, 3), strides=(2, 2))

        x = nn.relu(self.layers.conv(64, (11, 11), (4, 4), padding=2, name="conv1", **kw)(x))
        x = pool(x)
        x = nn.relu(self.layers.conv(192, (5, 5), padding=2, name="conv2", **kw)(x))
        x = pool(x)
        x = nn.relu(self.layers.conv(384, (3, 3), padding=1, name="conv3", **kw)(x))
        x = nn.relu(self.layers.conv(256, (3, 3), padding=1, name="conv4", **kw)(x))
        x = nn.relu(self.layers.conv(256, (3, 3), padding=1, name="conv5", **kw)(x))
        x = adaptive_avg_pool(pool(x), (6, 6))
        x = x.reshape((x.shape[0], -1))
        for i in (1, 2):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.relu(nn.Dense(self.classifier_width, name=f"fc{i}", **kw)(x))
        return nn.Dense(self.num_classes, name="head", **kw)(x).astype(jnp.float32)


register("alexnet", AlexNet, family="AlexNet", input_shape=(224, 224, 3), num_classes=1000)
