"""Reference implementations of the basic CNN operations, written to be read.

Each function works on one 2-D channel with explicit loops over the output positions, so the
arithmetic of every output value is visible. They are slow; the models use compiled ones
(:mod:`jaxcnn.models.conv`, which runs oneDNN's kernels on the CPU and XLA's
``jax.lax.conv_general_dilated`` elsewhere; ``flax.linen.max_pool`` / ``avg_pool``), and the
tests check that they agree.

Note on "convolution": like every deep-learning library, :func:`conv2d` computes a
*cross-correlation* — the kernel slides over the image without being flipped. (A convolution
in the signal-processing sense would flip the kernel first; for learned kernels the
difference does not matter, since the network simply learns the flipped kernel.)
"""

from __future__ import annotations

import numpy as np


def output_size(n: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Number of positions a window of size ``kernel`` takes along an axis of length ``n``.

    The axis is first padded with ``padding`` zeros at each end; windows start every ``stride``
    steps and must lie entirely inside the padded axis: ``(n + 2*padding - kernel) // stride + 1``.
    """
    return (n + 2 * padding - kernel) // stride + 1


def conv2d(image: np.ndarray, kernel: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """2-D convolution (cross-correlation) of one channel.

    Args:
      image: array of shape (H, W).
      kernel: array of shape (KH, KW).
      stride: step between neighbouring windows, the same along both axes.
      padding: number of zero rows/columns added on every side of the image.

    Returns:
      The feature map, of shape (output_size(H, KH, ...), output_size(W, KW, ...)), where
      ``out[i, j] = sum(padded[i*stride : i*stride+KH, j*stride : j*stride+KW] * kernel)``.
    """
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    padded = np.pad(image, padding)  # zeros all around
    kh, kw = kernel.shape
    out_h = output_size(image.shape[0], kh, stride, padding)
    out_w = output_size(image.shape[1], kw, stride, padding)
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * stride, j * stride
            window = padded[top : top + kh, left : left + kw]
            out[i, j] = np.sum(window * kernel)  # multiply element-wise, then add up
    return out


def _pool2d(image: np.ndarray, size: int, stride: int | None, reduce: str) -> np.ndarray:
    """Slide a ``size``×``size`` window (no padding) and reduce each window with ``reduce``."""
    image = np.asarray(image, dtype=np.float64)
    stride = size if stride is None else stride
    out_h = output_size(image.shape[0], size, stride)
    out_w = output_size(image.shape[1], size, stride)
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * stride, j * stride
            window = image[top : top + size, left : left + size]
            out[i, j] = window.max() if reduce == "max" else window.mean()
    return out


def max_pool2d(image: np.ndarray, size: int = 2, stride: int | None = None) -> np.ndarray:
    """Max pooling of one (H, W) channel: the largest value in each ``size``×``size`` window.

    Windows start every ``stride`` steps (default: ``size``, i.e. non-overlapping) and must fit
    inside the image; there is no padding.
    """
    return _pool2d(image, size, stride, "max")


def avg_pool2d(image: np.ndarray, size: int = 2, stride: int | None = None) -> np.ndarray:
    """Average pooling of one (H, W) channel: the mean of each ``size``×``size`` window.

    Windows start every ``stride`` steps (default: ``size``) and must fit inside the image.
    """
    return _pool2d(image, size, stride, "mean")
