"""jaxcnn's convolution: oneDNN's and the per-tap formulations (dense filter gradient,
depthwise convolution) must give XLA's values for every stride, padding and dilation, and run
where the model says."""

import functools
import json
import os
import platform
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxcnn import models
from jaxcnn.errors import UserError
from jaxcnn.kernels import onednn
from jaxcnn.models import conv
from jaxcnn.models.layers import Layers

NHWC = ("NHWC", "HWIO", "NHWC")
CHANNELS = 6
ONEDNN_IS_A_DEPENDENCY = sys.platform == "linux" and platform.machine() == "x86_64"


def _require(impl: str) -> None:
    """Skip a oneDNN test where oneDNN is not a dependency; elsewhere it must be available."""
    if impl != "onednn":
        return
    reason = onednn.load()
    if reason and not ONEDNN_IS_A_DEPENDENCY:
        pytest.skip(f"oneDNN is not installed on {sys.platform}/{platform.machine()}: {reason}")
    assert reason is None, reason


def _assert_close(result: jax.Array, reference: jax.Array, tolerance: float = 1e-5) -> None:
    """Equal to float32 rounding: sums of many products differ with the order of summation."""
    scale = float(jnp.abs(reference).max())
    np.testing.assert_allclose(result, reference, rtol=0, atol=tolerance * scale)


def _jitted(conv_fn, **kwargs):
    """The jitted convolution, and the gradient of a loss of it with respect to both operands."""

    def apply(x, w):
        return conv_fn(x, w, dimension_numbers=NHWC, **kwargs)

    def loss(x, w):
        return jnp.sum(jnp.sin(apply(x, w)))

    return jax.jit(apply), jax.jit(jax.grad(loss, argnums=(0, 1)))


def _forward_and_grads(conv_fn, x, w, **kwargs):
    apply, grad = _jitted(conv_fn, **kwargs)
    return apply(x, w), *grad(x, w)


@pytest.mark.parametrize(
    ("impl", "kind"),  # the taps leave grouped convolutions other than depthwise to XLA
    [("onednn", "dense"), ("onednn", "depthwise"), ("onednn", "grouped"), ("taps", "dense"),
     ("taps", "depthwise")],
)  # fmt: skip
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
def test_implementations_equal_xla(impl, kind, image, kernel, strides, padding, dilation):
    _require(impl)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, *image, CHANNELS)), jnp.float32)
    kwargs = dict(window_strides=strides, padding=padding, rhs_dilation=dilation)
    groups = {"dense": 1, "depthwise": CHANNELS, "grouped": 2}[kind]
    out_channels = {"dense": 4, "depthwise": CHANNELS, "grouped": 4}[kind]
    w = jnp.asarray(rng.normal(size=(*kernel, CHANNELS // groups, out_channels)), jnp.float32)
    y, dx, dw = _forward_and_grads(
        functools.partial(conv.conv_general_dilated, impl=impl),
        x,
        w,
        feature_group_count=groups,
        **kwargs,
    )
    y_ref, dx_ref, dw_ref = _forward_and_grads(
        lax.conv_general_dilated, x, w, feature_group_count=groups, **kwargs
    )
    if impl == "taps" and kind == "dense":
        np.testing.assert_array_equal(y, y_ref)  # the forward pass is XLA's, untouched
    for result, reference in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
        _assert_close(result, reference)
    assert float(jnp.abs(dw).max()) > 1.0  # a real gradient, not zeros on both sides


def _relative_error(result: jax.Array, reference: jax.Array) -> float:
    result, reference = result.astype(jnp.float32), reference.astype(jnp.float32)
    return float(jnp.linalg.norm(result - reference) / jnp.linalg.norm(reference))


@pytest.mark.parametrize("impl", ["onednn", "taps"])  # oneDNN's bfloat16 kernels, or the taps
@pytest.mark.parametrize("kind", ["dense", "strided", "depthwise"])
def test_bfloat16_keeps_dtype_and_value(impl, kind):
    _require(impl)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 16)), jnp.bfloat16)
    kwargs = dict(window_strides=(2, 2) if kind == "strided" else (1, 1), padding="SAME")
    if kind == "depthwise":
        w = jnp.asarray(rng.normal(size=(3, 3, 1, 16)), jnp.bfloat16)
        kwargs["feature_group_count"] = 16
    else:
        w = jnp.asarray(rng.normal(size=(3, 3, 16, 8)), jnp.bfloat16)
    ours = functools.partial(conv.conv_general_dilated, impl=impl)
    jaxpr = jax.make_jaxpr(functools.partial(ours, dimension_numbers=NHWC, **kwargs))(x, w)
    assert (onednn.TARGET in str(jaxpr)) == (impl == "onednn")
    results = _forward_and_grads(ours, x, w, **kwargs)
    references = _forward_and_grads(lax.conv_general_dilated, x, w, **kwargs)
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    float32 = _forward_and_grads(lax.conv_general_dilated, x32, w32, **kwargs)
    for result, reference, exact in zip(results, references, float32, strict=True):
        assert result.dtype == jnp.bfloat16
        # XLA's bfloat16 convolution also accumulates in float32: rounding flips at most.
        assert _relative_error(result, reference) < 0.01
        assert _relative_error(result, exact) < 0.03  # bfloat16 rounding, nothing more


