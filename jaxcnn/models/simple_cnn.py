"""The small CNN of the classic Keras/PyTorch MNIST tutorial.

Conv32-3x3 → ReLU → MaxPool2 → Conv64-3x3 → ReLU → MaxPool2 → Flatten → Dense128 → ReLU →
Dropout(0.5) → Dense. Convolutions use 'VALID' padding as in the tutorial, which gives
225,034 parameters on 28×28×1 input with 10 classes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import Layers, max_pool
from jaxcnn.models.registry import register


class SimpleCNN(nn.Module):
    num_classes: int = 10
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        dense = lambda n: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype)  # noqa: E731
        conv = lambda n: self.layers.conv(  # noqa: E731
            n, (3, 3), padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype
        )
        x = max_pool(nn.relu(conv(32)(x)), 2)
        x = max_pool(nn.relu(conv(64)(x)), 2)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(dense(128)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return dense(self.num_classes)(x).astype(jnp.float32)


register("simple_cnn", SimpleCNN, family="SimpleCNN", input_shape=(28, 28, 1), num_classes=10)
