"""A trained run's checkpoint evaluated on one split, for ``python -m jaxcnn.evaluate``.

:func:`evaluate` measures the weights the run reports (its moving average where it kept one;
the trained weights' top-1 accuracy beside them) on the first eval split of the run's config,
as changed by the command's overrides: loss, top-1 and top-5 accuracy, per-class accuracy and
the confusion matrix, summed on the devices by the eval step. :func:`write` puts them in a
folder of their own (by default ``WORKDIR/evaluation/step_N[_DATASET][_SPLIT]``), never over
an earlier evaluation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxcnn.data.interface import split_names
from jaxcnn.errors import UserError
from jaxcnn.plots import plot_confusion_matrix
from jaxcnn.training.evaluation import Evaluator, metrics_from_totals
from jaxcnn.training.setup import eval_splits
from jaxcnn.training.trained import TrainedRun
from jaxcnn.training.writers import write_json_atomically

EVALUATION_DIR = "evaluation"  # in the workdir
RESULTS_FILE = "evaluation.json"
MATRIX_FILE = "confusion_matrix.json"
PLOT_FILE = "confusion_matrix.png"
_LISTED_CLASSES = 30  # the console lists every class up to this many, else the worst ones
_PRINTED_MATRIX = 12  # classes up to which the console shows the confusion matrix


def one_split(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Keep only the first eval split of ``config`` (the one the run reports): one evaluation
    per command. Several given on the command line are a :class:`UserError`."""
    splits = config.dataset.eval_split
    if "," not in splits:
        return
    if any(".dataset.eval_split" in arg for arg in overrides):
        raise UserError(
            f"dataset.eval_split={splits!r}: evaluate takes one split per command; run it once "
            "for each"
        )
    config.dataset.eval_split = splits.split(",")[0].strip()


def _evaluated_split(dataset: ml_collections.ConfigDict) -> str:
    return split_names(eval_splits(dataset)[0])[1]


def _safe(text: str) -> str:
    """``text`` as part of a folder name: TFDS slices like ``train[:10%]`` become
    ``train_-10pct``."""
    text = text.translate(str.maketrans({"[": "_", "]": "", ":": "-", "%": "pct", " ": ""}))
    return "".join(c if c.isalnum() or c in "._-=" else "-" for c in text)


def default_output(trained: TrainedRun, recorded: ml_collections.ConfigDict) -> str:
    """``WORKDIR/evaluation/step_N``, with the dataset and the split appended where they are
    not those the run reported (``step_N_train``, ``step_N_mnist_test``; another folder of
    ``image_folder`` or ``tfds_dir`` is named by its last component)."""
    evaluated, original = trained.setup.dataset, recorded.dataset
    parts = [f"step_{trained.step}"]
    if evaluated.name != original.name:
        parts.append(_safe(evaluated.name))
    elif evaluated.path != original.path:
        parts.append(_safe(os.path.basename(evaluated.path.rstrip("/")) or "path"))
    split = _evaluated_split(evaluated)
    if len(parts) > 1 or split != _evaluated_split(original):
        parts.append(_safe(split))
    return os.path.join(trained.workdir, EVALUATION_DIR, "_".join(parts))


def check_output(path: str) -> None:
    """Refuse to write where an earlier evaluation (or anything else) is: nothing written is
    ever changed."""
    if os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path)):
        raise UserError(
            f"{path} already exists and is not empty (an earlier evaluation?); nothing is "
            "overwritten: remove it or pass --output DIR"
        )