def test_onednn_rejects_mixed_dtypes():
    """Both the Python function and the custom call itself name the dtypes they refuse."""
    _require("onednn")
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4), jnp.bfloat16)
    geometry = ((8, 8), (1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    with pytest.raises(TypeError, match="float32 or bfloat16 operands of one dtype, not float32"):
        onednn.conv(x, w, *geometry)
    attributes = dict(
        strides=np.ones(2, np.int64),
        pad_lo=np.ones(2, np.int64),
        pad_hi=np.ones(2, np.int64),
        dilation=np.ones(2, np.int64),
        groups=np.int64(1),
    )
    with pytest.raises(jax.errors.JaxRuntimeError, match="not x float32, w bfloat16, y float32"):
        jax.jit(lambda x, w: onednn._call(0, x, w, (2, 8, 8, 4), attributes))(x, w)


def _primitives(impl: str, x, w, **kwargs) -> str:
    def apply(x, w):
        return conv.conv_general_dilated(x, w, (1, 1), "SAME", impl=impl, **kwargs)

    return str(jax.make_jaxpr(apply)(x, w))


def test_which_implementation_runs():
    _require("onednn")
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    depthwise = dict(dimension_numbers=NHWC, feature_group_count=4)
    grouped = dict(dimension_numbers=NHWC, feature_group_count=2)
    nchw_x, oihw_w = jnp.ones((2, 4, 8, 8)), jnp.ones((4, 4, 3, 3))
    bf16_x, bf16_w = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    assert jax.default_backend() == "cpu" and jax.device_count() == 1
    assert conv.resolve_impl("auto") == "onednn"  # one CPU device
    # oneDNN: every float32 NHWC convolution.
    assert onednn.TARGET in _primitives("onednn", x, w, dimension_numbers=NHWC)
    assert onednn.TARGET in _primitives("onednn", x, jnp.ones((3, 3, 1, 4)), **depthwise)
    assert onednn.TARGET in _primitives("onednn", x, jnp.ones((3, 3, 2, 4)), **grouped)
    assert onednn.TARGET in _primitives("onednn", bf16_x, bf16_w, dimension_numbers=NHWC)
    assert "custom_vjp" not in _primitives("onednn", nchw_x, oihw_w, dimension_numbers=None)
    dense = _primitives("taps", x, w, dimension_numbers=NHWC)
    assert "custom_vjp_call" in dense and onednn.TARGET not in dense
    taps_depthwise = _primitives("taps", x, jnp.ones((3, 3, 1, 4)), **depthwise)
    assert "conv_general_dilated" not in taps_depthwise
    assert "custom_vjp" not in _primitives("taps", x, jnp.ones((3, 3, 2, 4)), **grouped)
    assert "custom_vjp" not in _primitives("xla", x, w, dimension_numbers=NHWC)
    assert "conv_general_dilated" in _primitives("xla", x, jnp.ones((3, 3, 1, 4)), **depthwise)


def test_two_models_with_different_convolutions_in_one_process():
    """The implementation is part of each model: no setting is shared, so one function can
    trace both and each keeps its own."""
    _require("onednn")
    with_onednn = models.create("resnet20", 10, depth=8, conv_impl="onednn")
    with_taps = models.create("resnet20", 10, depth=8, conv_impl="taps")
    with_xla = models.create("resnet20", 10, depth=8, conv_impl="xla")
    images = jnp.asarray(np.random.default_rng(4).normal(size=(2, 16, 16, 3)), jnp.float32)
    variables = with_xla.init(jax.random.key(0), images)

    def logits(model):
        return jax.jit(lambda v, x: model.apply(v, x))

    jaxprs = {
        impl: str(jax.make_jaxpr(lambda v, x, m=model: m.apply(v, x))(variables, images))
        for impl, model in (("onednn", with_onednn), ("taps", with_taps), ("xla", with_xla))
    }
    assert onednn.TARGET in jaxprs["onednn"]
    assert onednn.TARGET not in jaxprs["taps"] and "custom_vjp_call" in jaxprs["taps"]
    assert onednn.TARGET not in jaxprs["xla"] and "custom_vjp" not in jaxprs["xla"]
    reference = logits(with_xla)(variables, images)
    for model in (with_onednn, with_taps):
        _assert_close(logits(model)(variables, images), reference, tolerance=1e-4)


def test_bfloat16_model_computes_with_onednn():
    """A bfloat16 model with float32 parameters (flax casts each kernel to bfloat16) runs every
    convolution of its compiled gradient step as a bfloat16 oneDNN call, and its gradients are
    float32. (Compiled only: test_recipes trains a bfloat16 model, with oneDNN on one CPU.)"""
    _require("onednn")
    images = jax.ShapeDtypeStruct((4, 16, 16, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((4,), jnp.int32)
    model = models.create("resnet20", 10, depth=8, dtype=jnp.bfloat16, conv_impl="onednn")
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)

    def loss(params, variables, images, labels):
        logits, _ = model.apply(
            {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    step = jax.jit(jax.grad(loss)).lower(variables["params"], variables, images, labels)
    step = step.compile()
    calls = re.findall(r"(\w+)\[[\d,]*\]\{[\d,]*\} custom-call\((.*)", step.as_text())
    dtypes = [dtype for dtype, rest in calls if f'"{onednn.TARGET}"' in rest]
    # 7 convolutions: 7 forward, 7 kernel gradients, 6 input gradients (not the stem's).
    assert dtypes == ["bf16"] * 20
    for leaf in jax.tree.leaves((variables["params"], step.out_info)):  # and their gradients
        assert leaf.dtype == jnp.float32


def _output_of_a_fresh_process(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _impl_in_a_fresh_process(env: dict[str, str]) -> str:
    code = (
        "from jaxcnn.errors import UserError\n"
        "from jaxcnn.models import conv\n"
        "print(conv.resolve_impl('auto'))\n"
        "try:\n    conv.resolve_impl('onednn')\nexcept UserError as e:\n    print(e)\n"
    )
    return _output_of_a_fresh_process(code, env)


def test_auto_without_a_compiler_keeps_taps(tmp_path):
    _require("onednn")
    # No compiler to build the custom call with: auto keeps the taps, "onednn" says why not.
    no_compiler = _impl_in_a_fresh_process(
        {"CXX": "no-such-compiler", "JAXCNN_KERNEL_DIR": str(tmp_path)}
    )
    assert no_compiler.splitlines() == [
        "taps",
        "conv_impl 'onednn' is unavailable here: no C++ compiler (set CXX, or install g++)",
    ]
    assert not list(tmp_path.iterdir())  # nothing half-built left behind


def _relative_error(results, references) -> float:
    return max(
        float(jnp.abs(result - reference).max() / jnp.abs(reference).max())
        for result, reference in zip(results, references, strict=True)
    )


def _on_two_devices() -> dict:
    """(In a process with 2 CPU devices.) What ``auto`` and ``build_model`` choose; the error
    against XLA's of oneDNN convolutions (forward, both gradients) of a batch sharded over a
    jit mesh, with the kernel replicated or split (FSDP), of a batch that does not divide over
    the mesh, and under pmap; the shapes of the custom calls and collectives compiled."""
    import ml_collections
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxcnn.training.parallel import DATA_AXIS, JitParallel, PmapParallel
    from jaxcnn.training.setup import build_model

    assert jax.device_count() == 2, jax.devices()
    parallel = JitParallel()
    model_config = ml_collections.ConfigDict({"name": "resnet20", "dtype": "float32"})
    jit_layers = build_model(model_config, 10, parallel).layers
    pmap_layers = build_model(model_config, 10, PmapParallel()).layers
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 9, 9, CHANNELS)).astype(np.float32)
    w = rng.normal(size=(3, 3, CHANNELS, 4)).astype(np.float32)
    kwargs = dict(window_strides=(2, 2), padding="SAME")
    sharded = functools.partial(conv.conv_general_dilated, impl="onednn", mesh=parallel.mesh)
    reference = _forward_and_grads(lax.conv_general_dilated, x, w, **kwargs)

    def shapes(op: str, hlo: str) -> list[str]:
        return sorted(re.findall(rf"= (f32\[[\d,]*\])\S* {op}\([^\n]*", hlo))

    report = {
        "auto": conv.resolve_impl("auto"),
        "jit_layers": [jit_layers.conv_impl, jit_layers.mesh == parallel.mesh],
        "pmap_layers": [pmap_layers.conv_impl, pmap_layers.mesh, pmap_layers.norm_axis_name],
    }
    for kernel, spec in (("replicated", P()), ("fsdp", P(None, None, None, DATA_AXIS))):
        xs = jax.device_put(x, NamedSharding(parallel.mesh, P(DATA_AXIS)))
        ws = jax.device_put(w, NamedSharding(parallel.mesh, spec))
        hlo = "\n".join(f.lower(xs, ws).compile().as_text() for f in _jitted(sharded, **kwargs))
        onednn_calls = [c for c in hlo.splitlines() if f'custom_call_target="{onednn.TARGET}"' in c]
        report[kernel] = {
            "error": _relative_error(_forward_and_grads(sharded, xs, ws, **kwargs), reference),
            "onednn_calls": shapes("custom-call", "\n".join(onednn_calls)),
            "all_gathers": shapes("all-gather", hlo),
            "all_reduces": shapes("all-reduce", hlo),
        }
    odd = _forward_and_grads(sharded, x[:3], w, **kwargs)  # 3 examples on 2 devices: whole
    report["odd_batch_error"] = _relative_error(
        odd, _forward_and_grads(lax.conv_general_dilated, x[:3], w, **kwargs)
    )
    apply, grad = _jitted(functools.partial(conv.conv_general_dilated, impl="onednn"), **kwargs)
    per_device = x.reshape(2, 2, *x.shape[1:])
    y, (dx, dw) = (
        jax.pmap(apply, in_axes=(0, None))(per_device, w),
        jax.pmap(grad, in_axes=(0, None))(per_device, w),
    )
    report["pmap_error"] = _relative_error(
        (y.reshape(reference[0].shape), dx.reshape(x.shape), dw.sum(0)), reference
    )
    return report


@pytest.mark.timeout(120)
def test_onednn_convolves_each_devices_shard_of_the_batch():
    """On a 2-device jit mesh each device convolves its half of the batch by oneDNN: no
    activation is gathered, only the kernel gradient is summed over the devices (and an FSDP
    kernel gathered), and values equal XLA's; under pmap, too, oneDNN runs per device."""
    _require("onednn")
    from test_parallel import cpu_devices_env

    completed = subprocess.run(
        [sys.executable, __file__],
        env=cpu_devices_env(2),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["auto"] == "onednn"
    assert report["jit_layers"] == ["onednn", True]  # build_model passes the jit mesh
    assert report["pmap_layers"] == ["onednn", None, "batch"]
    per_shard = ["f32[2,5,5,4]", "f32[2,5,5,4]", "f32[2,9,9,6]", "f32[3,3,6,4]"]  # y, y, dx, dw
    for kernel, gathered in (("replicated", []), ("fsdp", ["f32[3,3,6,4]"] * 2)):
        assert report[kernel]["onednn_calls"] == per_shard, report
        assert report[kernel]["all_gathers"] == gathered, report  # the kernel only, for FSDP
        assert report[kernel]["all_reduces"] == ["f32[3,3,6,4]"], report  # the kernel gradient
        assert report[kernel]["error"] < 1e-5, report
    assert report["odd_batch_error"] < 1e-5, report
    assert report["pmap_error"] < 1e-5, report


def test_bfloat16_without_cpu_support_takes_the_taps_and_says_so_once():
    """Where oneDNN sees no bfloat16 instructions (hidden here by ``ONEDNN_MAX_CPU_ISA``), it
    would emulate them: bfloat16 convolutions keep the taps, float32 ones still go to oneDNN."""
    _require("onednn")
    code = (
        "import jax, jax.numpy as jnp\n"
        "from jaxcnn.kernels import onednn\n"
        "from jaxcnn.models import conv\n"
        "x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))\n"
        "for dtype in (jnp.bfloat16, jnp.bfloat16, jnp.float32):\n"
        "    f = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), 'SAME', impl='onednn',\n"
        "        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
        "    jaxpr = str(jax.make_jaxpr(f)(x.astype(dtype), w.astype(dtype)))\n"
        "    print('onednn' if onednn.TARGET in jaxpr else 'taps')\n"
    )
    output = _output_of_a_fresh_process(code, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"})
    assert output.splitlines() == [
        "conv_impl 'onednn': bfloat16 convolutions take the taps path: this CPU has no bfloat16 "
        "instructions (AVX512-BF16 or AMX) for oneDNN to use.",
        "taps",
        "taps",
        "onednn",
    ]


def test_building_the_kernel_is_explicit_and_says_so_once(tmp_path):
    """``python -m jaxcnn.kernels`` builds into an empty cache with one line, then finds it."""
    _require("onednn")
    env = {**os.environ, "JAXCNN_KERNEL_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "jaxcnn.kernels"]
    first = subprocess.run(command, env=env, capture_output=True, text=True)
    second = subprocess.run(command, env=env, capture_output=True, text=True)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines() == [
        f"Building the oneDNN convolution kernel (once per machine) into "
        f"{next(tmp_path.glob('*.so'))}.",
        f"oneDNN convolutions: ready (cached in {tmp_path})",
    ]
    assert second.stdout.splitlines() == [f"oneDNN convolutions: ready (cached in {tmp_path})"]


def test_unknown_implementation_names_the_choices():
    with pytest.raises(UserError, match="unknown conv_impl 'fast'; valid choices: auto, onednn, "):
        conv.resolve_impl("fast")
    with pytest.raises(ValueError, match="conv_impl must be onednn, taps or xla, not 'auto'"):
        Layers(conv_impl="auto")  # resolved before a model is built, never while tracing


@pytest.mark.parametrize("impl", ["onednn", "taps", "xla"])
def test_layers_conv_matches_flax_conv(impl):
    _require(impl)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 3)), jnp.float32)
    ours, flax_conv = Layers(impl).conv(4, (3, 3), strides=2), nn.Conv(4, (3, 3), strides=2)
    params = ours.init(jax.random.key(0), x)
    reference = flax_conv.init(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    jax.tree.map(np.testing.assert_array_equal, params, reference)
    _assert_close(ours.apply(params, x), flax_conv.apply(params, x))


def test_depthwise_models_use_taps_or_onednn():
    _require("onednn")
    images = jnp.ones((1, 32, 32, 3))
    groups, onednn_calls = {}, {}
    for mode in ("onednn", "taps", "xla"):
        model = models.create("mobilenet_v2", num_classes=10, conv_impl=mode)
        jaxpr = str(jax.make_jaxpr(lambda x, m=model: m.init(jax.random.key(0), x))(images))
        groups[mode] = {int(g) for g in re.findall(r"feature_group_count=(\d+)", jaxpr)}
        onednn_calls[mode] = jaxpr.count(onednn.TARGET)
    assert groups["onednn"] == set() and onednn_calls["onednn"] == 52  # every convolution
    assert groups["taps"] == {1}  # every depthwise convolution became a sum over taps
    assert max(groups["xla"]) == 960  # MobileNetV2's widest depthwise layer, left to XLA
    assert onednn_calls["taps"] == onednn_calls["xla"] == 0


def test_resnet_gradients_agree_between_implementations():
    """A whole model's gradient (stem, strided blocks, shortcuts, BatchNorm) is the same."""
    rng = np.random.default_rng(3)
    images = jnp.asarray(rng.normal(size=(4, 16, 16, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 4))
    _require("onednn")
    models_by_impl = {  # one block per stage
        mode: models.create("resnet20", num_classes=10, depth=8, conv_impl=mode)
        for mode in ("onednn", "taps", "xla")
    }
    variables = models_by_impl["xla"].init(jax.random.key(0), images, train=False)

    def loss(params, model):
        logits, _ = model.apply(
            {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = {}
    for mode, model in models_by_impl.items():
        model_loss = functools.partial(loss, model=model)
        jaxpr = str(jax.make_jaxpr(model_loss)(variables["params"]))
        assert ("custom_vjp_call" in jaxpr) == (mode != "xla")
        assert (onednn.TARGET in jaxpr) == (mode == "onednn")
        grads[mode] = jax.jit(jax.grad(model_loss))(variables["params"])
    flat_xla = jax.tree.leaves(grads["xla"])
    assert len(flat_xla) > 10
    for mode in ("onednn", "taps"):
        for a, b in zip(jax.tree.leaves(grads[mode]), flat_xla, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    print(json.dumps(_on_two_devices()))
