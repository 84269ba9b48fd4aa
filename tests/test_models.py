"""The model zoo: parameter counts, output shapes, train/eval behaviour, a few training steps
per family, mixed precision, and the ``python -m jaxcnn.models`` CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import models
from jaxcnn.errors import UserError
from jaxcnn.models import __main__ as cli
from jaxcnn.models import stats
from jaxcnn.models.layers import DropPath, max_pool

REPO = Path(__file__).resolve().parents[1]

# Issue 3's table (default head and resolution).
TABLE = {
    "simple_cnn": 225_034,
    "lenet5": 61_706,
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "googlenet": 6_624_904,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet20": 269_722,
    "efficientnet_b0": 5_288_548,
    "vit_b16": 86_567_656,
    "convnext_tiny": 28_589_128,
    "mobilenet_v2": 3_504_872,
}
# Further counts published for the reference implementations (torchvision's model docs; the
# CIFAR ResNets and WRN-28-10 from their papers' reference code).
PUBLISHED = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet34": 21_797_672,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "wrn28_10": 36_479_194,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    "vit_b32": 88_224_232,
    "vit_l16": 304_326_632,
    "vit_l32": 306_535_400,
    "convnext_small": 50_223_688,
    "convnext_base": 88_591_464,
    # airbench94: the layer shapes of the reference code (KellerJordan/cifar10-airbench).
    "airbench94": 1_971_640,
}

# Small members of each family, for real forward passes and training steps.
TINY = {
    "AirBench": ("airbench94", (32, 32, 3), {"widths": (8, 16, 16)}),
    "SimpleCNN": ("simple_cnn", (28, 28, 1), {}),
    "LeNet": ("lenet5", (32, 32, 1), {}),
    "AlexNet": ("alexnet", (64, 64, 3), {"classifier_width": 32}),
    "VGG": ("vgg11_bn", (32, 32, 3), {"small_images": True}),
    "GoogLeNet": ("googlenet", (32, 32, 3), {"aux_logits": True}),
    "ResNet": ("resnet18", (32, 32, 3), {"small_images": True, "width": 8}),
    "EfficientNet": ("efficientnet_b0", (32, 32, 3), {"width_mult": 0.25, "depth_mult": 0.25}),
    "ViT": (
        "vit_ti16",
        (32, 32, 3),
        {
            "image_size": 32,
            "patch_size": 4,
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "mlp_dim": 64,
            "dropout_rate": 0.1,
        },
    ),
    "ConvNeXt": ("convnext_tiny", (32, 32, 3), {"dims": (16, 32, 64, 128), "depths": (1, 1, 1, 1)}),
    "MobileNetV2": ("mobilenet_v2", (32, 32, 3), {"width_mult": 0.25}),
}


def _images(shape: tuple[int, int, int], batch: int = 4, seed: int = 0) -> jnp.ndarray:
    return jax.random.normal(jax.random.key(seed), (batch, *shape))


def _init(model: nn.Module, x: jnp.ndarray) -> dict:
    """Jitted init (eager Flax runs op by op, much slower on a small CPU); the RBG key makes
    the many initialisers cheaper to compile than the default threefry."""
    return jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)


def _apply(model: nn.Module):
    """Jitted ``model.apply``; pass ``train`` and ``mutable`` (a tuple) by keyword."""
    return jax.jit(model.apply, static_argnames=("train", "mutable"))


def test_registry_has_every_family_and_variant():
    names = set(models.list_models())
    assert set(TABLE) | set(PUBLISHED) <= names
    expected = {"vgg11", "vgg11_bn", "vgg19_bn", "preact_resnet18", "preact_resnet152",
                "preact_resnet20", "preact_resnet110", "wrn28_10", "efficientnet_b7",
                "vit_ti16", "vit_s16", "vit_l16", "vit_ti32", "vit_s32", "vit_l32",
                "convnext_small", "convnext_base"}  # fmt: skip
    assert expected <= names
    assert {models.get_entry(n).family for n in names} == set(TINY)


@pytest.mark.parametrize("name", models.list_models())
def test_params_and_output_shape_at_default_resolution(name):
    """Abstract init at the default input: the parameter count and the logits' shape."""
    entry = models.get_entry(name)
    model = models.create(name)
    x = jax.ShapeDtypeStruct((2, *entry.input_shape), jnp.float32)
    logits, variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    assert logits.shape == (2, entry.num_classes) and logits.dtype == jnp.float32
    reference = TABLE.get(name, PUBLISHED.get(name))
    if reference is not None:
        assert stats.count_params(variables) == reference


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "vit_s16", "efficientnet_b0"])
def test_other_head_sizes_and_resolutions(name):
    model = models.create(name, num_classes=7, **({"image_size": 64} if "vit" in name else {}))
    x = jax.ShapeDtypeStruct((3, 64, 64, 3), jnp.float32)
    logits, _ = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    assert logits.shape == (3, 7)


