"""Every experiment config loads, names a model of the zoo, and trains one step on its input.

Small models (under 250k parameters: LeNet-5, SimpleCNN) run one real, compiled train step on
a generated batch of 2. Larger ones are checked with ``jax.eval_shape`` of init + train step,
which traces the whole update (shapes, dtypes, every layer's constructor fields) without
compiling or running it: compiling even ResNet-20 takes ~20 s on a 2-core CPU, WRN-28-10 or
EfficientNet over a minute.
"""

from __future__ import annotations

import glob
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import cli, models, sweeps
from jaxcnn.data.datasets import get_preset
from jaxcnn.errors import UserError
from jaxcnn.training.loop import build_model
from jaxcnn.training.optim import make_optimizer, make_schedule
from jaxcnn.training.state import init_train_state
from jaxcnn.training.step import make_train_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))
WITH_SWEEPS = [p for p in EXPERIMENTS if "\ndef get_sweep(" in pathlib.Path(p).read_text()]
_MAX_PARAMS_TO_RUN = 250_000  # larger models are traced, not run


def _input_spec(config) -> tuple[tuple[int, int, int], int]:
    """(image shape, classes) the config feeds its model, without opening the dataset."""
    preset = get_preset(config.dataset.name)
    spec = models.get_spec(config.model.name)
    native = preset.image_shape if preset else spec.input_shape
    size = config.dataset.image_size or native[0]
    return (size, size, native[2]), preset.num_classes if preset else spec.num_classes


def _one_train_step(config):
    """(state before, state after, metrics) of one step, or their shapes for large inputs."""
    image_shape, num_classes = _input_spec(config)
    model = build_model(config.model, num_classes)
    schedule = make_schedule(
        config.schedule,
        peak=config.optimizer.learning_rate,
        steps_per_epoch=1,
        total_steps=1_000,
    )
    tx = make_optimizer(config, schedule)
    step = make_train_step(
        model,
        tx,
        schedule,
        label_smoothing=config.label_smoothing,
        aux_loss_weight=config.aux_loss_weight,
    )
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.normal(size=(2, *image_shape)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, num_classes, size=(2,)), jnp.int32),
    }

    def init_and_step(batch):
        state = init_train_state(model, tx, image_shape, config.seed)
        return state, *step(state, batch)

    shapes = jax.eval_shape(init_and_step, batch)
    if sum(x.size for x in jax.tree.leaves(shapes[0].params)) > _MAX_PARAMS_TO_RUN:
        return shapes
    return jax.jit(init_and_step)(batch)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_trains_one_step(path):
    with open(path, encoding="utf-8") as f:
        source = f.read()
    assert f"experiments/{os.path.basename(path)}" in source, "docstring lacks its command"
    config = cli.load_config_file(path)
    if config.model.name not in models.list_models():
        pytest.skip(f"model {config.model.name!r} is not in the model zoo yet (branch models)")

    before, after, metrics = _one_train_step(config)

    assert after.step.shape == ()
    assert metrics["loss"].shape == ()
    if isinstance(metrics["loss"], jax.Array):  # really run, not traced
        assert int(after.step) == int(before.step) + 1
        assert np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("path", WITH_SWEEPS, ids=os.path.basename)
def test_declared_sweep_points_are_valid_overrides(path, tmp_path):
    sweep = cli.load_config_file(path, "get_sweep")
    points = sweeps.plan(cli.load_config_file(path), sweep, str(tmp_path))
    assert len({p.workdir for p in points}) == len(points) > 1


def test_resnet_cifar_depth_argument_selects_the_model():
    path = os.path.join(REPO, "experiments", "resnet_cifar.py")
    assert cli.load_config_file(f"{path}:56").model.name == "resnet56"
    assert cli.load_config_file(path).model.name == "resnet20"
    with pytest.raises(UserError, match="valid choices: 110, 20, 32, 44, 56"):
        cli.load_config_file(f"{path}:57")
