"""Reading training runs back: a workdir's config, metric records and results.

Used by the comparison report (:mod:`jaxcnn.report`) and the reproductions table
(:mod:`jaxcnn.reproductions`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from jaxcnn.errors import UserError
from jaxcnn.sweep_runner import MANIFEST_FILE
from jaxcnn.training.writers import CONFIG_FILE, METRICS_FILE, RESULTS_FILE


@dataclasses.dataclass
class Run:
    """What one workdir holds: its config, metric records by split, and final results."""

    name: str
    config: dict[str, Any]  # flattened: {"optimizer.learning_rate": 0.1, ...}
    records: dict[str, list[dict[str, float]]]  # split → records in step order
    results: dict[str, Any] | None  # None while the run is unfinished


def read_metrics(path: str) -> dict[str, list[dict[str, float]]]:
    """The records of a ``metrics.jsonl`` by split, in step order, keeping the last record of
    each (step, split): a resumed run logs the steps it trains again a second time."""
    latest: dict[tuple[str, int], dict[str, float]] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    latest[(record["split"], record["step"])] = record
    by_split: dict[str, list[dict[str, float]]] = {}
    for (split, _), record in sorted(latest.items(), key=lambda item: item[0][1]):
        by_split.setdefault(split, []).append(record)
    return by_split


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_run(workdir: str, name: str) -> Run:
    """Read the run in ``workdir`` (which must hold a ``config.json``)."""
    with open(os.path.join(workdir, CONFIG_FILE), encoding="utf-8") as f:
        config = _flatten(json.load(f))
    results = None
    if os.path.exists(os.path.join(workdir, RESULTS_FILE)):
        with open(os.path.join(workdir, RESULTS_FILE), encoding="utf-8") as f:
            results = json.load(f)
    return Run(name, config, read_metrics(os.path.join(workdir, METRICS_FILE)), results)


def find_runs(directory: str) -> list[Run]:
    """The runs in ``directory``: itself if it is a workdir, else its sub-directories that are,
    in the order of the sweep's manifest, then by name."""
    if not os.path.isdir(directory):
        raise UserError(f"directory {directory!r} not found")
    if os.path.exists(os.path.join(directory, CONFIG_FILE)):
        return [load_run(directory, os.path.basename(os.path.abspath(directory)))]
    names = sorted(
        entry
        for entry in os.listdir(directory)
        if os.path.exists(os.path.join(directory, entry, CONFIG_FILE))
    )
    if not names:
        raise UserError(
            f"no training runs in {directory!r}: neither it nor its sub-directories hold a "
            f"{CONFIG_FILE}"
        )
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            order = {p["name"]: i for i, p in enumerate(json.load(f)["points"])}
        names.sort(key=lambda name: (order.get(name, len(order)), name))
    return [load_run(os.path.join(directory, name), name) for name in names]
