"""Several JAX processes on this machine (gloo CPU collectives) train as one.

- The worker mode of this file (run as a script by the tests) trains a BatchNorm ResNet for a
  few steps as process I of 2, each feeding its half of every global batch, and compares the
  result with one device training on the whole batches.
- The quickstart runs as 2 processes through ``launch/local.py`` (its output: process 0's lines,
  marked ``[0]``, without gloo's chatter); its checkpoint restores in a single process with
  another device count, which evaluates it to the same metrics and trains on.
- Killing one process makes the other stop with an error within the heartbeat timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_parallel import TOLERANCE, cpu_devices_env

from jaxcnn import distributed
from jaxcnn.errors import UserError
from jaxcnn.models import conv

from conftest import REPO

HEARTBEAT_TIMEOUT_SECONDS = 5
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2


def _free_port() -> int:
    sys.path.insert(0, str(REPO / "launch"))
    from local import free_port

    return free_port()


def _worker(out_dir: Path) -> None:
    """Process ``JAXCNN_PROCESS_ID`` of the run that the environment describes."""
    assert distributed.initialize_from_flags_or_env()
    import jax
    import jax.numpy as jnp
    from test_parallel import (
        GLOBAL_BATCH,
        IMAGE_SHAPE,
        NUM_STEPS,
        initial_state,
        max_difference,
        random_batches,
        train_for_steps,
    )

    from jaxcnn.training.parallel import JitParallel, to_host

    batches = random_batches(NUM_STEPS, GLOBAL_BATCH, IMAGE_SHAPE)
    share = GLOBAL_BATCH // jax.process_count()
    mine = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
    local_batches = [{k: v[mine] for k, v in batch.items()} for batch in batches]
    state = initial_state(IMAGE_SHAPE)
    parallel = JitParallel()
    trained, _ = train_for_steps(parallel, state, local_batches)
    one_device, _ = train_for_steps(JitParallel(jax.local_devices()[:1]), state, batches)
    report = {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "max_variable_difference": max_difference(
            to_host((trained.params, trained.batch_stats)),
            jax.device_get((one_device.params, one_device.batch_stats)),
        ),
    }
    (out_dir / f"process{jax.process_index()}.json").write_text(json.dumps(report))
    # Keep exchanging data with the other process until it (or this one) is stopped.
    global_sum = jax.jit(jnp.sum, out_shardings=parallel.replicated)
    images = parallel.shard_batch(local_batches[0])["image"]
    while True:
        global_sum(images).block_until_ready()
        time.sleep(0.05)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No JAXCNN_*, SLURM or Open MPI variables from the surrounding shell."""
    for name in list(os.environ):
        if name.startswith((distributed.ENV_PREFIX, "SLURM_", "OMPI_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_settings_come_from_flags_then_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("JAXCNN_COORDINATOR_ADDRESS", "host0:1234")
    clean_env.setenv("JAXCNN_NUM_PROCESSES", "4")
    clean_env.setenv("JAXCNN_PROCESS_ID", "3")
    settings = distributed.resolve(distributed.Settings(process_id=1))
    assert settings.coordinator_address == "host0:1234"
    assert settings.num_processes == 4
    assert settings.process_id == 1
    assert settings.heartbeat_timeout_seconds is None


def test_single_process_unless_something_says_otherwise(clean_env: pytest.MonkeyPatch) -> None:
    assert not distributed.initialize_from_flags_or_env()
    clean_env.setenv("SLURM_STEP_NUM_TASKS", "1")  # an srun of one task
    assert not distributed.initialize_from_flags_or_env()
    clean_env.setenv("SLURM_STEP_NUM_TASKS", "8")
    assert not distributed.initialize_from_flags_or_env(distributed.Settings(distributed="off"))


@pytest.mark.parametrize(
    ("settings", "env", "message"),
    [
        ({"distributed": "sometimes"}, {}, "valid choices: auto, off, on"),
        ({"num_processes": 2, "process_id": 0}, {}, "need coordinator_address"),
        ({}, {"JAXCNN_PROCESS_ID": "first"}, "JAXCNN_PROCESS_ID='first' is not an integer"),
    ],
)
def test_bad_settings_are_user_errors(
    clean_env: pytest.MonkeyPatch, settings: dict, env: dict, message: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(UserError, match=message):
        distributed.initialize_from_flags_or_env(distributed.Settings(**settings))


def _start_workers(tmp_path: Path) -> list[subprocess.Popen]:
    port = _free_port()
    workers = []
    for process_id in range(NUM_PROCESSES):
        env = {
            **cpu_devices_env(DEVICES_PER_PROCESS),
            "JAXCNN_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAXCNN_NUM_PROCESSES": str(NUM_PROCESSES),
            "JAXCNN_PROCESS_ID": str(process_id),
            "JAXCNN_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT_SECONDS),
        }
        log = open(tmp_path / f"process{process_id}.log", "w")  # noqa: SIM115
        workers.append(
            subprocess.Popen(
                [sys.executable, __file__, str(tmp_path)], env=env, stdout=log, stderr=log
            )
        )
    return workers


def _wait_for(paths: list[Path], workers: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        crashed = [w.args for w in workers if w.poll() is not None]
        assert not crashed, f"worker ended early: {crashed}"
        assert time.monotonic() < deadline, "workers did not finish training in time"
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_two_processes_train_like_one_device_and_stop_when_one_dies(tmp_path: Path) -> None:
    workers = _start_workers(tmp_path)
    try:
        reports = [tmp_path / f"process{i}.json" for i in range(NUM_PROCESSES)]
        _wait_for(reports, workers, timeout=150)
        for path in reports:
            report = json.loads(path.read_text())
            assert report["process_count"] == NUM_PROCESSES
            assert report["device_count"] == NUM_PROCESSES * DEVICES_PER_PROCESS
            assert report["max_variable_difference"] < TOLERANCE, report

        killed_at = time.monotonic()
        workers[1].send_signal(signal.SIGKILL)
        status = workers[0].wait(timeout=HEARTBEAT_TIMEOUT_SECONDS + 30)
        waited = time.monotonic() - killed_at
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert status != 0
    assert waited < HEARTBEAT_TIMEOUT_SECONDS + 30
    assert "died" in (tmp_path / "process0.log").read_text()


def _train(
    workdir: Path, data_dir: str, *extra: str, launcher: list[str], devices: int
) -> tuple[str, dict]:
    """Run the quickstart briefly; returns its console output and results."""
    completed = subprocess.run(
        [
            *launcher,
            f"--config={REPO / 'experiments' / 'quickstart.py'}",
            f"--workdir={workdir}",
            f"--config.dataset.data_dir={data_dir}",
            "--config.batch_size=32",
            "--config.eval_batch_size=64",
            "--config.schedule.warmup_epochs=0",
            "--config.checkpoint_every_steps=4",
            # Log by step count only: a slow machine would add time-triggered records.
            "--config.log_every_secs=3600",
            *extra,
        ],
        env=cpu_devices_env(devices),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout, json.loads((workdir / "results.json").read_text())


@pytest.mark.timeout(300)
def test_quickstart_on_two_processes_resumes_on_one(tmp_path: Path, digits_data_dir: str) -> None:
    workdir = tmp_path / "run"
    two_processes = [
        sys.executable,
        str(REPO / "launch" / "local.py"),
        f"--num_processes={NUM_PROCESSES}",
        f"--devices_per_process={DEVICES_PER_PROCESS}",
        "--",
        f"--heartbeat_timeout_seconds={HEARTBEAT_TIMEOUT_SECONDS * 4}",
    ]
    console, trained = _train(
        workdir, digits_data_dir, "--config.num_train_steps=4", launcher=two_processes, devices=2
    )
    assert console.count("4 cpu device(s) in 2 process(es)") == 1  # process 0 alone prints
    assert all(line.startswith("[0] ") for line in console.splitlines())  # the launcher says so
    assert "[Gloo]" not in console  # gloo's "Rank I is connected to N peer ranks" left out
    # oneDNN, if built: each device convolves its shard of the batch, across processes too.
    assert f"parallelism, {conv.resolve_impl('auto')} convolutions," in console
    assert trained["step"] == 4
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["step"], r["split"]) for r in records) == [(4, "eval"), (4, "train")]
    assert (workdir / "checkpoints" / "4").is_dir()

    one_process = [sys.executable, "-m", "jaxcnn.train"]
    console, restored = _train(
        workdir, digits_data_dir, "--config.num_train_steps=4", launcher=one_process, devices=1
    )
    assert "Resuming from the checkpoint at step 4." in console
    assert "1 cpu device(s) in 1 process(es)" in console
    assert f"parallelism, {conv.resolve_impl('auto')} convolutions," in console  # onednn, if built
    assert restored["eval"]["num_examples"] == trained["eval"]["num_examples"]
    assert restored["eval"]["accuracy"] == trained["eval"]["accuracy"]
    assert restored["eval"]["loss"] == pytest.approx(trained["eval"]["loss"], abs=TOLERANCE)

    console, continued = _train(
        workdir, digits_data_dir, "--config.num_train_steps=6", launcher=one_process, devices=1
    )
    assert "Resuming from the checkpoint at step 4." in console
    assert continued["step"] == 6
    assert (workdir / "checkpoints" / "6").is_dir()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
