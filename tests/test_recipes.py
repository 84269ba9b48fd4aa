"""Training features that published recipes need: schedules, per-parameter learning-rate
multipliers, weight averaging (EMA and Lookahead), test-time augmentation, reflect-filled
crops, data-dependent initialisation (airbench's whitening), and the fast CIFAR recipe."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from jaxcnn import models
from jaxcnn.config import base_config
from jaxcnn.data import augment, device_resident
from jaxcnn.errors import UserError
from jaxcnn.models.airbench import identity_first_init, whitening_kernel
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.optim import check_names, make_optimizer, make_schedule, parse_path_rules
from jaxcnn.training.state import TrainState
from jaxcnn.training.step import ema_decay_schedule, tta_logits, update_ema

from conftest import SHARED_DATASETS, run_cli


def _schedule(**fields) -> optax.Schedule:
    config = base_config().schedule
    config.update(fields)
    return make_schedule(config, peak=2.0, steps_per_epoch=10, total_steps=100)


def test_linear_schedule_warms_up_from_a_fraction_and_decays_to_end_factor():
    schedule = _schedule(name="linear", warmup_epochs=2.0, warmup_init_factor=0.2, end_factor=0.1)
    assert float(schedule(0)) == pytest.approx(0.4)
    assert float(schedule(10)) == pytest.approx(1.2)
    assert float(schedule(20)) == pytest.approx(2.0)
    assert float(schedule(60)) == pytest.approx(2.0 - 0.5 * 1.8)
    assert float(schedule(100)) == pytest.approx(0.2)


def _sgd_updates(steps: int = 1, grad: float = 1.0, **optimizer) -> list[dict]:
    """The updates of ``steps`` SGD steps (rate 0.5, no momentum, 2 steps per epoch) on a
    kernel, a bias and a head of ones, with constant gradients ``grad``."""
    config = base_config()
    config.optimizer.momentum = 0.0
    config.optimizer.update(optimizer)
    check_names(config)
    tx = make_optimizer(config, optax.constant_schedule(0.5), steps_per_epoch=2)
    params = {"block": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "head": jnp.ones((3, 1))}
    grads = jax.tree.map(lambda p: jnp.full_like(p, grad), params)
    state, all_updates = tx.init(params), []
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        all_updates.append(updates)
    return all_updates


def test_lr_multipliers_scale_freeze_and_take_the_first_match():
    (updates,) = _sgd_updates(lr_multipliers="block/bias=0,block/.*=3")
    np.testing.assert_allclose(updates["block"]["bias"], 0.0)
    np.testing.assert_allclose(updates["block"]["kernel"], -1.5)
    np.testing.assert_allclose(updates["head"], -0.5)


def test_weight_decay_on_kernels_or_all_and_per_parameter_factors():
    (kernels,) = _sgd_updates(grad=0.0, weight_decay=0.1)
    np.testing.assert_allclose(kernels["block"]["kernel"], -0.05)
    np.testing.assert_allclose(kernels["block"]["bias"], 0.0)  # biases don't decay by default
    (every,) = _sgd_updates(grad=0.0, weight_decay=0.1, weight_decay_params="all")
    np.testing.assert_allclose(every["block"]["bias"], -0.05)
    # airbench's pairing: a bias that learns 2× faster decays at the same rate as the rest.
    (paired,) = _sgd_updates(
        weight_decay=0.1,
        weight_decay_params="all",
        weight_decay_multipliers="bias=0.5,head=0",
        lr_multipliers="bias=2",
    )
    np.testing.assert_allclose(paired["block"]["bias"], -2 * 0.5 * (1 + 0.1 * 0.5))
    np.testing.assert_allclose(paired["block"]["kernel"], -0.5 * (1 + 0.1))
    np.testing.assert_allclose(paired["head"], -0.5)  # a factor of 0: no decay


def test_freeze_after_epochs_stops_only_the_named_parameters_at_their_epoch():
    steps = _sgd_updates(steps=4, freeze_after_epochs="bias=1")  # 2 steps per epoch
    assert [float(u["block"]["bias"][0]) for u in steps] == [-0.5, -0.5, 0.0, 0.0]
    assert [float(u["block"]["kernel"][0, 0]) for u in steps] == [-0.5] * 4


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("lr_multipliers", "bias"),
        ("lr_multipliers", "=2"),
        ("lr_multipliers", "bias=x"),
        ("lr_multipliers", "[=1"),
        ("weight_decay_multipliers", "bias=-1"),
        ("freeze_after_epochs", "whiten/bias"),
    ],
)
def test_malformed_per_parameter_rules_are_user_errors(field, text):
    with pytest.raises(UserError, match=f"optimizer.{field} entry .* is not REGEX="):
        parse_path_rules(f"optimizer.{field}", text)


def test_weight_decay_fields_name_their_valid_choices():
    config = base_config()
    config.optimizer.weight_decay_params = "biases"
    with pytest.raises(UserError, match="valid choices: all, kernels"):
        check_names(config)
    config = base_config()
    config.optimizer.name = "adamw"
    config.optimizer.weight_decay_multipliers = "bias=0.5"
    with pytest.raises(UserError, match="sgd or rmsprop"):
        check_names(config)


def _state(params: jax.Array, ema: jax.Array, step: int) -> TrainState:
    return TrainState(
        step=jnp.asarray(step),
        params={"w": params},
        batch_stats={"m": params * 10},
        opt_state=(),
        rng=jax.random.key(0),
        ema={"params": {"w": ema}, "batch_stats": {"m": ema * 10}},
    )


def test_ema_moves_every_n_steps_and_lookahead_resets_the_weights():
    decay_at = ema_decay_schedule(0.75, "none", 100)
    weights, average = jnp.array([4.0]), jnp.array([0.0])
    off_step = update_ema(_state(weights, average, 3), decay_at, every=2, lookahead=False)
    np.testing.assert_array_equal(off_step.ema["params"]["w"], average)
    on_step = update_ema(_state(weights, average, 4), decay_at, every=2, lookahead=False)
    np.testing.assert_allclose(on_step.ema["params"]["w"], [1.0])  # 0 + 0.25 * (4 - 0)
    np.testing.assert_allclose(on_step.ema["batch_stats"]["m"], [10.0])
    np.testing.assert_array_equal(on_step.params["w"], weights)
    synced = update_ema(_state(weights, average, 4), decay_at, every=2, lookahead=True)
    np.testing.assert_allclose(synced.params["w"], [1.0])
    np.testing.assert_allclose(synced.batch_stats["m"], [10.0])
    not_due = update_ema(_state(weights, average, 3), decay_at, every=2, lookahead=True)
    np.testing.assert_array_equal(not_due.params["w"], weights)


def test_ema_warmups():
    assert float(ema_decay_schedule(0.999, "count", 100)(0.0)) == pytest.approx(0.1)
    assert float(ema_decay_schedule(0.999, "count", 100)(1e6)) == pytest.approx(0.999)
    cubic = ema_decay_schedule(0.8, "cubic", 100)
    assert float(cubic(50.0)) == pytest.approx(0.8 / 8)
    assert float(cubic(100.0)) == pytest.approx(0.8)


def test_tta_views_and_weights():
    images = jnp.arange(2 * 4 * 5 * 1, dtype=jnp.float32).reshape(2, 4, 5, 1)

    def top_left(x: jax.Array) -> jax.Array:  # a "model" that reads one pixel
        return x[:, 0, 0, :]

    np.testing.assert_array_equal(tta_logits(top_left, images, "none"), images[:, 0, 0])
    mirrored = 0.5 * (images[:, 0, 0] + images[:, 0, -1])
    np.testing.assert_allclose(tta_logits(top_left, images, "flip"), mirrored)
    # Shifted down-right by one, the top-left pixel is the reflection of pixel (1, 1); shifted
    # up-left, it is pixel (1, 1) itself; their mirror images read column -2.
    shifted = 0.5 * (images[:, 1, 1] + images[:, 1, -2])
    expected = 0.5 * mirrored + 0.5 * shifted
    np.testing.assert_allclose(tta_logits(top_left, images, "flip+translate"), expected)
    with pytest.raises(UserError, match="eval_tta"):
        tta_logits(top_left, images, "rotate")


def _reflect_crops(image: np.ndarray, padding: int) -> set[bytes]:
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode="reflect")
    size = image.shape[0]
    crops = set()
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[top : top + size, left : left + size]
            crops |= {crop.tobytes(), crop[:, ::-1].tobytes()}
    return crops


def test_reflect_filled_crops_agree_between_tensorflow_and_jax():
    size, padding, count = 8, 2, 300
    image = (1 + np.arange(size * size, dtype=np.float32)).reshape(size, size, 1)
    expected = _reflect_crops(image, padding)
    tf_crops = tf.data.Dataset.range(count).map(
        lambda i: augment.random_crop_flip(
            tf.constant(image), tf.stack([tf.constant(0, tf.int64), i]), padding, "reflect"
        )
    )
    tf_images = next(tf_crops.batch(count).as_numpy_iterator())

    def jax_crop(key: jax.Array) -> jax.Array:
        crop_key, flip_key = jax.random.split(key)
        crop = device_resident.random_crop(crop_key, jnp.asarray(image), padding, "reflect")
        return device_resident.random_flip(flip_key, crop)

    keys = jax.random.split(jax.random.key(0), count)
    jax_images = np.asarray(jax.jit(jax.vmap(jax_crop))(keys))
    for images in (tf_images, jax_images):
        assert all(crop.tobytes() in expected for crop in images)
        assert len({crop.tobytes() for crop in images}) > 20  # offsets and flips vary
        assert (images > 0).all()  # no zero fill


def test_whitening_kernel_decorrelates_patches():
    rng = np.random.default_rng(0)
    smooth = rng.normal(size=(64, 18, 18, 3)).cumsum(axis=1).cumsum(axis=2)  # correlated
    images = (smooth / smooth.std()).astype(np.float32)
    kernel = whitening_kernel(images, 2, eps=1e-8)
    assert kernel.shape == (2, 2, 3, 24)
    outputs = jax.lax.conv_general_dilated(
        jnp.asarray(images), jnp.asarray(kernel), (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    flat = np.asarray(outputs, np.float64).reshape(-1, 24)[:, :12]
    covariance = flat.T @ flat / len(flat)
    np.testing.assert_allclose(covariance, np.eye(12), atol=1e-3)
    np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])


def test_airbench_convolutions_start_as_identities():
    kernel = np.asarray(identity_first_init(jax.random.key(0), (3, 3, 4, 6)))
    np.testing.assert_array_equal(kernel[1, 1, :, :4], np.eye(4))
    assert np.abs(kernel[:, :, :, :4]).sum() == 4.0
    assert np.abs(kernel[..., 4:]).max() <= 1 / np.sqrt(36) and kernel[..., 4:].std() > 0


def test_checkpoints_without_ema_keep_their_old_layout(tmp_path):
    """A state without an average is saved without an ``ema`` entry, so checkpoints of runs
    started before the EMA existed restore, and the other way round."""
    state = TrainState(
        step=jnp.asarray(3), params={"w": jnp.ones(2)}, batch_stats={}, opt_state=(),
        rng=jax.random.key_data(jax.random.key(1)),
    )  # fmt: skip
    checkpointer = Checkpointer(str(tmp_path), keep=1)
    checkpointer.save(3, state)
    checkpointer.close()
    checkpointer = Checkpointer(str(tmp_path), keep=1)
    assert "ema" not in checkpointer.restore(3, None)
    restored = checkpointer.restore(3, jax.device_get(state))
    checkpointer.close()
    assert restored.ema is None and int(restored.step) == 3
    np.testing.assert_array_equal(restored.params["w"], np.ones(2))


def test_data_init_fits_the_whitening_to_the_first_training_images(digits_data_dir):
    """The loop's data-dependent init path: the same first images, however often it runs."""
    from jaxcnn import data

    config = base_config().dataset
    config.data_dir = digits_data_dir
    first = data.first_train_images(config, 40)
    again = data.first_train_images(config, 50)
    assert first.shape == (40, 8, 8, 1)
    np.testing.assert_array_equal(first, again[:40])
    assert abs(float(first.mean())) < 0.5  # normalised
    model = models.create("airbench94", num_classes=10)
    assert model.data_init(np.repeat(first, 3, axis=-1))["whiten"]["kernel"].shape == (2, 2, 3, 24)


