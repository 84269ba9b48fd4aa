"""Data parallelism on 8 (virtual CPU) devices computes the update of 1 device (with oneDNN's
convolutions where it builds: under jit each device convolves its shard of the batch).

JAX fixes its device count when it starts, and other test modules start it with one CPU device,
so the comparisons run in a child process (this file run as a script) with
``--xla_force_host_platform_device_count=8``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

NUM_DEVICES = 8
GLOBAL_BATCH = 16
IMAGE_SHAPE = (8, 8, 3)
NUM_CLASSES = 10
NUM_STEPS = 2
LEARNING_RATE = 0.1
# float32 sums over the batch run in a different order on 8 devices than on 1.
TOLERANCE = 1e-5


# The test programs are tiny and compiling them is most of their cost: XLA's cheapest code
# generation compiles them about four times faster.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def cpu_devices_env(count: int) -> dict[str, str]:
    """The environment of a child process that sees ``count`` CPU devices."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={count} {FAST_COMPILE_FLAGS}",
        "PYTHONPATH": str(REPO),
    }


def tiny_resnet(parallel=None):
    """ResNet-8 of width 4: BatchNorm in every block, compiled in seconds; built for
    ``parallel`` as training builds its model (default: a jit program over all devices)."""
    import ml_collections

    from jaxcnn.training.setup import build_model

    config = ml_collections.ConfigDict(
        {"name": "resnet20", "dtype": "float32", "depth": 8, "width": 4}
    )
    return build_model(config, NUM_CLASSES, parallel)


def initial_state(image_shape):
    """The train state at step 0 of :func:`train_for_steps`, on the host."""
    import jax

    from jaxcnn.training.state import init_train_state

    init = functools.partial(init_train_state, tiny_resnet(), optimizer(), image_shape, 0, ema=True)
    return jax.device_get(jax.jit(init)())


def optimizer():
    import optax

    return optax.sgd(LEARNING_RATE, momentum=0.9)


def train_for_steps(parallel, state, batches, *, scanned: bool = False, accum_steps: int = 1):
    """Train from the host ``state`` on ``batches`` (global numpy batches) with ``parallel``:
    one call per step, or with ``scanned`` all the steps in one call (``scan_steps``);
    ``accum_steps`` micro-batches per step.

    Returns the final state (on device) and the per-step losses on the host.
    """
    import numpy as np
    import optax

    from jaxcnn.training.step import ema_decay_schedule, make_train_step, scan_steps

    model = tiny_resnet(parallel)
    train_step = make_train_step(
        model,
        optimizer(),
        optax.constant_schedule(LEARNING_RATE),
        axis_name=parallel.axis_name,
        accum_steps=accum_steps,
        ema_decay_at=ema_decay_schedule(0.5, "none", NUM_STEPS),
    )
    state = parallel.from_checkpoint(state)
    sharded = [parallel.shard_batch(batch) for batch in batches]
    if scanned:
        train_steps = parallel.compile_train(scan_steps(train_step))
        state, metrics = train_steps(state, parallel.stack_batches(sharded))
        metrics = [metrics]
    else:
        compiled_step = parallel.compile_train(train_step)
        metrics = []
        for batch in sharded:
            state, step_metrics = compiled_step(state, batch)
            metrics.append(step_metrics)
    host = parallel.metrics_to_host(metrics)
    return state, [float(loss) for m in host for loss in np.ravel(m["loss"])]


def evaluate_with_tta(parallel, state, batch) -> dict:
    """Eval sums of ``state``'s weights on ``batch`` (masked), with flip+translate TTA."""
    import numpy as np

    from jaxcnn.training.step import make_eval_step

    eval_step = make_eval_step(
        tiny_resnet(parallel), axis_name=parallel.axis_name, tta="flip+translate"
    )
    masked = {**batch, "mask": np.arange(len(batch["label"])) < len(batch["label"]) - 3}
    sums = parallel.compile_eval(eval_step)(state.variables(), parallel.shard_batch(masked))
    return {k: float(v) for k, v in parallel.metrics_to_host(sums).items()}


def random_batches(num_steps: int, batch_size: int, image_shape) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [
        {
            "image": rng.normal(size=(batch_size, *image_shape)).astype(np.float32),
            "label": rng.integers(0, NUM_CLASSES, size=(batch_size,)).astype(np.int32),
        }
        for _ in range(num_steps)
    ]