def test_unknown_model_and_field_are_user_errors():
    with pytest.raises(UserError, match="nosuchmodel"):
        models.create("nosuchmodel")
    with pytest.raises(UserError, match="depthh"):
        models.create("resnet20", depthh=3)


def test_dropout_differs_in_training_and_eval_is_deterministic():
    model = models.create("simple_cnn")
    x = _images((28, 28, 1))
    variables, apply = _init(model, x), _apply(model)
    eval1, eval2 = apply(variables, x), apply(variables, x)
    np.testing.assert_array_equal(eval1, eval2)
    train = apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(train, eval1)
    with pytest.raises(Exception, match="dropout"):
        apply(variables, x, train=True)  # randomness only from the 'dropout' stream


def test_batchnorm_uses_batch_statistics_in_training_and_running_averages_in_eval():
    for name in ("resnet20", "preact_resnet20"):
        model = models.create(name, depth=8)
        x = 3.0 + _images((32, 32, 3))
        variables, apply = _init(model, x), _apply(model)
        eval_out = apply(variables, x)
        np.testing.assert_array_equal(eval_out, apply(variables, x))
        train_out, updates = apply(variables, x, train=True, mutable=("batch_stats",))
        assert not np.allclose(train_out, eval_out, atol=1e-3)
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                               updates["batch_stats"])  # fmt: skip
        assert all(jax.tree.leaves(changed))


def test_drop_path_drops_whole_samples_and_rescales():
    x = jnp.ones((1000, 3, 3, 2))
    layer = DropPath(0.25)
    y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    per_sample = np.unique(np.asarray(y).reshape(1000, -1), axis=1)
    assert per_sample.shape == (1000, 1)  # one decision per sample
    assert set(np.unique(per_sample)) == {0.0, np.float32(1 / 0.75)}
    assert 0.2 < float(jnp.mean(per_sample == 0)) < 0.3
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)


@pytest.mark.parametrize("family", ["ConvNeXt", "ViT"])
def test_stochastic_depth_and_dropout_use_the_dropout_stream(family):
    name, shape, overrides = TINY[family]
    if family == "ViT":
        overrides = {**overrides, "dropout_rate": 0.3}
    else:
        overrides = {**overrides, "stochastic_depth_rate": 0.9}
    model = models.create(name, num_classes=5, **overrides)
    x = _images(shape)
    variables, apply = _init(model, x), _apply(model)
    # ViT's head and ConvNeXt's layer scales start at (nearly) zero, hiding any difference.
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.ones_like(v) if "layer_scale" in str(path) else v, variables
    )
    if family == "ViT":
        head = variables["params"]["head"]
        head["kernel"] = jax.random.normal(jax.random.key(5), head["kernel"].shape)
    np.testing.assert_array_equal(apply(variables, x), apply(variables, x))

    def train(seed: int) -> jnp.ndarray:
        return apply(variables, x, train=True, rngs={"dropout": jax.random.key(seed)},
                     mutable=("batch_stats",))[0]  # fmt: skip

    assert not np.allclose(train(1), train(2))
    np.testing.assert_array_equal(train(1), train(1))


