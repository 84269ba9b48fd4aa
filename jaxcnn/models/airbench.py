"""airbench (Jordan, 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU"): the small
VGG-like network of the fast CIFAR-10 training recipes.

A 2×2 convolution whose filters whiten image patches (fitted to training images by
:meth:`AirBench.data_init`, then frozen by the recipe), GELU, three groups of conv → 2×2 max
pool → BatchNorm → GELU → conv → BatchNorm → GELU, a global max pool, and a bias-free linear
head whose logits are scaled by 1/9. Its BatchNorms have no scale (only a bias), momentum 0.6
and epsilon 1e-12; its 3×3 convolutions start as identity maps on their first input channels
(PyTorch's ``dirac_`` initialisation), the rest PyTorch's default uniform initialisation.
``airbench94`` (widths 64/256/256) has 1,971,640 parameters. The recipe (Nesterov SGD, label
smoothing, Lookahead, flip+translate test-time augmentation) is ``experiments/fast_cifar.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.models.layers import Layers, max_pool
from jaxcnn.models.registry import register


def torch_default_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32):
    """PyTorch's default weight initialisation: uniform in ±1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(math.prod(shape[:-1]))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def identity_first_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32):
    """HWIO kernel whose first min(in, out) filters pass their input channel through (a 1 at
    the centre tap), the others :func:`torch_default_init`."""
    kernel = torch_default_init(key, shape, dtype)
    height, width, inputs, outputs = shape
    n = min(inputs, outputs)
    kernel = kernel.at[..., :n].set(0.0)
    return kernel.at[height // 2, width // 2, jnp.arange(n), jnp.arange(n)].set(1.0)


def whitening_kernel(images: np.ndarray, size: int, eps: float = 5e-4) -> np.ndarray:
    """HWIO kernel of ``2 * size² * C`` filters: the eigenvectors of the covariance of the
    ``size``×``size`` patches of NHWC ``images``, scaled by 1/sqrt(eigenvalue + eps), largest
    first, then the same negated (so that a following GELU keeps both signs)."""
    _, height, width, channels = images.shape
    dim = size * size * channels
    covariance = np.zeros((dim, dim))
    count = 0
    for chunk in np.array_split(images, max(1, len(images) // 500)):
        patches = np.stack(
            [
                chunk[:, i : height - size + 1 + i, j : width - size + 1 + j, :]
                for i in range(size)
                for j in range(size)
            ],
            axis=3,
        ).reshape(-1, dim)  # (position, (i, j, channel)): the kernel's HWI order
        patches = patches.astype(np.float64)
        covariance += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / count)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    filters = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + eps)
    return np.concatenate([filters, -filters], axis=1).reshape(size, size, channels, 2 * dim)


class ConvGroup(nn.Module):
    """conv → 2×2 max pool → BatchNorm → GELU → conv → BatchNorm → GELU."""

    features: int
    bn_momentum: float = 0.6
    bn_epsilon: float = 1e-12
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def norm(name: str) -> Callable[[jax.Array], jax.Array]:
            return self.layers.batch_norm(
                self.dtype,
                use_running_average=not train,
                use_scale=False,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                param_dtype=self.param_dtype,
                name=name,
            )

        def conv(name: str) -> nn.Conv:
            return self.layers.conv(
                self.features,
                (3, 3),
                padding=1,
                use_bias=False,
                kernel_init=identity_first_init,
                name=name,
                **kw,
            )

        x = conv("conv1")(x)
        x = max_pool(x, 2)
        x = nn.gelu(norm("norm1")(x), approximate=False)
        x = conv("conv2")(x)
        return nn.gelu(norm("norm2")(x), approximate=False)


class AirBench(nn.Module):
    """The airbench network with group ``widths``; see the module docstring."""

    widths: tuple[int, ...] = (64, 256, 256)
    num_classes: int = 10
    whiten_size: int = 2
    logit_scale: float = 1 / 9
    bn_momentum: float = 0.6
    bn_epsilon: float = 1e-12
    data_init_examples: int = 5000  # training images that data_init fits the whitening to
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        size = self.whiten_size
        x = self.layers.conv(
            2 * size * size * x.shape[-1],
            (size, size),
            padding="VALID",
            kernel_init=torch_default_init,
            name="whiten",
            **kw,
        )(x)
        x = nn.gelu(x, approximate=False)
        for i, width in enumerate(self.widths):
            x = ConvGroup(
                width,
                self.bn_momentum,
                self.bn_epsilon,
                layers=self.layers,
                name=f"group{i + 1}",
                **kw,
            )(x, train)
        x = jnp.max(x, axis=(1, 2))
        x = nn.Dense(
            self.num_classes, use_bias=False, kernel_init=torch_default_init, name="head", **kw
        )(x)
        return (x * self.logit_scale).astype(jnp.float32)

    def data_init(self, images: np.ndarray) -> dict[str, Any]:
        """Parameters fitted to normalised training ``images``: the whitening filters."""
        return {"whiten": {"kernel": whitening_kernel(np.asarray(images), self.whiten_size)}}


register(
    "airbench94",
    AirBench,
    family="AirBench",
    input_shape=(32, 32, 3),
    num_classes=10,
    widths=(64, 256, 256),
)