@pytest.mark.skipif(
    not (SHARED_DATASETS / "cifar10_jpeg").is_dir(),
    reason=f"the prepared offline CIFAR-10 copy is not at {SHARED_DATASETS}/cifar10_jpeg",
)
@pytest.mark.timeout(300)
def test_fast_cifar_recipe_runs_a_few_steps(tmp_path):
    """experiments/fast_cifar.py end to end on a few small steps (CI can't train it to the
    end): whitening fitted from data, Lookahead average evaluated with flip+translate TTA."""
    result = run_cli(
        "jaxcnn.train",
        "--config=experiments/fast_cifar.py",
        f"--workdir={tmp_path}",
        "--config.dataset.name=cifar10_jpeg",
        # The streaming pipeline reads only what 10 small steps need; the recipe's device
        # pipeline would decode all 60,000 images first (tests/test_data.py covers it).
        "--config.dataset.pipeline=streaming",
        "--config.dataset.cache=False",
        "--config.dataset.shuffle_buffer=256",
        "--config.dataset.eval_split=test[:200]",
        "--config.num_train_steps=10",
        "--config.batch_size=32",
        "--config.eval_batch_size=100",
        "--config.schedule.warmup_epochs=0",
        "--config.ema.every_steps=2",
        env={"TFDS_DATA_DIR": str(SHARED_DATASETS)},
    )
    assert result.returncode == 0, result.stderr
    assert "Initialised whiten from 5000 training images" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"] == "airbench94" and results["step"] == 10
    assert results["eval_weights"] == "ema"
    assert results["eval"]["num_examples"] == results["eval_raw"]["num_examples"] == 200
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in evals if r["split"] == "eval"][-1]
    assert final["ema_accuracy"] == results["eval"]["accuracy"]
    assert final["accuracy"] == results["eval_raw"]["accuracy"]
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    saved = checkpointer.restore(10, None)
    checkpointer.close()
    whiten = saved["params"]["whiten"]["kernel"]
    np.testing.assert_allclose(whiten[..., 12:], -whiten[..., :12], rtol=1e-6)  # frozen fit
    # Step 10 is a Lookahead step: the trained weights were reset to the average.
    averages = jax.tree.leaves(saved["ema"]["params"])
    for a, b in zip(jax.tree.leaves(saved["params"]), averages, strict=True):
        np.testing.assert_array_equal(a, b)