def test_googlenet_aux_logits_only_in_training():
    model = models.create("googlenet", num_classes=5, aux_logits=True)
    x = _images((32, 32, 3), batch=2)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: no compiling
    assert {"aux1_head", "aux2_head"} <= set(variables["params"])

    def apply(variables, train, mutable):
        return jax.eval_shape(
            lambda v: model.apply(v, x, train=train, rngs={"dropout": jax.random.key(1)},
                                  mutable=mutable), variables
        )  # fmt: skip

    logits, state = apply(variables, True, ("batch_stats", "aux_logits"))
    assert logits.shape == (2, 5)
    assert {k: v[0].shape for k, v in state["aux_logits"].items()} == {"aux1": (2, 5),
                                                                       "aux2": (2, 5)}  # fmt: skip
    _, state = apply(variables, False, ("aux_logits",))
    assert "aux_logits" not in state
    plain = models.create("googlenet", num_classes=5)
    assert "aux1_head" not in jax.eval_shape(plain.init, jax.random.key(0), x)["params"]


@pytest.mark.parametrize(
    "name,shape,overrides",
    [
        ("resnet18", (32, 32, 3), {"small_images": True, "width": 8}),
        ("preact_resnet50", (32, 32, 3), {"small_images": True, "width": 8}),
        ("preact_resnet20", (32, 32, 3), {}),
        ("wrn28_10", (32, 32, 3), {"depth": 10, "widen_factor": 1}),
        ("vgg11_bn", (32, 32, 3), {"small_images": True}),
        ("googlenet", (32, 32, 3), {"aux_logits": True}),
        ("efficientnet_b0", (32, 32, 3), {"width_mult": 0.25}),
        ("mobilenet_v2", (32, 32, 3), {"width_mult": 0.25}),
    ],
)
def test_every_batchnorm_gets_the_axis_name(name, shape, overrides):
    model = models.create(name, norm_axis_name="batch", **overrides)
    axis_names = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm):
            axis_names.append(context.module.axis_name)
        return next_fun(*args, **kwargs)

    def init(x: jnp.ndarray):
        with nn.intercept_methods(record):
            return model.init(jax.random.key(0), x)

    jax.eval_shape(init, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    assert axis_names and set(axis_names) == {"batch"}


def test_small_image_stems():
    resnet = models.create("resnet50", small_images=True, num_classes=10)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(resnet.init, jax.random.key(0), x)
    assert variables["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, 64)
    vgg = models.create("vgg16_bn", small_images=True, num_classes=10)
    params = jax.eval_shape(vgg.init, jax.random.key(0), x)["params"]
    assert params["fc1"]["kernel"].shape == (512, 512) and "fc2" not in params
    vit = models.create("vit_ti16", image_size=32, patch_size=4, num_classes=10)
    params = jax.eval_shape(vit.init, jax.random.key(0), x)["params"]
    assert params["pos_embedding"].shape == (1, 65, 192)
    with pytest.raises(ValueError, match="image_size"):
        jax.eval_shape(models.create("vit_ti16").init, jax.random.key(0), x)


# Marked slow: 4-45 s per family on a 2-core CPU, nearly all of it XLA compiling the
# backward pass (GoogLeNet, EfficientNet and MobileNetV2 are the slowest).
@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(TINY))
def test_a_few_training_steps_lower_the_loss(family):
    """Adam on one fixed batch, with the dropout/drop-path masks fixed too, so successive
    losses are comparable; GoogLeNet's auxiliary logits are added to the loss with weight 0.3."""
    name, shape, overrides = TINY[family]
    model = models.create(name, num_classes=4, **overrides)
    x = _images(shape, batch=8, seed=1)
    labels = jnp.arange(8) % 4
    variables = _init(model, x)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)
    rngs = {"dropout": jax.random.key(2)}

    def loss_fn(params, state):
        logits, new_state = model.apply({"params": params, **state}, x, train=True, rngs=rngs,
                                        mutable=["batch_stats", "aux_logits"])  # fmt: skip
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        for (aux,) in new_state.pop("aux_logits", {}).values():
            loss += 0.3 * optax.softmax_cross_entropy_with_integer_labels(aux, labels).mean()
        return loss, new_state

    @jax.jit
    def step(params, state, opt_state):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    losses = []
    for _ in range(8):
        params, state, opt_state, loss = step(params, state, opt_state)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("family", ["ResNet", "ViT"])
