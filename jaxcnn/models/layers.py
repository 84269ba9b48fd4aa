"""Small building blocks shared by several model families.

``Layers``, the convolution and BatchNorm factory every family builds with (how they compute is
decided when the model is built, not by a process-wide switch); pooling with PyTorch semantics
(adaptive average pooling, ``ceil_mode`` max pooling); the channel-rounding rule of the
MobileNet/EfficientNet family; stochastic depth; the initializer the reference implementations
use for convolutions; and the conv → BatchNorm → activation unit of GoogLeNet, MobileNetV2 and
EfficientNet.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxcnn.models import conv

# He (Kaiming) normal initialisation with fan-out, as torchvision initialises conv kernels.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round ``channels`` to a multiple of ``divisor``, never going more than 10% below it."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def adaptive_avg_pool(x: jnp.ndarray, output_size: tuple[int, int]) -> jnp.ndarray:
    """Average-pool NHWC ``x`` to ``output_size`` bins, like PyTorch's ``AdaptiveAvgPool2d``.

    Bin ``i`` along an axis of length ``n`` covers ``[floor(i*n/out), ceil((i+1)*n/out))``, so
    bins may overlap and a smaller input is upsampled by repetition.
    """

    def pool_axis(x: jnp.ndarray, axis: int, out: int) -> jnp.ndarray:
        n = x.shape[axis]
        if n == out:
            return x
        bins = [
            jnp.mean(
                jax.lax.slice_in_dim(x, (i * n) // out, -(-(i + 1) * n // out), axis=axis),
                axis=axis,
                keepdims=True,
            )
            for i in range(out)
        ]
        return jnp.concatenate(bins, axis=axis)

    return pool_axis(pool_axis(x, 1, output_size[0]), 2, output_size[1])


def max_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """``nn.max_pool(x, (size, size), strides=(size, size))`` of NHWC ``x``: non-overlapping
    windows, no padding, rows and columns past the last whole window dropped (PyTorch's
    ``MaxPool2d(size)``).

    It is a max over a reshape of the whole windows: the same values, and a gradient that XLA
    fuses into a few elementwise operations, where the pooling primitive's gradient
    (select-and-scatter) took a quarter of airbench94's train step on the CPU (BENCHMARKS.md,
    "Where a train step's time goes"). Tied maxima share the gradient equally instead of
    giving it all to the first; pooled ReLU outputs, where ties are common (zeros), get no
    gradient there either way.
    """
    batch, height, width, channels = x.shape
    rows, cols = height // size, width // size
    tiles = x[:, : rows * size, : cols * size].reshape(batch, rows, size, cols, size, channels)
    return tiles.max(axis=(2, 4))


def max_pool_ceil(x: jnp.ndarray, size: int, stride: int, padding: int = 0) -> jnp.ndarray:
    """Max pooling of NHWC ``x`` with PyTorch's ``ceil_mode=True`` output size.

    The output has ``ceil((n + 2*padding - size) / stride) + 1`` positions per axis (minus one if
    the last window would start in the right padding); windows running off the end see -inf.
    """
    pads = []
    for n in x.shape[1:3]:
        out = math.ceil((n + 2 * padding - size) / stride) + 1
        if (out - 1) * stride >= n + padding:
            out -= 1
        pads.append((padding, (out - 1) * stride + size - n - padding))
    return nn.max_pool(x, (size, size), strides=(stride, stride), padding=pads)


@dataclasses.dataclass(frozen=True)
class Layers:
    """How a model's convolutions and BatchNorms compute, fixed when the model is built.

    Every family has a ``layers: Layers`` field, passes it to its blocks, and builds its
    convolutions with :meth:`conv` and its BatchNorms with :meth:`batch_norm`. So two models in
    one process can compute differently, and no family knows about devices:

    - ``conv_impl``: ``"onednn"``, ``"taps"`` or ``"xla"`` (``conv.py``); ``models.create``
      resolves ``"auto"`` for the platform.
    - ``norm_axis_name``: the mapped device axis that BatchNorm averages its batch statistics
      over under ``pmap`` (None under ``jit``, whose batch is one global array).
    - ``mesh``: the ``jit`` program's mesh, over all of whose axes the batch is split, so that
      each device convolves its own shard by oneDNN (a custom call, which XLA cannot partition
      itself); None (or a mesh of one device) for whole batches, as under ``pmap``, where each
      device's program holds its shard already.

    The defaults (XLA's convolutions, per-batch statistics) are what a module built directly
    (``ResNet(...)``) gets.
    """

    conv_impl: str = "xla"
    norm_axis_name: str | None = None
    mesh: Mesh | None = None

    def __post_init__(self) -> None:
        if self.conv_impl not in conv.IMPL_CHOICES[1:]:  # "auto" is resolved before this
            raise ValueError(
                f"Layers.conv_impl must be onednn, taps or xla, not {self.conv_impl!r}"
            )

    def conv(self, *args: Any, **fields: Any) -> nn.Conv:
        """``nn.Conv(*args, **fields)`` (same parameters and names) computed by ``conv_impl``."""
        compute = functools.partial(conv.conv_general_dilated, impl=self.conv_impl, mesh=self.mesh)
        return nn.Conv(*args, conv_general_dilated=compute, **fields)

    def batch_norm(self, dtype: Any, **fields: Any) -> Callable[[jax.Array], jax.Array]:
        """``nn.BatchNorm(**fields)`` over ``norm_axis_name`` that normalises in float32 and
        returns ``dtype``.

        Mixed precision keeps BatchNorm's arithmetic in float32 (as Keras's mixed-precision
        policy does): its statistics are float32 anyway, and XLA:CPU in JAX 0.12 miscompiles
        bfloat16 BatchNorm inside a ResNet (NaN logits, from its bfloat16 float-normalization
        pass).
        """
        norm = nn.BatchNorm(dtype=jnp.float32, axis_name=self.norm_axis_name, **fields)
        return lambda x: norm(x).astype(dtype)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability ``rate``.

    Survivors are scaled by ``1 / (1 - rate)``; the mask comes from the ``'dropout'`` RNG stream.
    Identity when ``deterministic`` or ``rate == 0``.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class ConvBNAct(nn.Module):
    """Convolution without bias (same padding) → BatchNorm → ``activation`` (None: linear)."""

    filters: int
    kernel: int = 1
    strides: int = 1
    groups: int = 1
    activation: Callable[[jax.Array], jax.Array] | None = nn.relu
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9  # of the running averages (PyTorch's momentum is 1 - this)
    kernel_init: Callable = conv_kernel_init
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = self.layers.conv(
            self.filters,
            (self.kernel, self.kernel),
            self.strides,
            padding=(self.kernel - 1) // 2,
            feature_group_count=self.groups,
            use_bias=False,
            kernel_init=self.kernel_init,
            name="conv",
            **kw,
        )(x)
        x = self.layers.batch_norm(
            self.dtype,
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            param_dtype=self.param_dtype,
            name="bn",
        )(x)
        return x if self.activation is None else self.activation(x)
