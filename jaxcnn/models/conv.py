"""The convolution every jaxcnn model uses: ``lax.conv_general_dilated``, computed by oneDNN
or reformulated where XLA:CPU is slow.

XLA:CPU's convolution kernels are slow next to oneDNN, PyTorch's CPU library (BENCHMARKS.md,
"Where a convolution's time goes"). The fastest way out is to call oneDNN (``"onednn"``, see
``jaxcnn/kernels/onednn.py``): forward, input gradient and kernel gradient of float32 and
bfloat16 convolutions, dense, grouped and depthwise. Where oneDNN cannot run (no compiler, other
dtypes, bfloat16 on a CPU without bfloat16 instructions), two parts of a convolution's training
step run far below the machine's speed on XLA:CPU (BENCHMARKS.md, "Where a convolution's time
goes"):

- The gradient of a dense convolution with respect to its kernel (the "filter gradient"),
  which XLA computes as another convolution with unusual dimension numbers: 3-10× slower than
  the forward convolution of the same layer. Here it is one matrix product per kernel tap::

      dW[i, j] = sum over (n, p, q) of  x_padded[n, p*s + i*d, q*s + j*d, :]^T  dY[n, p, q, :]

  while the forward convolution and the input gradient stay XLA's.
- Depthwise convolutions (MobileNet, EfficientNet), forward and backward, 7-50× slower than
  memory speed. Here they are a sum over kernel taps of shifted, strided slices of the input,
  each scaled by its kernel row: element-wise work that XLA fuses into one loop, and whose
  gradients JAX derives as the same kind of loops.

Both give the same values as XLA's own convolution (to float rounding). Models use this function
as their ``flax.linen.Conv``'s ``conv_general_dilated`` (``Layers.conv`` in ``layers.py``), with
flax's own parameters and names.

Which implementation runs is part of the model, chosen when it is built (the ``conv_impl`` of
its ``Layers``, see ``layers.py``): ``"onednn"``, ``"taps"`` or ``"xla"``, or ``"auto"``,
resolved once by :func:`resolve_impl` for the platform: ``"onednn"`` on CPU where oneDNN is
available (one device, a ``jit`` mesh of several, where each device convolves its own shard of
the batch, ``pmap``, several processes), ``"taps"`` on CPU where it is not, and ``"xla"`` on GPU
and TPU, where cuDNN and TPU convolutions need no help. Two models with different
implementations can live in one process. Under ``"onednn"``, convolutions that oneDNN cannot run
at full speed here (:func:`onednn.unsupported`: dtypes other than float32 and bfloat16, or
bfloat16 without the CPU's bfloat16 instructions) take the ``"taps"`` path, which is said once
per dtype. Input dilation and layouts other than NHWC/HWIO always use XLA's, as do grouped
convolutions other than depthwise outside oneDNN. The oneDNN call and the dense filter gradient
are ``jax.custom_vjp`` functions, which support reverse mode only: build with ``"xla"`` to take
forward-mode derivatives (``jax.jvp``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from jaxcnn.errors import UserError, unknown_choice
from jaxcnn.kernels import onednn

IMPL_CHOICES = ("auto", "onednn", "taps", "xla")
_NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


def resolve_impl(impl: str) -> str:
    """The implementation ``"onednn"``, ``"taps"`` or ``"xla"`` that ``impl`` selects on this
    process's platform; builds the oneDNN kernel where it is chosen. A ``UserError`` for an
    unknown name, or ``"onednn"`` where it cannot run.
    """
    if impl not in IMPL_CHOICES:
        raise unknown_choice("conv_impl", impl, IMPL_CHOICES)
    backend = jax.default_backend()
    if impl == "onednn":
        if backend != "cpu":
            raise UserError(f"conv_impl 'onednn' runs on CPU only, not {backend}")
        if reason := onednn.load():
            raise UserError(f"conv_impl 'onednn' is unavailable here: {reason}")
    if impl != "auto":
        return impl
    if backend != "cpu":
        return "xla"
    return "onednn" if onednn.load() is None else "taps"


@functools.cache
def _onednn_runs(dtype: jnp.dtype) -> bool:
    """Whether oneDNN computes convolutions of ``dtype`` here; says once why not."""
    reason = onednn.unsupported(dtype)
    if reason and jax.process_index() == 0:
        print(f"conv_impl 'onednn': {dtype.name} convolutions take the taps path: {reason}.")
    return reason is None


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


def _taps(
    x: jax.Array,
    kernel_size: Sequence[int],
    out_size: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> Iterator[tuple[int, int, jax.Array]]:
    """``(i, j, input window of tap (i, j))`` for each kernel tap: the strided slice of the
    padded NHWC ``x`` that kernel position ``(i, j)`` multiplies, one row per output pixel."""
    (kh, kw), (out_h, out_w), (sh, sw), (dh, dw) = kernel_size, out_size, strides, dilation
    batch, channels = x.shape[0], x.shape[3]
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (batch, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, channels)
            yield i, j, lax.slice(x, start, limit, (1, sh, sw, 1))


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
    dy_rows = dy.reshape(-1, cout)
    taps = [
        lax.dot_general(
            window.reshape(-1, cin),
            dy_rows,
            (((0,), (0,)), ((), ())),
            precision=precision,
            preferred_element_type=jnp.float32,
        )
        for _, _, window in _taps(x, (kh, kw), dy.shape[1:3], strides, padding, dilation)
    ]
    return jnp.stack(taps).reshape(kernel_shape)


def depthwise_conv_taps(
    x: jax.Array,
    kernel: jax.Array,
    out_size: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> jax.Array:
    """Depthwise NHWC convolution (``kernel``: [kh, kw, 1, channels]) with output spatial size
    ``out_size``, as a sum over taps accumulated in at least float32 like XLA's convolutions."""
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    windows = _taps(x, kernel.shape[:2], out_size, strides, padding, dilation)
    terms = (
        window.astype(accumulate) * kernel[i, j, 0].astype(accumulate) for i, j, window in windows
    )
    return functools.reduce(jnp.add, terms).astype(jnp.result_type(x, kernel))


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
    *,
    impl: str = "xla",
    mesh: Mesh | None = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` (same arguments and result) computed by ``impl``
    (``"onednn"``, ``"taps"`` or ``"xla"``; see the module docstring for which convolutions it
    reformulates). ``mesh``: the ``jit`` program's mesh, over all of whose axes the batch is
    split, for oneDNN to convolve each device's shard (``onednn.conv``); XLA partitions the
    other implementations itself."""
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
        impl == "xla"
        or lhs.ndim != 4
        or batch_group_count != 1
        or any(d != 1 for d in lhs_dilation or ())
        or preferred_element_type is not None
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC
    ):
        return conv(lhs, rhs)
    strides = tuple(window_strides)
    dilation = tuple(rhs_dilation or (1, 1))
    pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides, dilation)
    out_size = jax.eval_shape(conv, lhs, rhs).shape[1:3]  # XLA's own shape rule
    if impl == "onednn" and all(p >= 0 for pair in pads for p in pair) and _onednn_runs(lhs.dtype):
        return onednn.conv(lhs, rhs, out_size, strides, pads, dilation, feature_group_count, mesh)

    channels = lhs.shape[-1]
    if feature_group_count == channels and rhs.shape[-2:] == (1, channels):
        return depthwise_conv_taps(lhs, rhs, out_size, strides, pads, dilation)
    if feature_group_count != 1:
        return conv(lhs, rhs)

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
