"""jaxcnn's convolution: XLA's forward pass, and a per-tap matmul filter gradient that must equal
XLA's own gradient for every stride, padding and dilation the models use."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxcnn import models
from jaxcnn.errors import UserError
from jaxcnn.models import conv

NHWC = ("NHWC", "HWIO", "NHWC")


def _grads(conv_fn, x, w, **kwargs):
    def loss(x, w):
        return jnp.sum(jnp.sin(conv_fn(x, w, dimension_numbers=NHWC, **kwargs)))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)


@pytest.mark.parametrize(
    ("image", "kernel", "strides", "padding", "dilation"),
    [
        ((9, 9), (3, 3), (1, 1), "SAME", (1, 1)),
        ((9, 9), (3, 3), (2, 2), "SAME", (1, 1)),  # odd size, stride 2
        ((10, 10), (7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1)),  # ResNet stem
        ((9, 9), (1, 1), (2, 2), "VALID", (1, 1)),  # projection shortcut
        ((12, 12), (3, 3), (1, 1), "SAME", (2, 2)),  # dilated
        ((11, 11), (3, 3), (2, 2), ((1, 0), (0, 1)), (1, 1)),  # asymmetric padding
        ((12, 8), (4, 4), (4, 4), "VALID", (1, 1)),  # patch embedding, non-square image
        ((8, 8), (5, 3), (1, 2), "SAME", (1, 1)),  # non-square kernel and strides
        ((8, 8), (3, 3), (1, 1), ((2, -1), (0, 1)), (1, 1)),  # negative padding crops
    ],
)
def test_gemm_filter_grad_equals_xla(image, kernel, strides, padding, dilation):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, *image, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, 5, 6)), jnp.float32)
    kwargs = dict(window_strides=strides, padding=padding, rhs_dilation=dilation)
    with conv.filter_grad("gemm"):
        y = conv.conv_general_dilated(x, w, dimension_numbers=NHWC, **kwargs)
        dx, dw = _grads(conv.conv_general_dilated, x, w, **kwargs)
    y_ref = lax.conv_general_dilated(x, w, dimension_numbers=NHWC, **kwargs)
    dx_ref, dw_ref = _grads(lax.conv_general_dilated, x, w, **kwargs)
    np.testing.assert_array_equal(y, y_ref)  # the forward pass is XLA's, untouched
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4)
    assert float(jnp.abs(dw).max()) > 1.0  # a real gradient, not zeros on both sides


def test_bfloat16_filter_grad_keeps_dtype_and_value():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 16)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(3, 3, 16, 8)), jnp.bfloat16)
    kwargs = dict(window_strides=(1, 1), padding="SAME")
    with conv.filter_grad("gemm"):
        _, dw = _grads(conv.conv_general_dilated, x, w, **kwargs)
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    _, dw_ref = _grads(lax.conv_general_dilated, x32, w32, **kwargs)
    assert dw.dtype == jnp.bfloat16
    error = jnp.linalg.norm(dw.astype(jnp.float32) - dw_ref) / jnp.linalg.norm(dw_ref)
    assert error < 0.03  # bfloat16 rounding of the inputs and cotangents, nothing more


def _uses_gemm_filter_grad(x, w, **kwargs) -> bool:
    # A new function each time: the mode is read when a function is traced, and JAX caches traces.
    def apply(x, w):
        return conv.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)

    return "custom_vjp_call" in str(jax.make_jaxpr(apply)(x, w))


def test_which_filter_grad_runs():
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    assert jax.default_backend() == "cpu"
    with conv.filter_grad("auto"):  # CPU: the per-tap gradient, where it applies
        assert _uses_gemm_filter_grad(x, w, dimension_numbers=NHWC)
        depthwise = dict(dimension_numbers=NHWC, feature_group_count=4)
        assert not _uses_gemm_filter_grad(x, jnp.ones((3, 3, 1, 4)), **depthwise)
        nchw_x, oihw_w = jnp.ones((2, 4, 8, 8)), jnp.ones((4, 4, 3, 3))
        assert not _uses_gemm_filter_grad(nchw_x, oihw_w, dimension_numbers=None)
    with conv.filter_grad("xla"):
        assert not _uses_gemm_filter_grad(x, w, dimension_numbers=NHWC)
    with conv.filter_grad("gemm"):
        assert _uses_gemm_filter_grad(x, w, dimension_numbers=NHWC)
    assert conv.set_filter_grad("auto") == "auto"  # the context managers restored the default


def test_unknown_filter_grad_names_the_choices():
    with pytest.raises(UserError, match="unknown conv_filter_grad 'fast'; valid choices: auto"):
        conv.set_filter_grad("fast")


def test_conv_module_matches_flax_conv():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 3)), jnp.float32)
    ours, flax_conv = conv.Conv(4, (3, 3), strides=2), nn.Conv(4, (3, 3), strides=2)
    params = ours.init(jax.random.key(0), x)
    reference = flax_conv.init(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    jax.tree.map(np.testing.assert_array_equal, params, reference)
    np.testing.assert_array_equal(ours.apply(params, x), flax_conv.apply(params, x))


def test_resnet_gradients_agree_between_filter_grads():
    """A whole model's gradient (stem, strided blocks, shortcuts, BatchNorm) is the same."""
    model = models.create("resnet20", num_classes=10)
    rng = np.random.default_rng(3)
    images = jnp.asarray(rng.normal(size=(4, 16, 16, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 4))
    variables = model.init(jax.random.key(0), images, train=False)

    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = {}
    for mode in ("gemm", "xla"):
        with conv.filter_grad(mode):
            fresh_loss = lambda params: loss(params)  # noqa: E731  (new: traced anew)
            jaxpr = str(jax.make_jaxpr(fresh_loss)(variables["params"]))
            assert ("custom_vjp_call" in jaxpr) == (mode == "gemm")
            grads[mode] = jax.jit(jax.grad(fresh_loss))(variables["params"])
    flat_gemm, flat_xla = (jax.tree.leaves(grads[m]) for m in ("gemm", "xla"))
    assert len(flat_gemm) == len(flat_xla) > 20
    for a, b in zip(flat_gemm, flat_xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
