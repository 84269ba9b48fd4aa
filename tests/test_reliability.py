"""Never lose a run: divergence stops before it is saved, damaged checkpoints are set aside,
the final checkpoint is saved before the final evaluation, and bad values are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxcnn.training import evaluation, loop
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.loop import train_and_evaluate

from conftest import run_cli, shared_workdir

QUICKSTART = "experiments/quickstart.py"


def _train(digits_data_dir: str, workdir: Path, *overrides: str):
    return run_cli(
        "jaxcnn.train",
        f"--config={QUICKSTART}",
        f"--workdir={workdir}",
        f"--config.dataset.data_dir={digits_data_dir}",
        "--config.schedule.warmup_epochs=0",
        *overrides,
    )


@pytest.fixture
def ten_step_run(digits_data_dir, tmp_path, tmp_path_factory) -> Path:
    """A copy of a finished 10-step quickstart run, trained once for the whole session."""

    def train(workdir: Path) -> None:
        result = _train(digits_data_dir, workdir, "--config.num_train_steps=10")
        assert result.returncode == 0, result.stderr

    workdir = tmp_path / "run"
    shutil.copytree(shared_workdir(tmp_path_factory, "reliability_ten_steps", train), workdir)
    return workdir


def _saved_params(workdir: Path, step: int) -> list[np.ndarray]:
    import jax

    checkpointer = Checkpointer(str(workdir), keep=3)
    state = checkpointer.restore(step, None)
    checkpointer.close()
    return jax.tree.leaves(state["params"])


def test_divergence_stops_the_run_and_keeps_only_finite_checkpoints(digits_data_dir, tmp_path):
    result = _train(
        digits_data_dir,
        tmp_path,
        "--config.optimizer.learning_rate=1e6",
        "--config.checkpoint_every_steps=10",
        "--config.log_every_steps=10",
        "--config.num_train_steps=200",
    )
    assert result.returncode == loop.Diverged.EXIT_STATUS, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: the loss is nan at step"), result.stderr
    assert "Traceback" not in result.stderr
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) < 200
    for step in steps:
        assert all(np.isfinite(leaf).all() for leaf in _saved_params(tmp_path, step))
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=pytest.fail)  # strict JSON: no NaN tokens
    assert not (tmp_path / "results.json").exists()


def test_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes(digits_data_dir, tmp_path):
    # A constant rate: a 40-step run is the start of a 60-step one, so the resumed run saves
    # step 40 again, bit for bit, on its way to 60.
    args = [
        "--config.checkpoint_every_steps=20",
        "--config.keep_checkpoints=3",
        "--config.schedule.name=constant",
    ]
    assert _train(digits_data_dir, tmp_path, "--config.num_train_steps=40", *args).returncode == 0
    intact = _saved_params(tmp_path, 40)
    # Emulate a crash that left garbage in the newest checkpoint's data.
    for data_file in (tmp_path / "checkpoints" / "40").rglob("*"):
        if data_file.is_file() and "d" in data_file.parent.name:
            data_file.write_bytes(b"\0garbage")
    result = _train(digits_data_dir, tmp_path, "--config.num_train_steps=60", *args)
    assert result.returncode == 0, result.stderr
    assert "Checkpoint at step 40 is damaged" in result.stdout
    assert "Resuming from the checkpoint at step 20" in result.stdout
    assert (tmp_path / "damaged_checkpoints" / "40").is_dir()  # kept for inspection
    for a, b in zip(intact, _saved_params(tmp_path, 40), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.loads((tmp_path / "results.json").read_text())["step"] == 60


def test_a_checkpoint_of_another_model_is_one_line(digits_data_dir, ten_step_run):
    result = _train(
        digits_data_dir,
        ten_step_run,
        "--config.num_train_steps=20",
        "--config.model.name=simple_cnn",
        "--config.dataset.image_size=28",
    )
    assert result.returncode == 2, result.stderr
    assert "does not match the config" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert (ten_step_run / "checkpoints" / "10").is_dir()  # not set aside: it is intact


def test_all_checkpoints_damaged_is_one_line_naming_the_folder(digits_data_dir, ten_step_run):
    step = ten_step_run / "checkpoints" / "10"
    shutil.rmtree(step)
    step.mkdir()  # an emptied step folder
    result = _train(digits_data_dir, ten_step_run, "--config.num_train_steps=20")
    assert result.returncode == 0, result.stderr  # nothing intact: starts over, damage kept
    assert "Checkpoint at step 10 is damaged" in result.stdout
    assert (ten_step_run / "damaged_checkpoints" / "10").is_dir()


def test_the_final_checkpoint_is_saved_before_the_final_evaluation(
    digits_data_dir, tmp_path, monkeypatch
):
    from test_train import quickstart_config

    config = quickstart_config(digits_data_dir, num_train_steps=12)
    config.schedule.warmup_epochs = 0.0

    class CorruptSplit:  # fails when read, as a corrupt test image does
        def __len__(self):
            return 1

        def __iter__(self):
            raise RuntimeError("a corrupt test image")

    monkeypatch.setattr(evaluation.data, "eval_batches", lambda *args, **kwargs: CorruptSplit())
    with pytest.raises(RuntimeError, match="corrupt test image"):
        train_and_evaluate(config, str(tmp_path))
    assert (tmp_path / "checkpoints" / "12").is_dir()
    monkeypatch.undo()
    results = train_and_evaluate(config, str(tmp_path))  # resumes and only evaluates
    assert results["step"] == 12 and results["started_at_step"] == 12


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--config.batch_size=-4", "batch_size=-4 is out of range; valid: >= 1"),
        ("--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate=-0.1 is out of range"),
        ("--config.num_epochs=0", "num_epochs=0.0 is out of range; valid: > 0"),
        ("--config.eval_every_steps=-5", "eval_every_steps=-5 is out of range; valid: >= 0"),
        ("--config.keep_checkpoints=0", "keep_checkpoints=0 is out of range; valid: >= 1"),
        ("--config.dataset.image_size=-32", "dataset.image_size=-32 is out of range"),
        ("--config.label_smoothing=1.0", "label_smoothing=1.0 is out of range; valid: >= 0 and <"),
    ],
)  # fmt: skip
def test_values_out_of_range_are_one_line(override, expected, digits_data_dir, tmp_path):
    result = _train(digits_data_dir, tmp_path / "run", override)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_zero_intervals_mean_off(digits_data_dir, tmp_path):
    result = _train(
        digits_data_dir,
        tmp_path,
        "--config.num_train_steps=16",
        "--config.log_every_steps=0",
        "--config.checkpoint_every_steps=0",
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] == ["16"]


def test_a_second_run_in_a_busy_workdir_is_refused_and_a_crashed_one_leaves_no_lock(
    digits_data_dir, tmp_path
):
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    args = [
        sys.executable, "-m", "jaxcnn.train", f"--config={QUICKSTART}", f"--workdir={tmp_path}",
        f"--config.dataset.data_dir={digits_data_dir}", "--config.num_train_steps=100000",
    ]  # fmt: skip
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "metrics.jsonl").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        second = _train(digits_data_dir, tmp_path, "--config.num_train_steps=10")
        assert second.returncode == 2, second.stderr
        assert f"is in use by another run (pid {first.pid})" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    resumed = _train(digits_data_dir, tmp_path, "--config.num_train_steps=10")
    assert "in use" not in resumed.stderr  # the killed run's lock went with it


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("def get_config(:\n", "has a syntax error at line 1"),
        ("x = 1\n", "defines no get_config()"),
        ("def get_config():\n    return 1 / 0\n", "failed: ZeroDivisionError"),
    ],
)
def test_broken_config_files_are_one_line(config_text, expected, tmp_path):
    config = tmp_path / "experiment.py"
    config.write_text(config_text)
    result = run_cli("jaxcnn.train", f"--config={config}", f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_unusable_workdirs_are_one_line(digits_data_dir, tmp_path):
    from jaxcnn.errors import UserError
    from jaxcnn.training.workdir import prepare_workdir

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for workdir, expected in [
        ("", "--workdir is empty"),
        ("/proc/jaxcnn_run", "cannot create workdir"),  # not even root can create it
    ]:
        with pytest.raises(UserError, match=expected):
            prepare_workdir(str(workdir))
    result = _train(digits_data_dir, a_file)  # and through the CLI
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a file, not a directory" in lines[0], result.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs (mounting needs root, as CI and the development machines run)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_naming_the_last_checkpoint(digits_data_dir, small_disk):
    workdir = small_disk / "run"
    result = _train(
        digits_data_dir,
        workdir,
        "--config.checkpoint_every_steps=10",
        "--config.keep_checkpoints=100",
        "--config.num_train_steps=400",
    )
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the device of workdir" in lines[0], lines
    last = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert f"the last complete checkpoint is step {last}." in lines[0]
    assert all(np.isfinite(leaf).all() for leaf in _saved_params(workdir, last))


def test_a_first_run_prints_one_clear_line_per_event(tmp_path):
    """Preparing the digits on first use: our line, not tfds's banner, warnings and progress
    bars (whose escape codes clutter logs)."""
    result = run_cli(
        "jaxcnn.train",
        f"--config={QUICKSTART}",
        f"--workdir={tmp_path / 'run'}",
        "--config.num_train_steps=4",
        "--config.schedule.warmup_epochs=0",
        env={"TFDS_DATA_DIR": str(tmp_path / "tfds")},
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Preparing dataset 'digits'" in result.stdout
    for noise in ("\x1b", "\r", "Downloading and preparing", "dataset_info.json", "Traceback"):
        assert noise not in output, output
    assert len(output.strip().splitlines()) <= 6, output
