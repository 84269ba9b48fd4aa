"""ConvNeXt-T/S/B (Liu, Mao, Wu, Feichtenhofer, Darrell & Xie, 2022, "A ConvNet for the
2020s").

A 4×4/4 "patchify" stem with LayerNorm, four stages of ConvNeXt blocks (7×7 depthwise conv →
LayerNorm → dense 4× expansion → GELU → dense projection, scaled by a learned per-channel layer
scale initialised to 1e-6, residual with stochastic depth), LayerNorm + 2×2/2 convolutions
between stages, global average pooling, LayerNorm and a dense head. The stochastic-depth rate
rises linearly from 0 at the first block to ``stochastic_depth_rate`` at the last (0.1, 0.4,
0.5 for T, S, B as in torchvision). ``depths`` and ``dims`` set blocks and channels per stage.
ConvNeXt-T has 28,589,128 parameters at 224×224 with 1000 classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import DropPath, Layers
from jaxcnn.models.registry import register

_init = nn.initializers.truncated_normal(0.02)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7 → LayerNorm → dense 4·dim → GELU → dense dim → layer scale → drop path."""

    drop_path_rate: float
    layer_scale_init: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = x.shape[-1]
        y = self.layers.conv(
            dim, (7, 7), padding=3, feature_group_count=dim, kernel_init=_init, name="dwconv", **kw
        )(x)
        y = nn.LayerNorm(epsilon=1e-6, name="norm", **kw)(y)
        y = nn.gelu(nn.Dense(4 * dim, kernel_init=_init, name="fc1", **kw)(y), approximate=False)
        y = nn.Dense(dim, kernel_init=_init, name="fc2", **kw)(y)
        scale = self.param(
            "layer_scale", nn.initializers.constant(self.layer_scale_init), (dim,), self.param_dtype
        )
        return x + DropPath(self.drop_path_rate)(y * scale, deterministic=not train)


class ConvNeXt(nn.Module):
    """ConvNeXt with ``depths`` blocks and ``dims`` channels in its four stages."""

    num_classes: int = 1000
    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    stochastic_depth_rate: float = 0.1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        total = sum(self.depths)
        block_id = 0
        for s, (depth, dim) in enumerate(zip(self.depths, self.dims, strict=True)):
            if s == 0:
                x = self.layers.conv(
                    dim, (4, 4), 4, padding=0, kernel_init=_init, name="stem", **kw
                )(x)
                x = nn.LayerNorm(epsilon=1e-6, name="stem_norm", **kw)(x)
            else:
                x = nn.LayerNorm(epsilon=1e-6, name=f"downsample{s}_norm", **kw)(x)
                down = self.layers.conv(
                    dim, (2, 2), 2, padding=0, kernel_init=_init, name=f"downsample{s}", **kw
                )
                x = down(x)
            for b in range(depth):
                rate = self.stochastic_depth_rate * block_id / max(1, total - 1)
                block = ConvNeXtBlock(
                    rate, layers=self.layers, name=f"stage{s + 1}_block{b + 1}", **kw
                )
                x = block(x, train)
                block_id += 1
        x = nn.LayerNorm(epsilon=1e-6, name="head_norm", **kw)(jnp.mean(x, axis=(1, 2)))
        x = nn.Dense(self.num_classes, kernel_init=_init, name="head", **kw)(x)
        return x.astype(jnp.float32)


_VARIANTS = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 0.1),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768), 0.4),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024), 0.5),
}
for _name, (_depths, _dims, _rate) in _VARIANTS.items():
    register(
        f"convnext_{_name}",
        ConvNeXt,
        family="ConvNeXt",
        input_shape=(224, 224, 3),
        num_classes=1000,
        depths=_depths,
        dims=_dims,
        stochastic_depth_rate=_rate,
    )
