"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen, 2018, "MobileNetV2: Inverted
Residuals and Linear Bottlenecks").

A 3×3/2 stem with 32 filters, seventeen inverted-residual blocks (1×1 expansion by t, 3×3
depthwise convolution, linear 1×1 projection; residual when stride 1 and the shape is kept),
a 1×1 conv to 1280 channels, global average pooling, dropout 0.2 and a dense head, with ReLU6
activations. Channel counts are ``width_mult`` times the paper's, rounded to multiples of 8 as
in torchvision. Width 1.0 has 3,504,872 parameters at 224×224 with 1000 classes.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import ConvBNAct, Layers, make_divisible
from jaxcnn.models.registry import register

# (expansion t, output channels c, blocks n, first stride s), as in Table 2 of the paper.
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


# MobileNetV2's unit: conv → BatchNorm → ReLU6.
ConvBNReLU6 = functools.partial(ConvBNAct, activation=nn.relu6)


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise 3×3 → project (1×1, linear), plus identity when shapes match."""

    filters: int
    strides: int
    expansion: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, layers=self.layers)
        channels = x.shape[-1]
        hidden = round(channels * self.expansion)
        y = x
        if self.expansion != 1:
            y = ConvBNReLU6(hidden, name="expand", **kw)(y, train)
        y = ConvBNReLU6(hidden, 3, self.strides, groups=hidden, name="depthwise", **kw)(y, train)
        y = ConvBNReLU6(self.filters, activation=None, name="project", **kw)(y, train)
        return x + y if self.strides == 1 and channels == self.filters else y


class MobileNetV2(nn.Module):
    """MobileNetV2 with channel multiplier ``width_mult``."""

    num_classes: int = 1000
    width_mult: float = 1.0
    dropout_rate: float = 0.2
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, layers=self.layers)
        x = ConvBNReLU6(make_divisible(32 * self.width_mult), 3, 2, name="stem", **kw)(x, train)
        for s, (expansion, filters, blocks, stride) in enumerate(STAGES):
            for b in range(blocks):
                x = InvertedResidual(
                    make_divisible(filters * self.width_mult),
                    stride if b == 0 else 1,
                    expansion,
                    name=f"stage{s + 1}_block{b + 1}",
                    **kw,
                )(x, train)
        last = make_divisible(1280 * max(1.0, self.width_mult))
        x = ConvBNReLU6(last, name="head_conv", **kw)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(
            x
        )
        return x.astype(jnp.float32)


register(
    "mobilenet_v2",
    MobileNetV2,
    family="MobileNetV2",
    input_shape=(224, 224, 3),
    num_classes=1000,
    width_mult=1.0,
)
