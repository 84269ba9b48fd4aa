"""Measurements in fresh processes, in alternating rounds, summarised as median and range.

Two runtimes in one process slow each other: XLA's and PyTorch's thread pools keep spinning
for a while after their work, and what one library leaves behind (threads, heap, caches)
stays for the next measurement. So ``benchmarks.train_step`` and ``benchmarks.peak`` run each
measurement as its own child, ``python -m MODULE --child SPEC --child_output FILE``, which
writes one JSON object to ``FILE``; several children can make up one multi-process JAX run
(``jax.distributed`` on localhost, as ``launch/local.py`` starts training), each pinned to
its share of the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from launch.local import free_port

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_SECS = 3600.0


class ChildFailed(Exception):
    """A child process ended without writing its result; the message ends with its stderr."""


def add_child_arguments(parser: argparse.ArgumentParser) -> None:
    """The hidden ``--child SPEC``, ``--child_output FILE`` and ``--child_cores LIST`` of a
    module's child mode."""
    for name in ("child", "child_output", "child_cores"):
        parser.add_argument(f"--{name}", default="", help=argparse.SUPPRESS)


def child_main(args: argparse.Namespace, measure: Callable[[dict], dict | None]) -> None:
    """Child mode: pin this process to ``--child_cores`` (before JAX starts its thread pools),
    ``measure`` the JSON spec of ``--child`` and write the result to ``--child_output``."""
    if args.child_cores:
        os.sched_setaffinity(0, {int(core) for core in args.child_cores.split(",")})
    result = measure(json.loads(args.child))
    if result is not None:  # processes other than 0 of a multi-process run report nothing
        Path(args.child_output).write_text(json.dumps(result) + "\n")


def split_cores(parts: int) -> list[set[int]]:
    """This process's usable cores in ``parts`` equal, disjoint sets (one per child)."""
    cores = sorted(os.sched_getaffinity(0))
    if parts > len(cores):
        raise ValueError(f"{parts} processes need as many cores; {len(cores)} are usable")
    size = len(cores) // parts
    return [set(cores[i * size : (i + 1) * size]) for i in range(parts)]


def run_child(
    module: str,
    spec: dict,
    *,
    env: dict[str, str] | None = None,
    processes: int = 1,
    timeout: float = CHILD_TIMEOUT_SECS,
) -> dict:
    """Run ``python -m module`` in child mode on ``spec`` and return its result.

    With ``processes`` > 1 the children form one JAX run (``JAXCNN_COORDINATOR_ADDRESS``,
    ``JAXCNN_NUM_PROCESSES``, ``JAXCNN_PROCESS_ID``, read by ``jaxcnn.distributed``), each
    pinned to ``1 / processes`` of the cores; process 0's result is returned.
    """
    cores = split_cores(processes)
    port = free_port() if processes > 1 else 0
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp, "result.json")
        children = []
        for process_id, process_cores in enumerate(cores):
            argv = [sys.executable, "-m", module, "--child", json.dumps(spec)]
            argv += ["--child_output", str(output) if process_id == 0 else os.devnull]
            child_env = {**os.environ, **(env or {})}
            if processes > 1:
                argv += ["--child_cores", ",".join(map(str, sorted(process_cores)))]
                child_env.update(
                    JAXCNN_COORDINATOR_ADDRESS=f"localhost:{port}",
                    JAXCNN_NUM_PROCESSES=str(processes),
                    JAXCNN_PROCESS_ID=str(process_id),
                )
            stderr = Path(tmp, f"stderr{process_id}")
            with stderr.open("w") as stderr_file:
                child = subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=child_env,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr_file,
                )
            children.append((child, stderr))
        _wait_all(children, timeout, f"{module} --child '{json.dumps(spec)}'")
        return json.loads(output.read_text())


def _wait_all(children: Sequence[tuple[subprocess.Popen, Path]], timeout: float, what: str):
    """Wait for every child; when one fails or time runs out, stop the others and raise."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [child.poll() for child, _ in children]
            for code, (_, stderr) in zip(codes, children, strict=True):
                if code:  # None: running; 0: done
                    tail = "\n".join(stderr.read_text().strip().splitlines()[-15:])
                    raise ChildFailed(f"{what}: exit status {code}\n{tail}")
            if all(code == 0 for code in codes):
                return
            if time.monotonic() > deadline:
                raise ChildFailed(f"{what}: still running after {timeout:.0f} s")
            time.sleep(0.1)
    finally:
        for child, _ in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def schedule(labels: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, label) in the order to measure: every label once per round, the order reversed
    in odd rounds, so that no runner always follows the same other one."""
    order = []
    for r in range(rounds):
        order += [(r, label) for label in (labels if r % 2 == 0 else reversed(labels))]
    return order


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
