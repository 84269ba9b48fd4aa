"""Running a sweep: checking its points, naming their workdirs, and training them.

The work behind ``python -m jaxcnn.sweep`` (:mod:`jaxcnn.sweep`, the thin CLI): each point of
an experiment's ``get_sweep()`` (declared with :mod:`jaxcnn.sweep_grid`) is checked against the
base config, gets its own sub-workdir, and trains as a ``python -m jaxcnn.train`` subprocess,
one after another or several at a time; or its command is printed for a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from jaxcnn import cli
from jaxcnn.errors import UserError
from jaxcnn.sweep_grid import Overrides, format_value, point_name
from jaxcnn.training.writers import RESULTS_FILE

LOG_FILE = "train.log"  # a point's console output, appended to by every (re)start
MANIFEST_FILE = "sweep.json"  # the sweep's points, in declaration order


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``overrides``; a :class:`UserError` for a bad field or type."""
    config = config.copy_and_resolve_references()
    for key, value in overrides.items():
        if message := cli.unknown_field_error(config, f"config.{key}"):
            raise UserError(message)
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if isinstance(node[leaf], ml_collections.ConfigDict):
            raise UserError(f"config.{key} is a group of fields; override one of its fields")
        try:
            node[leaf] = tuple(value) if isinstance(value, list) else value
        except TypeError as error:
            raise UserError(f"bad value for config.{key}: {' '.join(str(error).split())}") from None
    return config


@dataclasses.dataclass(frozen=True)
class Point:
    """One training run of a sweep."""

    name: str
    overrides: Overrides  # the point's own overrides (those shared by all points excluded)
    workdir: str

    @property
    def finished(self) -> bool:
        return os.path.exists(os.path.join(self.workdir, RESULTS_FILE))


def plan(
    config: ml_collections.ConfigDict, points: Sequence[Mapping[str, Any]], workdir: str
) -> list[Point]:
    """Check every point against ``config`` and give each its own sub-workdir of ``workdir``."""
    if not isinstance(points, Sequence) or not points:
        raise UserError("get_sweep() must return a non-empty list of override dicts")
    planned: dict[str, Point] = {}
    for overrides in points:
        if not isinstance(overrides, Mapping):
            raise UserError(f"a sweep point must be a dict of overrides, not {overrides!r}")
        apply_overrides(config, overrides)
        name = point_name(overrides)
        if name in planned:
            raise UserError(f"two sweep points share the directory name {name!r}")
        planned[name] = Point(name, dict(overrides), os.path.join(workdir, name))
    return list(planned.values())


def write_manifest(config_spec: str, common: Mapping[str, Any], points: Sequence[Point]) -> None:
    """Record the sweep in ``<workdir>/sweep.json``: the report lists points in this order."""
    root = os.path.dirname(points[0].workdir)
    os.makedirs(root, exist_ok=True)
    manifest = {
        "config": config_spec,
        "common_overrides": {k: format_value(v) for k, v in common.items()},
        "points": [
            {"name": p.name, "overrides": {k: format_value(v) for k, v in p.overrides.items()}}
            for p in points
        ],
    }
    tmp = os.path.join(root, f"{MANIFEST_FILE}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(root, MANIFEST_FILE))


def train_command(
    config_spec: str, point: Point, common: Mapping[str, Any], python: str = sys.executable
) -> list[str]:
    """The ``jaxcnn.train`` command line of ``point`` (its overrides after the common ones)."""
    overrides = {**common, **point.overrides}
    return [
        python,
        "-m",
        "jaxcnn.train",
        f"--config={config_spec}",
        f"--workdir={point.workdir}",
        *(f"--config.{key}={format_value(value)}" for key, value in overrides.items()),
    ]


def shell_command(command: Sequence[str], launcher: str = "") -> str:
    """``command`` quoted for a shell, after the ``launcher`` prefix (e.g. an sbatch script)."""
    return " ".join(filter(None, [launcher, shlex.join(command)]))


def _child_environment(parallel: int) -> dict[str, str]:
    env = dict(os.environ)
    # The children import jaxcnn from this checkout even when it is not installed.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    if parallel > 1:  # runs sharing an accelerator must not each claim most of its memory
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def _final_accuracy(point: Point) -> str:
    with open(os.path.join(point.workdir, RESULTS_FILE), encoding="utf-8") as f:
        return f"{json.load(f)['eval']['accuracy']:.4f}"


def run(
    points: Sequence[Point], commands: Mapping[str, list[str]], parallel: int = 1
) -> list[Point]:
    """Train the unfinished points, ``parallel`` at a time, as subprocesses; returns the failed.

    Each run's console output is appended to ``<point workdir>/train.log``. An unfinished point
    resumes from its latest checkpoint (the train loop does that by itself). On Ctrl-C the
    running children get SIGTERM, which makes them checkpoint before they exit.
    """
    env = _child_environment(parallel)
    pending = [p for p in points if not p.finished]
    for point in points:
        if point.finished:
            print(f"skip {point.name}: finished (accuracy {_final_accuracy(point)})", flush=True)
    running: dict[str, tuple[Point, subprocess.Popen, float]] = {}
    failed: list[Point] = []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                point = pending.pop(0)
                os.makedirs(point.workdir, exist_ok=True)
                with open(os.path.join(point.workdir, LOG_FILE), "ab") as log:
                    process = subprocess.Popen(
                        commands[point.name], stdout=log, stderr=subprocess.STDOUT, env=env
                    )
                running[point.name] = (point, process, time.perf_counter())
                print(f"start {point.name}", flush=True)
            time.sleep(0.2)
            for name, (point, process, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                seconds = time.perf_counter() - start
                if process.returncode == 0 and point.finished:
                    print(
                        f"done {name} in {seconds:.0f}s (accuracy {_final_accuracy(point)})",
                        flush=True,
                    )
                else:
                    failed.append(point)
                    log = os.path.join(point.workdir, LOG_FILE)
                    print(f"FAILED {name} (exit {process.returncode}); see {log}", flush=True)
    except KeyboardInterrupt:
        for _, process, _ in running.values():
            process.terminate()
        for _, process, _ in running.values():
            process.wait()
        raise
    return failed
