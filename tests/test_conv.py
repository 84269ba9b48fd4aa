"""jaxcnn's convolution: the per-tap formulations (dense filter gradient, depthwise convolution)
must give XLA's values for every stride, padding and dilation, and run where the setting says."""

import re

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
CHANNELS = 5


def _forward_and_grads(conv_fn, x, w, **kwargs):
    def apply(x, w):
        return conv_fn(x, w, dimension_numbers=NHWC, **kwargs)

    def loss(x, w):
        return jnp.sum(jnp.sin(apply(x, w)))

    return jax.jit(apply)(x, w), *jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)


@pytest.mark.parametrize("kind", ["dense", "depthwise"])
@pytest.mark.parametrize(
    ("image", "kernel", "strides", "padding", "dilation"),
    [
        ((9, 9), (3, 3), (1, 1), "SAME", (1, 1)),
        ((9, 9), (3, 3), (2, 2), "SAME", (1, 1)),  # odd size, stride 2
        ((10, 10), (7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1)),  # ResNet stem
        ((9, 9), (1, 1), (2, 2), "VALID", (1, 1)),  # projection shortcut
        ((12, 12), (3, 3), (1, 1), "SAME", (2, 2)),  # dilated
        ((11, 11), (5, 5), (2, 2), ((1, 0), (0, 1)), (1, 1)),  # asymmetric padding
        ((12, 8), (4, 4), (4, 4), "VALID", (1, 1)),  # patch embedding, non-square image
        ((8, 8), (5, 3), (1, 2), "SAME", (1, 1)),  # non-square kernel and strides
        ((8, 8), (3, 3), (1, 1), ((2, -1), (0, 1)), (1, 1)),  # negative padding crops
    ],
)
def test_taps_equal_xla(kind, image, kernel, strides, padding, dilation):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, *image, CHANNELS)), jnp.float32)
    kwargs = dict(window_strides=strides, padding=padding, rhs_dilation=dilation)
    if kind == "dense":
        w = jnp.asarray(rng.normal(size=(*kernel, CHANNELS, 6)), jnp.float32)
    else:
        w = jnp.asarray(rng.normal(size=(*kernel, 1, CHANNELS)), jnp.float32)
        kwargs["feature_group_count"] = CHANNELS
    with conv.use_impl("taps"):
        y, dx, dw = _forward_and_grads(conv.conv_general_dilated, x, w, **kwargs)
    y_ref, dx_ref, dw_ref = _forward_and_grads(lax.conv_general_dilated, x, w, **kwargs)
    if kind == "dense":
        np.testing.assert_array_equal(y, y_ref)  # the forward pass is XLA's, untouched
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4)
    assert float(jnp.abs(dw).max()) > 1.0  # a real gradient, not zeros on both sides


@pytest.mark.parametrize("kind", ["dense", "depthwise"])
def test_bfloat16_keeps_dtype_and_value(kind):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 16)), jnp.bfloat16)
    kwargs = dict(window_strides=(1, 1), padding="SAME")
    if kind == "dense":
        w = jnp.asarray(rng.normal(size=(3, 3, 16, 8)), jnp.bfloat16)
    else:
        w = jnp.asarray(rng.normal(size=(3, 3, 1, 16)), jnp.bfloat16)
        kwargs["feature_group_count"] = 16
    with conv.use_impl("taps"):
        results = _forward_and_grads(conv.conv_general_dilated, x, w, **kwargs)
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    references = _forward_and_grads(lax.conv_general_dilated, x32, w32, **kwargs)
    for result, reference in zip(results, references, strict=True):
        assert result.dtype == jnp.bfloat16
        error = jnp.linalg.norm(result.astype(jnp.float32) - reference)
        assert error / jnp.linalg.norm(reference) < 0.03  # bfloat16 rounding, nothing more


def _primitives(x, w, **kwargs) -> str:
    # A new function each time: the setting is read when a function is traced, and JAX caches
    # traces.
    def apply(x, w):
        return conv.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)

    return str(jax.make_jaxpr(apply)(x, w))


def test_which_implementation_runs():
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    depthwise = dict(dimension_numbers=NHWC, feature_group_count=4)
    grouped = dict(dimension_numbers=NHWC, feature_group_count=2)
    nchw_x, oihw_w = jnp.ones((2, 4, 8, 8)), jnp.ones((4, 4, 3, 3))
    assert jax.default_backend() == "cpu"
    with conv.use_impl("auto"):  # CPU: the per-tap formulations, where they apply
        assert conv.impl_in_use() == "taps"
        assert "custom_vjp_call" in _primitives(x, w, dimension_numbers=NHWC)
        assert "conv_general_dilated" not in _primitives(x, jnp.ones((3, 3, 1, 4)), **depthwise)
        assert "custom_vjp" not in _primitives(x, jnp.ones((3, 3, 2, 4)), **grouped)
        assert "custom_vjp" not in _primitives(nchw_x, oihw_w, dimension_numbers=None)
    with conv.use_impl("xla"):
        assert conv.impl_in_use() == "xla"
        assert "custom_vjp" not in _primitives(x, w, dimension_numbers=NHWC)
        assert "conv_general_dilated" in _primitives(x, jnp.ones((3, 3, 1, 4)), **depthwise)
    assert conv.set_impl("auto") == "auto"  # the context managers restored the default


def test_unknown_implementation_names_the_choices():
    with pytest.raises(UserError, match="unknown conv_impl 'fast'; valid choices: auto, taps"):
        conv.set_impl("fast")


def test_conv_module_matches_flax_conv():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 3)), jnp.float32)
    ours, flax_conv = conv.Conv(4, (3, 3), strides=2), nn.Conv(4, (3, 3), strides=2)
    params = ours.init(jax.random.key(0), x)
    reference = flax_conv.init(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    jax.tree.map(np.testing.assert_array_equal, params, reference)
    np.testing.assert_array_equal(ours.apply(params, x), flax_conv.apply(params, x))


def test_depthwise_models_use_taps():
    model = models.create("mobilenet_v2", num_classes=10)
    images = jnp.ones((1, 32, 32, 3))
    groups = {}
    for mode in ("taps", "xla"):
        with conv.use_impl(mode):
            jaxpr = str(jax.make_jaxpr(lambda x: model.init(jax.random.key(0), x))(images))
        groups[mode] = {int(g) for g in re.findall(r"feature_group_count=(\d+)", jaxpr)}
    assert groups["taps"] == {1}  # every depthwise convolution became a sum over taps
    assert max(groups["xla"]) == 960  # MobileNetV2's widest depthwise layer, left to XLA


def test_resnet_gradients_agree_between_implementations():
    """A whole model's gradient (stem, strided blocks, shortcuts, BatchNorm) is the same."""
    model = models.create("resnet20", num_classes=10, depth=8)  # one block per stage
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
    for mode in ("taps", "xla"):
        with conv.use_impl(mode):
            fresh_loss = lambda params: loss(params)  # noqa: E731  (new: traced anew)
            jaxpr = str(jax.make_jaxpr(fresh_loss)(variables["params"]))
            assert ("custom_vjp_call" in jaxpr) == (mode == "taps")
            grads[mode] = jax.jit(jax.grad(fresh_loss))(variables["params"])
    flat_taps, flat_xla = (jax.tree.leaves(grads[m]) for m in ("taps", "xla"))
    assert len(flat_taps) == len(flat_xla) > 10
    for a, b in zip(flat_taps, flat_xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