def _lenet_step(accum_steps: int):
    from jaxcnn.training.step import make_train_step

    model = models.create("lenet5", num_classes=10)
    tx = optax.sgd(0.1, momentum=0.9)
    step = make_train_step(model, tx, optax.constant_schedule(0.1), accum_steps=accum_steps)
    return model, tx, jax.jit(step)


def test_gradient_accumulation_makes_the_update_of_the_whole_batch():
    """LeNet-5 has no BatchNorm, so 4 micro-batches of 8 give the update of one batch of 32."""
    from jaxcnn.training.state import init_train_state

    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.normal(size=(32, 32, 32, 1)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, size=32), jnp.int32),
    }
    results = {}
    for accum_steps in (1, 4):
        model, tx, step = _lenet_step(accum_steps)
        state = jax.jit(lambda model=model, tx=tx: init_train_state(model, tx, (32, 32, 1), 0))()
        for _ in range(2):
            state, metrics = step(state, batch)
        results[accum_steps] = state, metrics
    (whole, whole_metrics), (accumulated, accumulated_metrics) = results[1], results[4]
    assert int(accumulated.step) == 2  # a step is one update, however many micro-batches
    for a, b in zip(
        jax.tree.leaves(whole.params), jax.tree.leaves(accumulated.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for key in ("loss", "accuracy", "top5_accuracy", "grad_norm"):
        assert float(accumulated_metrics[key]) == pytest.approx(float(whole_metrics[key]), rel=1e-4)
    assert float(whole_metrics["loss"]) > 0 and float(whole_metrics["grad_norm"]) > 0


def test_top5_counts_a_label_among_the_five_highest_logits():
    from jaxcnn.training.step import classification_metrics

    logits = jnp.array([[9.0, 8, 7, 6, 5, 4, 3], [9.0, 8, 7, 6, 5, 4, 3]])
    metrics = classification_metrics(logits, jnp.array([2, 6]))
    np.testing.assert_array_equal(metrics["correct"], [0, 0])
    np.testing.assert_array_equal(metrics["correct_top5"], [1, 0])
    assert "correct_top5" not in classification_metrics(logits[:, :5], jnp.array([0, 1]))


def test_rmsprop_follows_tensorflows_convention():
    """The mean square starts at 1 and epsilon is inside the square root."""
    config = base_config()
    config.optimizer.name, config.optimizer.momentum, config.optimizer.eps = "rmsprop", 0.0, 0.1
    tx = make_optimizer(config, optax.constant_schedule(0.5))
    params = jnp.array([1.0])
    updates, _ = tx.update(jnp.array([2.0]), tx.init(params), params)
    expected = -0.5 * 2.0 / np.sqrt(0.9 * 1.0 + 0.1 * 4.0 + 0.1)
    np.testing.assert_allclose(updates, [expected], rtol=1e-6)


def test_exponential_and_polynomial_schedules():
    exponential = _schedule(name="exponential", decay_factor=0.5, decay_every_epochs=2.5)
    assert [float(exponential(s)) for s in (0, 24, 25, 50)] == pytest.approx([2, 2, 1, 0.5])
    polynomial = _schedule(name="polynomial", power=2.0, end_factor=0.0)
    assert float(polynomial(50)) == pytest.approx(2.0 * 0.25)
    with pytest.raises(UserError, match="decay_factor"):
        _schedule(name="exponential", decay_factor=1.5)


def test_efficientnet_batchnorm_has_the_reference_constants():
    import flax.linen as nn

    model = models.create("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    norms = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm):
            norms.append((context.module.epsilon, context.module.momentum))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert norms and set(norms) == {(1e-3, 0.99)}


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer.name": "rmsprop", "optimizer.eps": 1e-3, "schedule.name": "exponential",
         "schedule.decay_every_epochs": 0.5, "ema.decay": 0.99, "ema.warmup": "count"},
        {"optimizer.name": "lars", "optimizer.learning_rate": 1.0, "schedule.name": "polynomial",
         "optimizer.accum_steps": 4},
        {"optimizer.name": "lamb", "optimizer.learning_rate": 0.01, "eval_tta": "flip",
         "optimizer.lr_multipliers": "conv1/.*=0"},
    ],
    ids=["rmsprop", "lars", "lamb"],
)  # fmt: skip
def test_recipe_fields_train_the_quickstart(overrides, digits_data_dir, tmp_path):
    from test_train import quickstart_config

    from jaxcnn.training.loop import train_and_evaluate

    config = quickstart_config(
        digits_data_dir, num_train_steps=48, **{"schedule.warmup_epochs": 0.0}, **overrides
    )
    results = train_and_evaluate(config, str(tmp_path))
    assert results["eval"]["accuracy"] > 0.3, results  # learnt something (chance: 0.1)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["grad_norm"]) for r in records if r["split"] == "train")


