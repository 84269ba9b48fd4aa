"""Every experiment config loads, names a model of the zoo, and trains on its input.

Every config's init and train step are traced with ``jax.eval_shape`` at its input shape, which
checks model fields, shapes and optimizer settings without compiling. Configs with small models
(under a million parameters) also run two real steps on a batch of 2; compiling the backward
pass of the bigger ones takes up to minutes on a 2-core CPU, and tests/test_models.py already
trains a small member of every family.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import cli, models, sweep_runner
from jaxcnn.data import DatasetInfo
from jaxcnn.data.presets import get_preset
from jaxcnn.errors import UserError
from jaxcnn.training.setup import build_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))
_RUN_BELOW_PARAMS = 1_000_000  # smaller models run real steps; larger ones are only traced


def _input_spec(config) -> tuple[tuple[int, int, int], int]:
    """(image shape, classes) the config feeds its model, without opening the dataset."""
    preset = get_preset(config.dataset.name)
    entry = models.get_entry(config.model.name)
    native = preset.image_shape if preset else entry.input_shape
    size = config.dataset.image_size or native[0]
    return (size, size, native[2]), preset.num_classes if preset else entry.num_classes


def _two_train_steps(config):
    """(state before, state after two steps, metrics), or their shapes for large models."""
    image_shape, num_classes = _input_spec(config)
    # The CLI's own parts, on generated data of the config's shape.
    info = DatasetInfo(config.dataset.name, num_classes, image_shape, 1_000 * config.batch_size, 0)
    setup = build_setup(config, info=info)
    step = setup.train_step()
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.normal(size=(2, *image_shape)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, num_classes, size=(2,)), jnp.int32),
    }

    init = setup.init_fn()
    compiled_step = jax.jit(step)  # traced (and, for small models, compiled) once, run twice

    def two_steps(state, batch):
        # Two steps: with a warm-up the learning rate of the first one is zero.
        after, _ = compiled_step(state, batch)
        after, metrics = compiled_step(after, batch)
        return state, after, metrics

    state = jax.eval_shape(init)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    if num_params >= _RUN_BELOW_PARAMS:
        return jax.eval_shape(two_steps, state, batch)
    return two_steps(jax.jit(init)(), batch)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_trains(path):
    with open(path, encoding="utf-8") as f:
        source = f.read()
    assert f"experiments/{os.path.basename(path)}" in source, "docstring lacks its command"
    config = cli.load_config_file(path)
    assert config.model.name in models.list_models()

    before, after, metrics = _two_train_steps(config)

    assert after.step.shape == ()
    assert metrics["loss"].shape == ()
    if isinstance(metrics["loss"], jax.Array):  # really run, not traced
        assert int(after.step) == int(before.step) + 2
        assert np.isfinite(float(metrics["loss"]))
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before.params, after.params)
        assert any(jax.tree.leaves(changed)), "training changed no parameter"


def _declares_sweep(path: str) -> bool:
    with open(path, encoding="utf-8") as f:
        return "def get_sweep(" in f.read()


@pytest.mark.parametrize(
    "path", [p for p in EXPERIMENTS if _declares_sweep(p)], ids=os.path.basename
)
def test_declared_sweep_points_are_valid_overrides(path, tmp_path):
    sweep = cli.load_config_file(path, "get_sweep")
    points = sweep_runner.plan(cli.load_config_file(path), sweep, str(tmp_path))
    assert len({p.workdir for p in points}) == len(points) > 1


def test_resnet_cifar_depth_argument_selects_the_model():
    path = os.path.join(REPO, "experiments", "resnet_cifar.py")
    assert cli.load_config_file(f"{path}:56").model.name == "resnet56"
    assert cli.load_config_file(path).model.name == "resnet20"
    with pytest.raises(UserError, match="valid choices: 110, 20, 32, 44, 56"):
        cli.load_config_file(f"{path}:57")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_docstring_says_what_jaxcnn_measured(path):
    """Every experiment quotes our own number beside the paper's, or says it has none yet."""
    with open(path, encoding="utf-8") as f:
        docstring = f.read().split('"""')[1]
    assert "Measured with jaxcnn:" in docstring


# Run in a fresh interpreter: loads each experiment file as the CLIs do (the file, then its
# get_config() and get_sweep()), then imports jaxcnn.cli, and prints what each step changed.
_LOAD_EXPERIMENTS = """
import json, os, runpy, sys
before = dict(os.environ)
changes = {}
def check(name):
    changed = sorted(k for k in {*before, *os.environ} if before.get(k) != os.environ.get(k))
    loaded = sorted({"jax", "tensorflow"} & set(sys.modules))
    if changed or loaded:
        changes[name] = {"environment": changed, "imported": loaded}
for path in sys.argv[1:]:
    namespace = runpy.run_path(path)
    for function in ("get_config", "get_sweep"):
        if function in namespace:
            namespace[function]()
    check(os.path.basename(path))
import jaxcnn.cli
check("jaxcnn.cli")
print(json.dumps(changes))
"""


def test_loading_experiment_files_has_no_side_effects():
    """Experiment files (with jaxcnn.sweep_grid, which some import) and jaxcnn.cli change no
    environment variable and load neither JAX nor TensorFlow: the CLIs quiet TensorFlow when
    they run (``cli.quiet_tensorflow``), not when something is imported."""
    # What an earlier test's import of JAX or TensorFlow set here must not hide a change there.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "TPU_"))}
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_EXPERIMENTS, *EXPERIMENTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {}
