"""Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words: Transformers
for Image Recognition at Scale"), sizes Ti/S/B/L with 16×16 or 32×32 patches.

The image is cut into ``patch_size``² patches, each linearly embedded (a strided convolution);
a learned class token is prepended and learned position embeddings added; then ``num_layers``
pre-LayerNorm encoder blocks (multi-head self-attention and a GELU MLP, each residual); a final
LayerNorm, and a dense head on the class token. Follows torchvision (LayerNorm ε = 1e-6, exact
GELU, zero-initialised head, no pre-logits layer). Ti and S are the DeiT sizes (Touvron et al.,
2021). ViT-B/16 has 86,567,656 parameters at 224×224 with 1000 classes.

``image_size`` and ``patch_size`` are fields: the input must be ``image_size`` square and a
multiple of ``patch_size``, and the position embeddings get one entry per patch of that input
plus one for the class token — e.g. ``create('vit_ti16', image_size=32, patch_size=4)`` is a
ViT-Ti for 32×32 images with 65 tokens.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import Layers
from jaxcnn.models.registry import register

_xavier = nn.initializers.xavier_uniform()


class EncoderBlock(nn.Module):
    """x + MHSA(LN(x)), then x + MLP(LN(x)), with dropout after attention and in the MLP."""

    num_heads: int
    mlp_dim: int
    dropout_rate: float
    attention_dropout_rate: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        y = nn.LayerNorm(epsilon=1e-6, name="ln1", **kw)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.attention_dropout_rate,
            deterministic=not train,
            kernel_init=_xavier,
            name="attention",
            **kw,
        )(y, y)
        x = x + dropout(y)
        y = nn.LayerNorm(epsilon=1e-6, name="ln2", **kw)(x)
        bias_init = nn.initializers.normal(1e-6)
        y = nn.Dense(self.mlp_dim, kernel_init=_xavier, bias_init=bias_init, name="mlp1", **kw)(y)
        y = dropout(nn.gelu(y, approximate=False))
        y = nn.Dense(x.shape[-1], kernel_init=_xavier, bias_init=bias_init, name="mlp2", **kw)(y)
        return x + dropout(y)


class VisionTransformer(nn.Module):
    """ViT with ``num_layers`` blocks of width ``hidden_size`` on ``patch_size`` patches."""

    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(
                f"ViT built for {self.image_size}×{self.image_size} inputs, got "
                f"{x.shape[1]}×{x.shape[2]}; set image_size"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        p = self.patch_size
        x = self.layers.conv(
            self.hidden_size,
            (p, p),
            p,
            padding=0,
            kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
            name="patch_embed",
            **kw,
        )(x)
        x = x.reshape((x.shape[0], -1, self.hidden_size))
        cls = self.param(
            "class_token", nn.initializers.zeros, (1, 1, self.hidden_size), self.param_dtype
        )
        x = jnp.concatenate(
            [jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[2])).astype(x.dtype), x], axis=1
        )
        pos = self.param(
            "pos_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]), self.param_dtype
        )
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x + pos)
        for i in range(self.num_layers):
            x = EncoderBlock(
                self.num_heads,
                self.mlp_dim,
                self.dropout_rate,
                self.attention_dropout_rate,
                name=f"block{i + 1}",
                **kw,
            )(x, train)
        x = nn.LayerNorm(epsilon=1e-6, name="final_norm", **kw)(x[:, 0])
        x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head", **kw)(x)
        return x.astype(jnp.float32)


# Size: (hidden size, layers, heads, MLP size).
SIZES = {
    "ti": (192, 12, 3, 768),
    "s": (384, 12, 6, 1536),
    "b": (768, 12, 12, 3072),
    "l": (1024, 24, 16, 4096),
}
for _patch in (16, 32):
    for _size, (_hidden, _layers, _heads, _mlp) in SIZES.items():
        register(
            f"vit_{_size}{_patch}",
            VisionTransformer,
            family="ViT",
            input_shape=(224, 224, 3),
            num_classes=1000,
            patch_size=_patch,
            hidden_size=_hidden,
            num_layers=_layers,
            num_heads=_heads,
            mlp_dim=_mlp,
        )
