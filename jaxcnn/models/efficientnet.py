"""EfficientNet-B0 … B7 (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks").

B0 is a 3×3/2 stem, seven stages of MBConv blocks (inverted residuals: 1×1 expansion,
depthwise k×k convolution, squeeze-and-excitation with 1/4 of the block's input channels,
linear 1×1 projection; residual with stochastic depth when the shape is kept), a 1×1 conv to
1280 channels, global average pooling, dropout and a dense head. SiLU activations throughout.
B1–B7 scale B0 by compound scaling: channels × ``width_mult`` (rounded to multiples of 8),
blocks per stage × ``depth_mult`` (rounded up), and a larger default resolution; dropout grows
from 0.2 to 0.5. The stochastic-depth rate rises linearly from 0 to ``stochastic_depth_rate``
(0.2) over the blocks. Follows torchvision's layout and the paper's resolutions (B2: 260, where
torchvision's weights were evaluated at 288). BatchNorm uses the reference's constants, ε = 1e-3
and running-average momentum 0.99 (TensorFlow's original, and torchvision's B5–B7 ports of it;
torchvision's B0–B4 use PyTorch's defaults, ε = 1e-5 and 0.9): ``bn_epsilon``, ``bn_momentum``.
B0 has 5,288,548 parameters at 224×224 with 1000 classes.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import ConvBNAct, DropPath, Layers, make_divisible
from jaxcnn.models.registry import register

# B0 stages: (expansion, kernel, stride, output channels, blocks).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

# Variant: (width_mult, depth_mult, resolution, dropout_rate).
VARIANTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


# EfficientNet's unit: conv → BatchNorm → SiLU.
_ConvBNSiLU = functools.partial(ConvBNAct, activation=nn.silu)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation and stochastic depth."""

    filters: int
    expansion: int
    kernel: int
    strides: int
    drop_path_rate: float
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bn_kw = dict(
            layers=self.layers,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
            **kw,
        )
        inputs = x
        channels = x.shape[-1]
        expanded = make_divisible(channels * self.expansion)
        if expanded != channels:
            x = _ConvBNSiLU(expanded, name="expand", **bn_kw)(x, train)
        x = _ConvBNSiLU(
            expanded, self.kernel, self.strides, groups=expanded, name="depthwise", **bn_kw
        )(x, train)
        squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
        squeezed = nn.silu(
            self.layers.conv(max(1, channels // 4), (1, 1), name="se_reduce", **kw)(squeezed)
        )
        x = x * nn.sigmoid(self.layers.conv(expanded, (1, 1), name="se_expand", **kw)(squeezed))
        x = _ConvBNSiLU(self.filters, activation=None, name="project", **bn_kw)(x, train)
        if self.strides == 1 and channels == self.filters:
            x = inputs + DropPath(self.drop_path_rate)(x, deterministic=not train)
        return x


class EfficientNet(nn.Module):
    """EfficientNet scaled by ``width_mult`` and ``depth_mult`` (B0: both 1.0).

    ``dropout_rate`` applies before the head; ``stochastic_depth_rate`` is the drop-path rate
    reached by the last block.
    """

    num_classes: int = 1000
    width_mult: float = 1.0
    depth_mult: float = 1.0
    dropout_rate: float = 0.2
    stochastic_depth_rate: float = 0.2
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        kw = dict(
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            layers=self.layers,
            bn_epsilon=self.bn_epsilon,
            bn_momentum=self.bn_momentum,
        )
        x = _ConvBNSiLU(make_divisible(32 * self.width_mult), 3, 2, name="stem", **kw)(x, train)
        depths = [math.ceil(n * self.depth_mult) for *_, n in STAGES]
        block_id = 0
        for s, ((expansion, kernel, stride, filters, _), depth) in enumerate(
            zip(STAGES, depths, strict=True)
        ):
            for b in range(depth):
                x = MBConv(
                    filters=make_divisible(filters * self.width_mult),
                    expansion=expansion,
                    kernel=kernel,
                    strides=stride if b == 0 else 1,
                    drop_path_rate=self.stochastic_depth_rate * block_id / sum(depths),
                    name=f"stage{s + 1}_block{b + 1}",
                    **kw,
                )(x, train)
                block_id += 1
        x = _ConvBNSiLU(4 * x.shape[-1], name="head_conv", **kw)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(
            x
        )
        return x.astype(jnp.float32)


for _variant, (_width, _depth, _resolution, _dropout) in VARIANTS.items():
    register(
        f"efficientnet_{_variant}",
        EfficientNet,
        family="EfficientNet",
        input_shape=(_resolution, _resolution, 3),
        num_classes=1000,
        width_mult=_width,
        depth_mult=_depth,
        dropout_rate=_dropout,
    )
