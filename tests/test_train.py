"""End-to-end training through the CLI and train_and_evaluate: learning, resuming, errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.cli import load_config_file
from jaxcnn.training import loop
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.loop import train_and_evaluate
from jaxcnn.training.setup import build_model

from conftest import REPO, SHARED_DATASETS, run_cli

QUICKSTART = "experiments/quickstart.py"


def quickstart_config(data_dir: str, **overrides):
    config = load_config_file(str(REPO / QUICKSTART))
    config.dataset.data_dir = data_dir
    config.log_every_secs = 60.0
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def test_quickstart_learns_digits(digits_data_dir, tmp_path):
    config = quickstart_config(digits_data_dir, num_epochs=12.0)
    results = train_and_evaluate(config, str(tmp_path))
    assert results["eval"]["num_examples"] == 360  # every test image, once
    assert results["eval"]["accuracy"] >= 0.90
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["eval"]["accuracy"] == pytest.approx(results["eval"]["accuracy"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "eval"}
    assert records[-1]["step"] == results["step"]
    assert _tensorboard_scalars(tmp_path)["eval/accuracy"] == pytest.approx(
        {results["step"]: results["eval"]["accuracy"]}
    )
    assert (tmp_path / "config.json").exists()


def _tensorboard_scalars(workdir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} read back with TensorFlow's reader, which checks each record's CRC."""
    import tensorflow as tf

    scalars = {}
    for path in sorted((workdir / "tensorboard").iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def _final_params(workdir: Path) -> dict:
    """(step, {"params", "ema"}) of the latest checkpoint."""
    checkpointer = Checkpointer(str(workdir), keep=3)
    step = checkpointer.latest_step()
    state = checkpointer.restore(step, None)
    checkpointer.close()
    return step, {"params": state["params"], "ema": state.get("ema")}


@pytest.mark.timeout(240)
def test_interrupted_run_resumes_to_identical_parameters(digits_data_dir, tmp_path):
    """Stop a run with SIGTERM mid-way, re-run the same command: the result is bitwise the
    result of an uninterrupted run, with the same step count, its moving average of the
    weights included."""
    args = [
        "jaxcnn.train",
        f"--config={QUICKSTART}",
        f"--config.dataset.data_dir={digits_data_dir}",
        "--config.num_train_steps=300",
        "--config.batch_size=32",
        "--config.log_every_steps=5",
        "--config.checkpoint_every_steps=1000",
        "--config.ema.decay=0.9",
        "--config.ema.warmup=count",
        "--config.ema.every_steps=3",
    ]
    straight = tmp_path / "straight"
    assert run_cli(*args, f"--workdir={straight}").returncode == 0

    resumed = tmp_path / "resumed"
    process = subprocess.Popen(
        [sys.executable, "-m", *args, f"--workdir={resumed}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = resumed / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr
    assert not (resumed / "results.json").exists()
    stopped_at, _ = _final_params(resumed)
    assert 0 < stopped_at < 300

    second = run_cli(*args, f"--workdir={resumed}")
    assert second.returncode == 0, second.stderr
    assert f"Resuming from the checkpoint at step {stopped_at}" in second.stdout

    step_a, params_a = _final_params(straight)
    step_b, params_b = _final_params(resumed)
    assert step_a == step_b == 300
    assert params_a["ema"] is not None
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)
    results = [json.loads((d / "results.json").read_text()) for d in (straight, resumed)]
    assert results[0]["eval"] == results[1]["eval"]
    assert results[0]["eval_weights"] == "ema" and results[0]["eval_raw"] == results[1]["eval_raw"]


def test_overrides_reach_model_and_optimizer(digits_data_dir, tmp_path):
    config = quickstart_config(
        digits_data_dir,
        **{
            "model.name": "simple_cnn",
            "dataset.image_size": 28,
            "optimizer.name": "sgd",
            "optimizer.learning_rate": 0.05,
            "schedule.name": "constant",
            "schedule.warmup_epochs": 0.0,
            "num_train_steps": 3,
        },
    )
    model = build_model(config.model, num_classes=10)
    assert type(model).__name__ == "SimpleCNN"
    train_and_evaluate(config, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["learning_rate"] == pytest.approx(0.05)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["optimizer"]["learning_rate"] == 0.05
    assert saved["model"]["name"] == "simple_cnn"


def test_steps_per_dispatch_trains_the_same_steps(digits_data_dir, tmp_path, monkeypatch):
    """Several steps per call (a scan) give the single-step run's metrics, at the same steps."""
    scanned_lengths = []  # leading axis of each batch stack the scanned step is traced with
    scan_steps = loop.scan_steps

    def recording_scan_steps(train_step):
        scanned = scan_steps(train_step)

        def train_steps(state, batches):
            scanned_lengths.append(batches["label"].shape[0])
            return scanned(state, batches)

        return train_steps

    monkeypatch.setattr(loop, "scan_steps", recording_scan_steps)
    runs = {}
    for steps in (1, 4):
        config = quickstart_config(
            digits_data_dir,
            **{
                "num_train_steps": 10,
                "log_every_steps": 6,  # 4 scanned + 2 single steps, then 4 scanned to step 10
                "steps_per_dispatch": steps,
                "schedule.warmup_epochs": 0.0,
            },
        )
        results = train_and_evaluate(config, str(tmp_path / str(steps)))
        lines = (tmp_path / str(steps) / "metrics.jsonl").read_text().splitlines()
        train = [r for r in map(json.loads, lines) if r["split"] == "train"]
        runs[steps] = results, train
    assert scanned_lengths == [4]  # only the second run scans, always over 4 batches
    (single, single_train), (scanned, scanned_train) = runs[1], runs[4]
    assert [r["step"] for r in scanned_train] == [r["step"] for r in single_train] == [6, 10]
    for a, b in zip(single_train, scanned_train, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["learning_rate"] == pytest.approx(a["learning_rate"])
    assert scanned["eval"]["loss"] == pytest.approx(single["eval"]["loss"], rel=1e-4)
    assert scanned["step"] == single["step"] == 10


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--config.optimizer.learning_rat=0.1", "config.optimizer has no 'learning_rat'"),
        ("--config.model.name=resnet9000", "unknown model 'resnet9000'; valid choices:"),
        ("--config.dataset.name=no_such_dataset", "unknown dataset 'no_such_dataset'"),
        ("--config.optimizer.name=lion", "unknown optimizer.name 'lion'; valid choices: adamw"),
        ("--config.batch_size=many", "--config.batch_size=many"),
        ("--config.conv_impl=fast", "unknown conv_impl 'fast'; valid choices: auto, onednn, taps"),
        ("--config.steps_per_dispatch=-2", "steps_per_dispatch=-2 is out of range; valid: >= 0"),
        ("--config.model.dtype=float16", "model.dtype=float16 needs loss scaling"),
        ("--config.optimizer.accum_steps=3", "accum_steps=3 does not divide each device's batch"),
        ("--config.ema.decay=1.5", "ema.decay=1.5 is out of range"),
        ("--config.eval_tta=rotate", "unknown eval_tta 'rotate'; valid choices: flip"),
        ("--config.profile_steps=9:3", "profile_steps='9:3' is not START:STOP"),
        ("--config.optimizer.lr_multipliers=bias", "entry 'bias' is not REGEX=FACTOR"),
        ("--config.init_from=/no/such/run", "init_from: '/no/such/run' is not a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(override, expected, digits_data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(
        "jaxcnn.train",
        f"--config={QUICKSTART}",
        f"--workdir={workdir}",
        f"--config.dataset.data_dir={digits_data_dir}",
        override,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not (workdir / "checkpoints").exists()


def test_missing_config_file_is_one_line(tmp_path):
    result = run_cli("jaxcnn.train", "--config=experiments/nope.py", f"--workdir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: config file 'experiments/nope.py' not found"


def test_offline_unprepared_dataset_fails_fast(tmp_path):
    start = time.monotonic()
    result = run_cli(
        "jaxcnn.train",
        f"--config={QUICKSTART}",
        f"--workdir={tmp_path / 'run'}",
        "--config.dataset.name=cifar10",
        f"--config.dataset.data_dir={tmp_path}",
        "--config.model.name=resnet20",
    )
    if "has no network" not in result.stderr:
        pytest.skip("this machine has network: tfds would download cifar10")
    assert result.returncode == 2
    assert f"not prepared in {tmp_path}" in result.stderr
    assert time.monotonic() - start < 60


@pytest.mark.skipif(
    not (SHARED_DATASETS / "cifar10_jpeg").is_dir(),
    reason=f"the prepared offline CIFAR-10 copy is not at {SHARED_DATASETS}/cifar10_jpeg",
)
def test_offline_cifar10_jpeg_short_run(tmp_path):
    """The headline experiment, offline: experiments/resnet_cifar.py on the prepared JPEG copy."""
    result = run_cli(
        "jaxcnn.train",
        "--config=experiments/resnet_cifar.py",
        f"--workdir={tmp_path}",
        "--config.dataset.name=cifar10_jpeg",
        "--config.dataset.cache=False",
        "--config.dataset.shuffle_buffer=256",
        "--config.dataset.eval_split=test[:500]",
        "--config.num_train_steps=4",
        "--config.batch_size=16",
        "--config.eval_batch_size=128",
        env={"TFDS_DATA_DIR": str(SHARED_DATASETS)},
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"] == "resnet20" and results["step"] == 4
    assert results["eval"]["num_examples"] == 500
    assert 0.0 <= results["eval"]["accuracy"] <= 1.0 and np.isfinite(results["eval"]["loss"])
