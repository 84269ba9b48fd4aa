"""Residual networks: ImageNet and CIFAR ResNets, their pre-activation forms, and Wide ResNets.

* ImageNet ResNet-18/34/50/101/152 (He, Zhang, Ren & Sun, 2016, "Deep Residual Learning for
  Image Recognition"): a 7×7/2 stem and 3×3/2 max pool, four stages of basic (18, 34) or
  bottleneck (50+) blocks with 64·2^i base filters, 1×1 projection shortcuts where the shape
  changes (option B), global average pooling and a dense head. As in torchvision ("ResNet
  v1.5") the bottleneck's stride sits on its 3×3 convolution rather than the first 1×1.
  ResNet-18: 11,689,512 parameters; ResNet-50: 25,557,032 (224×224, 1000 classes).
  ``small_images=True`` swaps the stem for a 3×3 stride-1 convolution without max pool, the
  usual way to train these networks on 32×32 images.
* CIFAR ResNet-20/32/44/56/110 (same paper, §4.2): depth 6n+2, a 3×3 conv with 16 filters, three
  stages of n basic blocks with 16, 32 and 64 filters, and the paper's parameter-free shortcut
  option A (identity, subsampled and zero-padded in channels where the shape changes);
  ``shortcut='B'`` uses projections instead. ResNet-20: 269,722 parameters.
* Pre-activation variants (He, Zhang, Ren & Sun, 2016, "Identity Mappings in Deep Residual
  Networks"), ``preact=True``: each block computes BN → ReLU → conv twice (or three times in a
  bottleneck) and adds the untouched input; a projection shortcut is a bare 1×1 convolution
  applied to the pre-activated input; the stem is a bare convolution and a final BN → ReLU
  precedes pooling. Named ``preact_resnet18`` … ``preact_resnet152`` and ``preact_resnet20`` …
  ``preact_resnet110``.
* Wide ResNets (Zagoruyko & Komodakis, 2016, "Wide Residual Networks"): pre-activation CIFAR
  ResNets of depth 6n+4 whose stages have 16k, 32k and 64k filters, with projection shortcuts
  and optional dropout between the two convolutions of a block. WRN-28-10 is ``wrn28_10``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.layers import Layers, conv_kernel_init
from jaxcnn.models.registry import register


class _Makers:
    """The block's ``Layers`` with its dtypes, initialisation and train flag bound."""

    def __init__(self, module: nn.Module, train: bool) -> None:
        self.module = module
        self.train = train

    def conv(self, filters: int, kernel: int, strides: int, name: str) -> nn.Conv:
        m = self.module
        return m.layers.conv(
            filters,
            (kernel, kernel),
            (strides, strides),
            padding=(kernel - 1) // 2,
            use_bias=False,
            kernel_init=conv_kernel_init,
            dtype=m.dtype,
            param_dtype=m.param_dtype,
            name=name,
        )

    def norm(self, name: str) -> Callable[[jax.Array], jax.Array]:
        m = self.module
        return m.layers.batch_norm(
            m.dtype,
            use_running_average=not self.train,
            momentum=0.9,
            epsilon=1e-5,
            param_dtype=m.param_dtype,
            name=name,
        )


def _shortcut_a(x: jnp.ndarray, filters: int, strides: int) -> jnp.ndarray:
    """Option A: subsample spatially and zero-pad the channels up to ``filters``."""
    x = x[:, ::strides, ::strides, :]
    pad = filters - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))


