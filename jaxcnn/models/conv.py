"""The convolution every jaxcnn model uses: ``lax.conv_general_dilated`` with a faster backward
pass for XLA:CPU.

XLA:CPU computes the gradient of a convolution with respect to its kernel (the "filter
gradient") as another convolution with unusual dimension numbers, and that runs 3-10× slower
than the forward convolution of the same layer (BENCHMARKS.md, "Convolution filter gradient").
This module keeps XLA's forward convolution and its input gradient, and computes the filter
gradient as one matrix product per kernel tap instead::

    dW[i, j] = sum over (n, p, q) of  x_padded[n, p*s + i*d, q*s + j*d, :]^T  dY[n, p, q, :]

which XLA:CPU runs at matrix-multiply speed. The result is the same gradient (to float
rounding). ``Conv`` is ``flax.linen.Conv`` using it, with the same parameters and names.

Which filter gradient to use is a process-wide setting read when a step is traced:
``"auto"`` (default: per-tap products on CPU, XLA's own elsewhere, where cuDNN and TPU
convolutions need no help), ``"gemm"`` or ``"xla"``. Training runs set it from the config field
``conv_filter_grad``. Grouped and depthwise convolutions, input dilation and layouts other than
NHWC/HWIO always use XLA's. Like any ``jax.custom_vjp``, the per-tap gradient supports reverse
mode only: set ``"xla"`` to take forward-mode derivatives (``jax.jvp``) through a model.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.errors import unknown_choice

FILTER_GRAD_CHOICES = ("auto", "gemm", "xla")
_NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))
_filter_grad = "auto"


def set_filter_grad(mode: str) -> str:
    """Choose the convolution filter gradient for functions traced from now on; returns the old
    one. A function JAX has already traced (and cached) keeps the gradient it was traced with."""
    global _filter_grad
    if mode not in FILTER_GRAD_CHOICES:
        raise unknown_choice("conv_filter_grad", mode, FILTER_GRAD_CHOICES)
    previous, _filter_grad = _filter_grad, mode
    return previous


@contextlib.contextmanager
def filter_grad(mode: str) -> Iterator[None]:
    """Use ``mode`` for the convolution filter gradient inside the ``with`` block."""
    previous = set_filter_grad(mode)
    try:
        yield
    finally:
        set_filter_grad(previous)


def filter_grad_in_use() -> str:
    """``"gemm"`` or ``"xla"``: the filter gradient the setting selects on this backend."""
    if _filter_grad == "auto":
        return "gemm" if jax.default_backend() == "cpu" else "xla"
    return _filter_grad


def _explicit_padding(
    padding: str | Sequence[tuple[int, int]],
    image_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    if not isinstance(padding, str):
        return tuple((int(lo), int(hi)) for lo, hi in padding)
    window = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilation, strict=True)]
    return tuple(lax.padtype_to_pads(image_shape, window, strides, padding))


def gemm_filter_grad(
    x: jax.Array,
    dy: jax.Array,
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """Gradient of an NHWC/HWIO convolution with respect to its kernel, one matmul per tap.

    ``x`` is the convolution's input, ``dy`` the cotangent of its output; ``padding`` holds the
    explicit (low, high) padding of the two spatial axes. Products accumulate in float32.
    """
    kh, kw, cin, cout = kernel_shape
    (sh, sw), (dh, dw) = strides, dilation
    batch, out_h, out_w, _ = dy.shape
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
    dy_rows = dy.reshape(-1, cout)
    taps = []
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (batch, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, cin)
            x_tap = lax.slice(x, start, limit, (1, sh, sw, 1)).reshape(-1, cin)
            taps.append(
                lax.dot_general(
                    x_tap,
                    dy_rows,
                    (((0,), (0,)), ((), ())),
                    precision=precision,
                    preferred_element_type=jnp.float32,
                )
            )
    return jnp.stack(taps).reshape(kernel_shape)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: lax.ConvGeneralDilatedDimensionNumbers = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: lax.PrecisionLike = None,
    preferred_element_type: jnp.dtype | None = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` (same arguments and result) with the configured filter
    gradient; see the module docstring for when the per-tap gradient applies."""
    conv = functools.partial(
        lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    if (
        filter_grad_in_use() != "gemm"
        or lhs.ndim != 4
        or feature_group_count != 1
        or batch_group_count != 1
        or any(d != 1 for d in lhs_dilation or ())
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC
    ):
        return conv(lhs, rhs)

    strides = tuple(window_strides)
    dilation = tuple(rhs_dilation or (1, 1))
    pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides, dilation)

    @jax.custom_vjp
    def conv_with_gemm_grad(x: jax.Array, w: jax.Array) -> jax.Array:
        return conv(x, w)

    def forward(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        return conv(x, w), (x, w)

    def backward(residuals: tuple[jax.Array, jax.Array], dy: jax.Array):
        x, w = residuals
        (dx,) = jax.vjp(lambda x: conv(x, w), x)[1](dy)
        dw = gemm_filter_grad(x, dy, w.shape, strides, pads, dilation, precision)
        return dx, dw.astype(w.dtype)

    conv_with_gemm_grad.defvjp(forward, backward)
    return conv_with_gemm_grad(lhs, rhs)


class Conv(nn.Conv):
    """``flax.linen.Conv`` computing its filter gradient as ``conv_general_dilated`` here says.

    Same fields, parameters and parameter names as ``nn.Conv``.
    """

    conv_general_dilated: nn.linear.ConvGeneralDilatedT | None = conv_general_dilated