def test_eval_splits_epoch_intervals_and_profile(digits_data_dir, tmp_path):
    from test_train import quickstart_config

    from jaxcnn.training.loop import train_and_evaluate

    config = quickstart_config(
        digits_data_dir,
        num_train_steps=40,
        eval_every_epochs=1.0,
        profile_steps="3:5",
        **{
            "schedule.warmup_epochs": 0.0,
            "dataset.train_split": "train[:80%]",
            "dataset.eval_split": "test,train[80%:]",
        },
    )
    results = train_and_evaluate(config, str(tmp_path))
    steps_per_epoch = int(1437 * 0.8) // config.batch_size
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    eval_steps = sorted({r["step"] for r in records if r["split"] == "eval"})
    assert eval_steps == [steps_per_epoch, 2 * steps_per_epoch, 40]
    held_out = [r for r in records if r["split"] == "eval:train[80%:]"]
    assert [r["step"] for r in held_out] == eval_steps
    assert held_out[-1]["num_examples"] == results["eval_splits"]["train[80%:]"]["num_examples"]
    assert results["eval"]["num_examples"] == 360 and "top5_accuracy" in results["eval"]
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0


def test_bfloat16_training_keeps_float32_state():
    """Mixed precision: parameters, optimizer state and BatchNorm statistics stay float32
    through a train step of a bfloat16 model."""
    from jaxcnn.training.state import init_train_state
    from jaxcnn.training.step import make_train_step

    model = models.create("resnet20", num_classes=10, depth=8, width=4, dtype=jnp.bfloat16)
    tx = optax.sgd(0.1, momentum=0.9)
    state = jax.jit(lambda: init_train_state(model, tx, (16, 16, 3), 0, ema=True))()
    step = jax.jit(
        make_train_step(model, tx, optax.constant_schedule(0.1), ema_decay_at=lambda s: 0.5)
    )
    batch = {"image": jnp.ones((4, 16, 16, 3)), "label": jnp.arange(4)}
    state, metrics = step(state, batch)
    float32 = jnp.dtype(jnp.float32)
    for part in (state.params, state.opt_state, state.batch_stats, state.ema):
        assert {leaf.dtype for leaf in jax.tree.leaves(part)} == {float32}
    assert np.isfinite(float(metrics["loss"]))