def _residual(shortcut: jax.Array, y: jax.Array, dtype: Any, relu: bool) -> jax.Array:
    """``shortcut + y`` (then ReLU), summed in float32 and returned in ``dtype``.

    In bfloat16, XLA:CPU in JAX 0.12 miscompiles this sum after a strided, channel-padded
    option-A shortcut into NaN (its bfloat16 float-normalization pass); float32 is also the
    precision mixed-precision residual streams are usually summed in.
    """
    total = shortcut.astype(jnp.float32) + y.astype(jnp.float32)
    return (nn.relu(total) if relu else total).astype(dtype)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions and a shortcut, post- or pre-activation.

    ``shortcut`` is 'A' (zero-padded identity) or 'B' (1×1 projection) where the shape changes;
    ``dropout_rate`` drops units between the convolutions (Wide ResNets).
    """

    filters: int
    strides: int = 1
    preact: bool = False
    shortcut: str = "B"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        make = _Makers(self, train)
        project = x.shape[-1] != self.filters or self.strides != 1
        if self.preact:
            y = nn.relu(make.norm("bn1")(x))
            if not project:
                shortcut = x
            elif self.shortcut == "A":
                shortcut = _shortcut_a(x, self.filters, self.strides)
            else:
                shortcut = make.conv(self.filters, 1, self.strides, "proj_conv")(y)
            y = make.conv(self.filters, 3, self.strides, "conv1")(y)
            y = nn.relu(make.norm("bn2")(y))
            y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
            y = make.conv(self.filters, 3, 1, "conv2")(y)
            return _residual(shortcut, y, self.dtype, relu=False)
        y = nn.relu(make.norm("bn1")(make.conv(self.filters, 3, self.strides, "conv1")(x)))
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = make.norm("bn2")(make.conv(self.filters, 3, 1, "conv2")(y))
        if project and self.shortcut == "A":
            x = _shortcut_a(x, self.filters, self.strides)
        elif project:
            x = make.norm("proj_bn")(make.conv(self.filters, 1, self.strides, "proj_conv")(x))
        return _residual(x, y, self.dtype, relu=True)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 convolutions with 4× expansion and a projection shortcut."""

    filters: int
    strides: int = 1
    preact: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        make = _Makers(self, train)
        out = 4 * self.filters
        project = x.shape[-1] != out or self.strides != 1
        if self.preact:
            y = nn.relu(make.norm("bn1")(x))
            shortcut = make.conv(out, 1, self.strides, "proj_conv")(y) if project else x
            y = nn.relu(make.norm("bn2")(make.conv(self.filters, 1, 1, "conv1")(y)))
            y = make.conv(self.filters, 3, self.strides, "conv2")(y)
            y = make.conv(out, 1, 1, "conv3")(nn.relu(make.norm("bn3")(y)))
            return _residual(shortcut, y, self.dtype, relu=False)
        y = nn.relu(make.norm("bn1")(make.conv(self.filters, 1, 1, "conv1")(x)))
        y = nn.relu(make.norm("bn2")(make.conv(self.filters, 3, self.strides, "conv2")(y)))
        y = make.norm("bn3")(make.conv(out, 1, 1, "conv3")(y))
        if project:
            x = make.norm("proj_bn")(make.conv(out, 1, self.strides, "proj_conv")(x))
        return _residual(x, y, self.dtype, relu=True)


def _stages(
    module: nn.Module,
    x: jnp.ndarray,
    train: bool,
    stage_sizes: Sequence[int],
    widths: Sequence[int],
    first_strides: Sequence[int],
    **block_fields: Any,
) -> jnp.ndarray:
    """Run the residual stages; the first block of stage i uses ``first_strides[i]``."""
    block = Bottleneck if block_fields.pop("bottleneck", False) else BasicBlock
    for s, (n, width, stride) in enumerate(zip(stage_sizes, widths, first_strides, strict=True)):
        for b in range(n):
            x = block(
                filters=width,
                strides=stride if b == 0 else 1,
                dtype=module.dtype,
                param_dtype=module.param_dtype,
                layers=module.layers,
                name=f"stage{s + 1}_block{b + 1}",
                **block_fields,
            )(x, train)
    return x


