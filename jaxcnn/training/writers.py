"""Where metrics go: a console line, a JSON-lines file and TensorBoard event files.

TensorBoard events are written with tensorboardX, which needs neither TensorFlow nor the
tensorboard package, so logging works on accelerator machines without TensorFlow.
Only process 0 writes; the other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax

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
        from tensorboardX import SummaryWriter

        self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8")  # noqa: SIM115
        self._tensorboard = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        if not self._active:
            return
        values = {k: float(v) for k, v in metrics.items()}
        # JSON has no NaN: a non-finite value (a diverged loss) is written as null.
        finite = {k: v if math.isfinite(v) else None for k, v in values.items()}
        record = {"step": step, "split": split, "time": time.time(), **finite}
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self._jsonl.flush()
        for name, value in finite.items():
            if value is not None:
                self._tensorboard.add_scalar(f"{split}/{name}", value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._active:
            self._jsonl.close()
            self._tensorboard.close()


def console(message: str) -> None:
    """Print a progress line from process 0 only."""
    if jax.process_index() == 0:
        print(message, flush=True)
