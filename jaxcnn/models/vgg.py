"""VGG (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"): configurations A, B, D and E as VGG-11, -13, -16 and -19.

Stacks of 3×3 convolutions (64, 128, 256, 512, 512 filters per block) each followed by a 2×2
max pool, then a classifier. As in torchvision, the ``_bn`` variants put BatchNorm after every
convolution (a later addition, not in the paper), and an adaptive average pool to 7×7 precedes
the 4096-4096 classifier so other input sizes work. VGG-16 has 138,357,544 parameters at
224×224 with 1000 classes.

``small_images=True`` selects a classifier suited to 32×32 inputs (as in common CIFAR VGGs):
the 1×1×512 feature map (globally averaged for larger inputs) goes through dense 512 → ReLU →
dropout → dense ``num_classes`` instead of the adaptive pool and the 4096-wide layers.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models.layers import Layers, adaptive_avg_pool, conv_kernel_init, max_pool
from jaxcnn.models.registry import register

# Filters of the 3×3 convolutions, block by block; each block ends in a 2×2 max pool.
CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(nn.Module):
    """VGG-``depth`` (11, 13, 16 or 19), with BatchNorm if ``batch_norm``.

    ``small_images`` picks the 32×32 classifier described in the module docstring;
    ``classifier_width`` is the size of the hidden dense layers of the ImageNet classifier.
    """

    depth: int = 16
    num_classes: int = 1000
    batch_norm: bool = False
    small_images: bool = False
    classifier_width: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    layers: Layers = Layers()

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for b, block in enumerate(CONFIGS[self.depth]):
            for i, filters in enumerate(block):
                name = f"block{b + 1}_conv{i + 1}"
                conv = self.layers.conv(
                    filters, (3, 3), padding=1, kernel_init=conv_kernel_init, name=name, **kw
                )
                x = conv(x)
                if self.batch_norm:
                    x = self.layers.batch_norm(
                        self.dtype,
                        use_running_average=not train,
                        momentum=0.9,
                        epsilon=1e-5,
                        param_dtype=self.param_dtype,
                        name=f"{name}_bn",
                    )(x)
                x = nn.relu(x)
            x = max_pool(x, 2)
        dense_init = nn.initializers.normal(0.01)
        if self.small_images:
            x = jnp.mean(x, axis=(1, 2))
            x = nn.relu(nn.Dense(512, kernel_init=dense_init, name="fc1", **kw)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        else:
            x = adaptive_avg_pool(x, (7, 7)).reshape((x.shape[0], -1))
            for i in (1, 2):
                x = nn.Dense(self.classifier_width, kernel_init=dense_init, name=f"fc{i}", **kw)(x)
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
        x = nn.Dense(self.num_classes, kernel_init=dense_init, name="head", **kw)(x)
        return x.astype(jnp.float32)


for _depth in CONFIGS:
    for _bn in (False, True):
        register(
            f"vgg{_depth}{'_bn' if _bn else ''}",
            VGG,
            family="VGG",
            input_shape=(224, 224, 3),
            num_classes=1000,
            depth=_depth,
            batch_norm=_bn,
        )