def _head(module: nn.Module, x: jnp.ndarray, train: bool, preact: bool) -> jnp.ndarray:
    """(Final BN → ReLU for pre-activation nets,) global average pool and dense classifier."""
    if preact:
        x = nn.relu(_Makers(module, train).norm("final_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(
        module.num_classes, dtype=module.dtype, param_dtype=module.param_dtype, name="head"
    )(x)
    return x.astype(jnp.float32)


class ResNet(nn.Module):
    """ImageNet ResNet with ``stage_sizes`` blocks per stage.

    Fields: ``bottleneck`` (bottleneck instead of basic blocks), ``preact`` (pre-activation
    blocks), ``small_images`` (3×3 stride-1 stem without max pool, for 32×32 inputs) and
    ``width`` (filters of the first stage; 64 in the paper).
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 1000
    bottleneck: bool = False
    preact: bool = False
    small_images: bool = False
    width: int = 64
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        make = _Makers(self, train)
        if self.small_images:
            x = make.conv(self.width, 3, 1, "stem_conv")(x)
        else:
            x = make.conv(self.width, 7, 2, "stem_conv")(x)
        if not self.preact:
            x = nn.relu(make.norm("stem_bn")(x))
        if not self.small_images:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        x = _stages(
            self,
            x,
            train,
            self.stage_sizes,
            widths=[self.width * 2**i for i in range(len(self.stage_sizes))],
            first_strides=[1] + [2] * (len(self.stage_sizes) - 1),
            bottleneck=self.bottleneck,
            preact=self.preact,
        )
        return _head(self, x, train, self.preact)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs; ``depth`` picks n, ``width`` the first stage's filters.

    ``shortcut`` is 'A' (the paper's zero-padded identity) or 'B' (projections); ``preact``
    selects pre-activation blocks.
    """

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    shortcut: str = "A"
    preact: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
        make = _Makers(self, train)
        x = make.conv(self.width, 3, 1, "stem_conv")(x)
        if not self.preact:
            x = nn.relu(make.norm("stem_bn")(x))
        x = _stages(
            self,
            x,
            train,
            [(self.depth - 2) // 6] * 3,
            widths=[self.width, 2 * self.width, 4 * self.width],
            first_strides=[1, 2, 2],
            shortcut=self.shortcut,
            preact=self.preact,
        )
        return _head(self, x, train, self.preact)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` (depth 6n+4) for 32×32 inputs.

    ``dropout_rate`` is the dropout between the two convolutions of each block (0.3 in some of
    the paper's runs; 0 by default).
    """

    depth: int = 28
    widen_factor: int = 10
    num_classes: int = 10
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if (self.depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4, got {self.depth}")
        x = _Makers(self, train).conv(16, 3, 1, "stem_conv")(x)
        k = self.widen_factor
        x = _stages(
            self,
            x,
            train,
            [(self.depth - 4) // 6] * 3,
            widths=[16 * k, 32 * k, 64 * k],
            first_strides=[1, 2, 2],
            preact=True,
            dropout_rate=self.dropout_rate,
        )
        return _head(self, x, train, preact=True)


_IMAGENET = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}
for _prefix, _preact in (("", False), ("preact_", True)):
    for _depth, (_sizes, _bottleneck) in _IMAGENET.items():
        register(
            f"{_prefix}resnet{_depth}",
            ResNet,
            family="ResNet",
            input_shape=(224, 224, 3),
            num_classes=1000,
            stage_sizes=_sizes,
            bottleneck=_bottleneck,
            preact=_preact,
        )
    for _depth in (20, 32, 44, 56, 110):
        register(
            f"{_prefix}resnet{_depth}",
            CifarResNet,
            family="ResNet",
            input_shape=(32, 32, 3),
            num_classes=10,
            depth=_depth,
            preact=_preact,
        )
register(
    "wrn28_10",
    WideResNet,
    family="ResNet",
    input_shape=(32, 32, 3),
    num_classes=10,
    depth=28,
    widen_factor=10,
)
