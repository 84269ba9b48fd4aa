"""ResNets for CIFAR (He, Zhang, Ren & Sun, 2016, "Deep Residual Learning", §4.2).

Depth 6n+2: a 3×3 conv with 16 filters, three stages of n basic blocks with 16, 32 and 64
filters (the first block of stages 2 and 3 halves the resolution), global average pooling and
a dense classifier. The paper's shortcut option A (identity, subsampled and zero-padded in
channels when the shape changes) is the default and gives ResNet-20 its 0.27M parameters;
``shortcut='B'`` uses 1×1 projection convolutions instead.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.registry import register


class CifarBasicBlock(nn.Module):
    filters: int
    strides: int
    shortcut: str
    dtype: Any
    param_dtype: Any
    bn_axis_name: str | None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = lambda f, k, s, name: nn.Conv(  # noqa: E731
            f,
            (k, k),
            (s, s),
            padding=[((k - 1) // 2,) * 2] * 2,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        norm = lambda name, init=nn.initializers.ones: nn.BatchNorm(  # noqa: E731
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            scale_init=init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            axis_name=self.bn_axis_name,
            name=name,
        )
        y = nn.relu(norm("bn1")(conv(self.filters, 3, self.strides, "conv1")(x)))
        y = norm("bn2")(conv(self.filters, 3, 1, "conv2")(y))
        if x.shape[-1] != self.filters or self.strides != 1:
            if self.shortcut == "A":
                x = x[:, :: self.strides, :: self.strides, :]
                pad = self.filters - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
            else:
                x = norm("proj_bn")(conv(self.filters, 1, self.strides, "proj_conv")(x))
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs; ``depth`` picks n."""

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    shortcut: str = "A"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
        blocks_per_stage = (self.depth - 2) // 6
        x = nn.Conv(
            self.width,
            (3, 3),
            padding=[(1, 1), (1, 1)],
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="stem_conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            axis_name=self.bn_axis_name,
            name="stem_bn",
        )(x)
        x = nn.relu(x)
        for stage in range(3):
            for block in range(blocks_per_stage):
                x = CifarBasicBlock(
                    filters=self.width * 2**stage,
                    strides=2 if stage > 0 and block == 0 else 1,
                    shortcut=self.shortcut,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    bn_axis_name=self.bn_axis_name,
                    name=f"stage{stage + 1}_block{block + 1}",
                )(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(
            x
        )
        return x.astype(jnp.float32)


for _depth in (20, 32, 44, 56, 110):
    register(
        f"resnet{_depth}",
        CifarResNet,
        family="ResNet",
        input_shape=(32, 32, 3),
        num_classes=10,
        depth=_depth,
    )
