"""The launchers' ``--dry-run`` prints exactly the commands they would run."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["--config", "experiments/quickstart.py", "--workdir", "/shared/runs/a b"]


def dry_run(launcher: str, *options: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, str(REPO / "launch" / launcher), *options, "--dry-run", "--", *TRAIN_ARGS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return completed.stdout.strip().splitlines()


def test_local_starts_one_process_per_id_with_its_own_devices() -> None:
    lines = dry_run("local.py", "--num_processes=3", "--devices_per_process=2", "--port=1234")
    assert [shlex.split(line) for line in lines] == [
        [
            "JAX_PLATFORMS=cpu",
            "JAX_NUM_CPU_DEVICES=2",
            sys.executable,
            "-m",
            "jaxcnn.train",
            *TRAIN_ARGS,
            "--coordinator_address=localhost:1234",
            "--num_processes=3",
            f"--process_id={process_id}",
        ]
        for process_id in range(3)
    ]


def test_local_on_gpus_gives_each_process_a_disjoint_set() -> None:
    lines = dry_run("local.py", "--num_processes=2", "--devices_per_process=4", "--platform=gpu")
    assert [shlex.split(line)[0] for line in lines] == [
        "CUDA_VISIBLE_DEVICES=0,1,2,3",
        "CUDA_VISIBLE_DEVICES=4,5,6,7",
    ]
    ports = {shlex.split(line)[-3] for line in lines}
    assert len(ports) == 1  # one coordinator that every process dials


def _srun_line(lines: list[str]) -> int:
    (index,) = [i for i, line in enumerate(lines) if line.startswith("srun ")]
    return index


def _srun_command(lines: list[str]) -> list[str]:
    return shlex.split(lines[_srun_line(lines)].removesuffix(" &"))


def test_slurm_one_process_per_gpu() -> None:
    lines = dry_run("slurm.py", "--nodes=4", "--gpus_per_node=8", "--partition=gpu")
    assert lines[1] == "#!/bin/bash"
    for directive in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu"):
        assert f"#SBATCH {directive}" in lines
    assert _srun_command(lines) == [
        "srun",
        "--kill-on-bad-exit=1",
        "python",
        "-m",
        "jaxcnn.train",
        *TRAIN_ARGS,
        "--distributed=on",
    ]
    assert not any("JAX_LOCAL_DEVICE_IDS" in line for line in lines)
    assert lines[-1] == "sbatch jaxcnn.sbatch"


def test_slurm_one_process_per_node_sees_all_its_gpus() -> None:
    lines = dry_run("slurm.py", "--nodes=2", "--gpus_per_node=4", "--per=node", "--setup=ml cuda")
    assert "#SBATCH --ntasks-per-node=1" in lines
    setup, devices = lines.index("ml cuda"), lines.index("export JAX_LOCAL_DEVICE_IDS=0,1,2,3")
    assert setup < devices < _srun_line(lines)


def test_slurm_checkpoints_and_requeues_before_the_time_limit() -> None:
    lines = dry_run("slurm.py", "--nodes=2", "--requeue_before=120")
    for directive in ("--signal=B:USR1@120", "--requeue", "--open-mode=append"):
        assert f"#SBATCH {directive}" in lines
    assert lines.index("trap requeue USR1") < _srun_line(lines)
    assert lines[_srun_line(lines)].endswith(" &")
    assert '  scontrol requeue "$SLURM_JOB_ID"' in lines
    plain = dry_run("slurm.py", "--requeue_before=0")
    assert not any("USR1" in line or "requeue" in line for line in plain)


@pytest.mark.timeout(60)
def test_slurm_script_forwards_the_warning_and_requeues(tmp_path) -> None:
    """Run the generated script with stand-ins for srun and scontrol: on SLURM's USR1 the
    training step gets SIGTERM (it checkpoints and exits) and the job is requeued."""
    import os
    import signal
    import time

    lines = dry_run("slurm.py", "--nodes=1")
    script = tmp_path / "job.sbatch"
    script.write_text("\n".join(lines[1:-1]) + "\n")  # between "# FILE" and the sbatch command
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/bin/bash\n"
        f"trap 'echo TERM > {tmp_path}/srun.log; exit 143' TERM\n"
        f"echo started > {tmp_path}/srun.log\n"
        "while true; do sleep 0.1; done\n"
    )
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" > {tmp_path}/scontrol.log\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "42"}
    job = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path)
    log = tmp_path / "srun.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text().strip() == "started"):
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    assert job.wait(timeout=30) == 0
    assert log.read_text().strip() == "TERM"
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "42"]


def test_tpu_pod_installs_and_runs_on_every_worker() -> None:
    lines = dry_run("tpu_pod.py", "--tpu=pod", "--zone=us-central2-b", "--project=proj")
    archive, copy, run = (shlex.split(line) for line in lines)
    assert archive[:2] == ["git", "archive"]
    local_archive = archive[-2].removeprefix("--output=")
    assert copy[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert copy[5:7] == [local_archive, "pod:jaxcnn-src.tar.gz"]
    assert run[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
    for command in (copy, run):
        assert "--worker=all" in command
        assert command[command.index("--zone") + 1] == "us-central2-b"
        assert command[command.index("--project") + 1] == "proj"
    remote = run[-1].removeprefix("--command=").split(" && ")
    assert "python3 -m pip install --quiet -e '.[tpu]'" in remote
    assert shlex.split(remote[-1]) == [
        "python3",
        "-m",
        "jaxcnn.train",
        *TRAIN_ARGS,
        "--distributed=on",
    ]
