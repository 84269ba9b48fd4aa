"""Run a training job as several JAX processes on this machine, as a multi-host job would.

    python launch/local.py --num_processes 2 --devices_per_process 2 -- \
        --config experiments/quickstart.py --workdir /tmp/quickstart

Each process runs ``python -m jaxcnn.train`` with the arguments after ``--``, plus
``--coordinator_address=localhost:PORT --num_processes=N --process_id=I`` (PORT: a free one).
On CPUs each process gets ``--devices_per_process`` virtual devices; with ``--platform gpu``
each gets its own GPUs through ``CUDA_VISIBLE_DEVICES``. Ends with the first non-zero exit
status of a process, else 0. ``--dry-run`` prints the commands without running them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

# A process that fails makes the others stop on their own (see jaxcnn/distributed.py); after
# this long the launcher ends any that are still running.
GRACE_SECONDS = 120


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def commands(
    train_args: list[str], *, num_processes: int, devices_per_process: int, platform: str, port: int
) -> list[tuple[dict[str, str], list[str]]]:
    """(extra environment, argv) of each process."""
    runs = []
    for process_id in range(num_processes):
        if platform == "cpu":
            env = {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices_per_process)}
        else:
            first = process_id * devices_per_process
            gpus = range(first, first + devices_per_process)
            env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
        argv = [
            sys.executable,
            "-m",
            "jaxcnn.train",
            *train_args,
            f"--coordinator_address=localhost:{port}",
            f"--num_processes={num_processes}",
            f"--process_id={process_id}",
        ]
        runs.append((env, argv))
    return runs


def shell_line(env: dict[str, str], argv: list[str]) -> str:
    """The command as one copy-pasteable shell line."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv)])


def run_all(runs: list[tuple[dict[str, str], list[str]]]) -> int:
    """Start every process, wait for all, and return the first failure's exit status (or 0)."""
    processes = [subprocess.Popen(argv, env={**os.environ, **env}) for env, argv in runs]

    def forward(signum: int, frame: object) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    first_failure, failed_at = 0, 0.0
    while True:
        statuses = [process.poll() for process in processes]
        if not first_failure and (failures := [s for s in statuses if s]):
            first_failure, failed_at = failures[0], time.monotonic()
        if None not in statuses:
            return first_failure
        if first_failure and time.monotonic() - failed_at > GRACE_SECONDS:
            for process in processes:
                process.kill()
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python launch/local.py",
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s [options] -- TRAIN_ARGS...",
    )
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--port", type=int, default=0, help="coordinator port; 0: a free one")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.num_processes < 1 or args.devices_per_process < 1:
        parser.error("--num_processes and --devices_per_process must be at least 1")
    runs = commands(
        train_args,
        num_processes=args.num_processes,
        devices_per_process=args.devices_per_process,
        platform=args.platform,
        port=args.port or free_port(),
    )
    if args.dry_run:
        for env, argv in runs:
            print(shell_line(env, argv))
        return
    sys.exit(run_all(runs))


if __name__ == "__main__":
    main()