def evaluate(trained: TrainedRun, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The evaluation record of ``trained`` on its setup's first eval split (see the module
    docstring); ``overrides`` are recorded with it."""
    setup = trained.setup
    evaluator = Evaluator(setup, confusion=True)
    batches = evaluator.splits["eval"]
    totals = evaluator.totals(trained.variables(ema=True), batches)
    metrics = metrics_from_totals(totals)
    confusion = np.rint(totals["confusion"]).astype(np.int64)
    names = [setup.info.class_name(i) for i in range(confusion.shape[0])]
    counts, correct = confusion.sum(axis=1), np.diag(confusion)
    record: dict[str, Any] = {
        "workdir": os.path.abspath(trained.workdir),
        "step": trained.step,
        "model": setup.config.model.name,
        "dataset": setup.info.name,
        "split": _evaluated_split(setup.dataset),
        "overrides": list(overrides),
        "weights": "ema" if trained.has_ema else "raw",
        **metrics,
        "per_class": [
            {
                "class": i,
                "name": names[i],
                "num_examples": int(counts[i]),
                "accuracy": float(correct[i] / counts[i]) if counts[i] else None,
            }
            for i in range(len(names))
        ],
        "class_names": names,
        "confusion_matrix": confusion.tolist(),
    }
    if trained.has_ema:
        raw = metrics_from_totals(evaluator.totals(trained.state.variables(), batches))
        record["raw"] = {k: v for k, v in raw.items() if k != "num_examples"}
    return record


def write(record: dict[str, Any], output: str) -> list[str]:
    """Write ``record`` to ``output``: ``evaluation.json`` (everything but the matrix),
    ``confusion_matrix.json`` (one row per line; rows are true classes, columns predicted)
    and ``confusion_matrix.png``. Returns the paths written."""
    check_output(output)
    os.makedirs(output, exist_ok=True)
    paths = [os.path.join(output, name) for name in (RESULTS_FILE, MATRIX_FILE, PLOT_FILE)]
    summary = {k: v for k, v in record.items() if k not in ("confusion_matrix", "class_names")}
    write_json_atomically(paths[0], summary)
    rows = ",\n    ".join(json.dumps(row) for row in record["confusion_matrix"])
    names = json.dumps(record["class_names"])
    with open(f"{paths[1]}.tmp", "w", encoding="utf-8") as f:
        f.write(
            '{\n  "rows": "true class",\n  "columns": "predicted class",\n'
            f'  "class_names": {names},\n  "matrix": [\n    {rows}\n  ]\n}}\n'
        )
    os.replace(f"{paths[1]}.tmp", paths[1])
    title = (
        f"{record['model']} at step {record['step']} on {record['dataset']} "
        f"{record['split']!r}: top-1 {record['accuracy']:.2%}"
    )
    plot_confusion_matrix(
        np.asarray(record["confusion_matrix"]), record["class_names"], paths[2], title
    )
    return paths


def format_record(record: dict[str, Any]) -> str:
    """The console text of an evaluation: headline metrics, per-class accuracy (every class up
    to 30, else the 10 worst) and, for up to 12 classes, the confusion matrix."""
    raw = record.get("raw")
    top1 = f"top-1 accuracy {record['accuracy']:.4f}"
    if raw:
        top1 += f" ({record['weights']} weights; the trained weights' {raw['accuracy']:.4f})"
    headline = [top1, f"loss {record['loss']:.4f}"]
    if "top5_accuracy" in record:
        headline.insert(1, f"top-5 accuracy {record['top5_accuracy']:.4f}")
    lines = [
        f"{record['model']} at step {record['step']} on {record['dataset']} split "
        f"{record['split']!r} ({int(record['num_examples'])} examples):",
        "  " + " | ".join(headline),
    ]
    per_class = record["per_class"]
    shown = per_class
    if len(per_class) > _LISTED_CLASSES:
        scored = [c for c in per_class if c["accuracy"] is not None]
        shown = sorted(scored, key=lambda c: c["accuracy"])[:10]
        lines.append(f"  the 10 classes of lowest accuracy (of {len(per_class)}):")
    else:
        lines.append("  accuracy per class:")
    named = any(c["name"] != str(c["class"]) for c in per_class)  # not just '0', '1', ...
    width = max((len(c["name"]) for c in shown), default=0) + 1 if named else 0
    for c in shown:
        accuracy = "–" if c["accuracy"] is None else f"{c['accuracy']:.4f}"
        name = f" {c['name']:<{width}}" if named else ""
        lines.append(f"    {c['class']:>4}{name}  {accuracy}  ({c['num_examples']} examples)")
    matrix = record["confusion_matrix"]
    if len(matrix) <= _PRINTED_MATRIX:
        cell = max(4, len(str(max(max(row) for row in matrix))) + 1)
        lines.append("  confusion matrix (rows: true class, columns: predicted class):")
        lines.append("    " + " " * 5 + "".join(f"{i:>{cell}}" for i in range(len(matrix))))
        for i, row in enumerate(matrix):
            lines.append(f"    {i:>4} " + "".join(f"{n:>{cell}}" for n in row))
    return "\n".join(lines)
