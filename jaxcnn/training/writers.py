"""Where metrics go: a console line, a JSON-lines file and TensorBoard event files.

TensorBoard event files are written without TensorFlow (``training/tensorboard.py``), so
logging works on accelerator machines without it.
Only process 0 writes; the other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from typing import Any

import jax
import ml_collections

from jaxcnn.training.tensorboard import EventFileWriter

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"  # final metrics; written when a run has finished
CONFIG_FILE = "config.json"  # the config of the run's first start
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
    """Appends ``{"step", "split", "time", **metrics}`` records to ``WORKDIR/metrics.jsonl`` and
    scalars to ``WORKDIR/tensorboard``. A resumed run appends; records of steps trained again
    after a restart appear twice, and readers keep the last."""

    def __init__(self, workdir: str) -> None:
        self._active = jax.process_index() == 0
        if not self._active:
            return
        self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8")  # noqa: SIM115
        self._tensorboard = EventFileWriter(os.path.join(workdir, TENSORBOARD_DIR))

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        if not self._active:
            return
        values = {k: float(v) for k, v in metrics.items()}
        # JSON has no NaN: a non-finite value (a diverged loss) is written as null.
        finite = {k: v if math.isfinite(v) else None for k, v in values.items()}
        record = {"step": step, "split": split, "time": time.time(), **finite}
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self._jsonl.flush()
        scalars = {f"{split}/{name}": v for name, v in finite.items() if v is not None}
        self._tensorboard.add_scalars(step, scalars)

    def close(self) -> None:
        if self._active:
            self._jsonl.close()
            self._tensorboard.close()


def console(message: str) -> None:
    """Print a progress line from process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so that it is valid JSON."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomically(path: str, payload: dict) -> None:
    """Write ``payload`` (non-finite numbers as null) so that readers see the old or the new
    file, never a part of one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(finite_json(payload), f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def record_config(config: ml_collections.ConfigDict, workdir: str, start_step: int) -> None:
    """Keep the config of every start: ``config.json``, or ``config.stepN.json`` if it changed."""
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
        path = os.path.join(workdir, f"config.step{start_step}.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def source_commit() -> str:
    """The git commit of the jaxcnn source that runs (with ``+`` if it has local changes), or
    '' outside a git checkout: results record what produced them."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "jaxcnn")
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+" if dirty else "")