def test_bfloat16_computation_keeps_float32_params_and_logits(family):
    name, shape, overrides = TINY[family]
    if family == "ResNet":
        name, overrides = "resnet20", {"depth": 8}
    model = models.create(name, num_classes=1000, dtype=jnp.bfloat16, **overrides)
    x = _images(shape, batch=2)
    variables = _init(model, x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = _apply(model)(variables, x)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 1000)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_flops_count_the_models_arithmetic_not_its_implementation():
    """FLOPs are counted on XLA's convolutions, whichever implementation the model would train
    with (depthwise convolutions as sums over taps would hide from the count)."""
    xla = stats.model_stats("mobilenet_v2")["flops"]
    assert 0.59e9 < xla < 0.61e9  # torchvision's MobileNetV2: 0.30 GMACs, depthwise included


def test_lenet_flops_by_hand():
    # Multiply-adds: C1 28·28·6·25, C3 10·10·16·150, C5 400·120, F6 120·84, output 84·10.
    macs = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert stats.model_stats("lenet5")["flops"] == 2 * macs


def test_listing_and_summary(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.main(["lenet5", "simple_cnn"]) == 0
    out = capsys.readouterr().out
    assert "| lenet5 | LeNet | 32×32×1 | 61,706 |" in out
    assert "| simple_cnn | SimpleCNN | 28×28×1 | 225,034 |" in out
    assert (tmp_path / "jaxcnn" / "model_stats.json").exists()
    assert cli.main(["lenet5"]) == 0  # from the cache
    assert "61,706" in capsys.readouterr().out
    assert cli.main(["--summary", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "c1" in out and "(1, 28, 28, 6)" in out and out.rstrip().endswith("61,706")


def test_cli_unknown_model_is_one_line_and_status_2():
    result = subprocess.run(
        [sys.executable, "-m", "jaxcnn.models", "--summary", "nosuchmodel"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuchmodel" in lines[0] and "resnet50" in lines[0]


@pytest.mark.parametrize("shape", [(2, 8, 12, 3), (2, 7, 9, 3)])  # odd sizes: the last row drops
def test_max_pool_matches_flax_with_its_gradient(shape):
    """layers.max_pool: nn.max_pool's values and, without ties, its gradient; with ties the
    gradient is shared among the tied maxima, so each window still passes on all of it."""
    x = jax.random.normal(jax.random.key(0), shape)
    dy = jax.random.normal(jax.random.key(1), (2, shape[1] // 2, shape[2] // 2, 3))

    def flax_pool(x):
        return nn.max_pool(x, (2, 2), strides=(2, 2))

    np.testing.assert_array_equal(max_pool(x, 2), flax_pool(x))
    grads = [jax.vjp(f, x)[1](dy)[0] for f in (lambda x: max_pool(x, 2), flax_pool)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)
    tied = jnp.zeros((1, 4, 4, 1)).at[0, 0, 0, 0].set(-1.0)  # window (0, 0): three maxima of 0
    (grad,) = jax.vjp(lambda x: max_pool(x, 2), tied)[1](jnp.ones((1, 2, 2, 1)))
    np.testing.assert_allclose(grad[0, :2, :2, 0], [[0, 1 / 3], [1 / 3, 1 / 3]], rtol=1e-6)
    assert float(grad.sum()) == pytest.approx(4.0)
