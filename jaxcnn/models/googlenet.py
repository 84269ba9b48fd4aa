"""GoogLeNet / Inception v1 (Szegedy et al., 2015, "Going Deeper with Convolutions").

A 7×7/2 stem, nine Inception modules (parallel 1×1, 1×1→3×3, 1×1→"5×5" and pool→1×1 branches
concatenated on channels) in three groups separated by max pools, global average pooling,
dropout and a dense classifier. Follows torchvision rather than the paper: every convolution
is followed by BatchNorm (the paper predates it), max pools use ``ceil_mode`` sizes, and the
"5×5" branch uses a 3×3 convolution (a quirk of the reference port that torchvision keeps and
that its 6,624,904 parameter count includes).

Auxiliary classifiers (after inception 4a and 4d) run only when ``aux_logits`` is set and
``train=True``; their logits are sown into the ``'aux_logits'`` collection as ``'aux1'`` and
``'aux2'``, and ``__call__`` returns only the main logits. Without them the model has
6,624,904 parameters at 224×224 with 1000 classes.

``transform_input`` (off by default; no parameters) is torchvision's input transform, which its
pretrained GoogLeNet turns on: the ported weights expect images scaled to [-1, 1], so images
normalised with the ImageNet mean and std are mapped back to that range, channel by channel,
``x · std/0.5 + (mean − 0.5)/0.5``. Models imported from torchvision (``jaxcnn.convert``) set it.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import ConvBNAct, Layers, adaptive_avg_pool, max_pool_ceil
from jaxcnn.models.registry import register

# (1×1, 3×3 reduce, 3×3, "5×5" reduce, "5×5", pool projection) filters of each module.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


# GoogLeNet's unit, as in torchvision: conv → BatchNorm (ε = 0.001) → ReLU, with Flax's default
# kernel initialiser.
ConvBN = partial(ConvBNAct, bn_epsilon=1e-3, kernel_init=nn.linear.default_kernel_init)


class Inception(nn.Module):
    """One Inception module with the six filter counts of :data:`INCEPTION`."""

    filters: tuple[int, int, int, int, int, int]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv = partial(ConvBN, dtype=self.dtype, param_dtype=self.param_dtype, layers=self.layers)
        f1, f3r, f3, f5r, f5, fp = self.filters
        b1 = conv(f1, 1, name="branch1")(x, train)
        b2 = conv(f3, 3, name="branch2_3x3")(conv(f3r, 1, name="branch2_reduce")(x, train), train)
        b3 = conv(f5, 3, name="branch3_3x3")(conv(f5r, 1, name="branch3_reduce")(x, train), train)
        b4 = conv(fp, 1, name="branch4_proj")(max_pool_ceil(x, 3, 1, padding=1), train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


# The ImageNet normalisation that ``transform_input`` undoes (torchvision's constants).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4×4 average pool → 1×1 conv 128 → dense 1024 → dropout 0.7."""

    num_classes: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = adaptive_avg_pool(x, (4, 4))
        x = ConvBN(128, 1, layers=self.layers, name="conv", **kw)(x, train)
        x = nn.relu(nn.Dense(1024, name="fc1", **kw)(x.reshape((x.shape[0], -1))))
        x = nn.Dropout(0.7, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="fc2", **kw)(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
    """GoogLeNet; ``aux_logits`` adds the two auxiliary classifiers (training only);
    ``transform_input`` rescales ImageNet-normalised inputs to [-1, 1] first (torchvision's)."""

    num_classes: int = 1000
    aux_logits: bool = False
    transform_input: bool = False
    dropout_rate: float = 0.2
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, layers=self.layers)
        if self.transform_input:
            std, mean = jnp.array(IMAGENET_STD), jnp.array(IMAGENET_MEAN)
            x = (x.astype(jnp.float32) * (std / 0.5) + (mean - 0.5) / 0.5).astype(x.dtype)
        x = ConvBN(64, 7, 2, name="conv1", **kw)(x, train)
        x = max_pool_ceil(x, 3, 2)
        x = ConvBN(64, 1, name="conv2", **kw)(x, train)
        x = ConvBN(192, 3, name="conv3", **kw)(x, train)
        x = max_pool_ceil(x, 3, 2)
        for key, filters in INCEPTION.items():
            if key in ("4a", "5a"):
                x = max_pool_ceil(x, 3, 2) if key == "4a" else max_pool_ceil(x, 2, 2)
            x = Inception(filters, name=f"inception{key}", **kw)(x, train)
            # The heads also run at init so their parameters exist whatever `train` was.
            if self.aux_logits and (train or self.is_initializing()) and key in ("4a", "4d"):
                name = "aux1" if key == "4a" else "aux2"
                aux = InceptionAux(self.num_classes, name=f"{name}_head", **kw)(x, train)
                if train:
                    self.sow("aux_logits", name, aux)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(
            self.num_classes, name="head", dtype=self.dtype, param_dtype=self.param_dtype
        )(x).astype(jnp.float32)


register("googlenet", GoogLeNet, family="GoogLeNet", input_shape=(224, 224, 3), num_classes=1000)