def max_difference(a, b) -> float:
    """Largest absolute difference between two pytrees of arrays of the same structure."""
    import jax
    import numpy as np

    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _compare_strategies() -> dict:
    """Train the same BatchNorm ResNet, with a moving average of its weights, with every
    strategy; report differences to 1 device."""
    import jax

    from jaxcnn.training.parallel import JitParallel, PmapParallel

    assert jax.device_count() == NUM_DEVICES, jax.devices()
    batches = random_batches(NUM_STEPS, GLOBAL_BATCH, IMAGE_SHAPE)
    state = initial_state(IMAGE_SHAPE)
    strategies = {
        "one_device": JitParallel(jax.devices()[:1]),
        "jit": JitParallel(),
        "jit_shard_params": JitParallel(shard_params=True),
        "pmap": PmapParallel(),
    }
    results = {}
    variants = {"": {}, "_scanned": {"scanned": True}, "_accum2": {"accum_steps": 2}}
    for name, parallel in strategies.items():
        for suffix, options in variants.items():
            if suffix == "_accum2" and name == "jit_shard_params":
                continue
            trained, losses = train_for_steps(parallel, state, batches, **options)
            host_state = jax.device_get(parallel.for_checkpoint(trained))
            results[name + suffix] = {
                "variables": (host_state.params, host_state.batch_stats, host_state.ema),
                "loss": losses,
                "sharded_leaves": sum(
                    not leaf.sharding.is_fully_replicated
                    for leaf in jax.tree.leaves(trained.params)
                ),
            }
            if not suffix:
                results[name]["eval"] = evaluate_with_tta(parallel, trained, batches[0])
    reference = results.pop("one_device")
    accumulated = results.pop("one_device_accum2")

    def differences(result: dict) -> dict:
        # Accumulated steps are compared with accumulated steps on one device: BatchNorm sees
        # micro-batches, so they differ from whole-batch steps.
        base = accumulated if result is not reference and "accum_steps" in result else reference
        return {
            "max_variable_difference": max_difference(result["variables"], base["variables"]),
            "max_loss_difference": max(
                abs(a - b) for a, b in zip(result["loss"], base["loss"], strict=True)
            ),
            "sharded_leaves": result["sharded_leaves"],
            "max_eval_difference": max(
                (abs(v - reference["eval"][k]) for k, v in result.get("eval", {}).items()),
                default=0.0,
            ),
        }

    for name in results:
        if name.endswith("_accum2"):
            results[name]["accum_steps"] = 2
    return {
        "reference_loss": reference["loss"],
        "reference_eval": reference["eval"],
        "accumulated_moved": max_difference(accumulated["variables"], reference["variables"]),
        "strategies": {name: differences(result) for name, result in results.items()},
    }


@pytest.fixture(scope="module")
def comparison() -> dict:
    completed = subprocess.run(
        [sys.executable, __file__],
        env=cpu_devices_env(NUM_DEVICES),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "strategy",
    [
        "jit",
        "jit_shard_params",
        "pmap",
        # The same steps scanned in one call (steps_per_dispatch), on 1 and 8 devices.
        "one_device_scanned",
        "jit_scanned",
        "jit_shard_params_scanned",
        "pmap_scanned",
        # Gradient accumulation over 2 micro-batches, against the same on 1 device.
        "jit_accum2",
        "pmap_accum2",
    ],
)
def test_eight_devices_make_the_update_of_one(comparison: dict, strategy: str) -> None:
    """Parameters, BatchNorm statistics, the weights' moving average and losses agree; so do
    evaluation sums with flip+translate test-time augmentation."""
    result = comparison["strategies"][strategy]
    assert result["max_variable_difference"] < TOLERANCE, result
    assert result["max_loss_difference"] < TOLERANCE, result
    assert result["max_eval_difference"] < 1e-3, result  # sums over 13 examples


@pytest.mark.timeout(300)
def test_training_moved_the_loss(comparison: dict) -> None:
    """The comparison means something only if the steps changed the model."""
    losses = comparison["reference_loss"]
    assert abs(losses[-1] - losses[0]) > 1e-3, losses
    assert comparison["reference_eval"]["count"] == GLOBAL_BATCH - 3
    assert comparison["accumulated_moved"] > 1e-4  # micro-batches did change the steps


@pytest.mark.timeout(300)
def test_shard_params_splits_the_state(comparison: dict) -> None:
    strategies = comparison["strategies"]
    assert strategies["jit_shard_params"]["sharded_leaves"] > 0
    assert strategies["jit"]["sharded_leaves"] == 0


@pytest.mark.timeout(120)
def test_batch_that_does_not_divide_across_devices_is_one_line_error(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxcnn.train",
            f"--config={REPO / 'experiments' / 'quickstart.py'}",
            f"--workdir={tmp_path / 'run'}",
            "--config.batch_size=30",
        ],
        env=cpu_devices_env(NUM_DEVICES),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    lines = completed.stderr.strip().splitlines()
    assert lines == [
        "error: batch_size=30 does not divide across 8 devices; use a multiple of 8 (e.g. 24 or 32)"
    ]
    assert not (tmp_path / "run" / "checkpoints").exists()


if __name__ == "__main__":
    print(json.dumps(_compare_strategies()))
