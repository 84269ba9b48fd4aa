"""Compare training runs: ``python -m jaxcnn.report DIR``.

DIR is a sweep directory (one sub-directory per run) or a single run's workdir. The report
reads each run's ``config.json``, ``metrics.jsonl`` and ``results.json`` and writes, to DIR
(or ``--output_dir``):

- ``report.md`` and ``report.csv``: one row per run with the config fields that differ between
  runs, final and best evaluation metrics, steps, training time and throughput;
- ``curves.png``: training loss and accuracy and evaluation loss and accuracy against steps,
  one line per run;
- ``final_accuracy.png``: the final evaluation accuracy of every run, side by side.

A directory with a ``reproductions.json`` (``reproductions/``) gets the table of reproduced
results instead (:mod:`jaxcnn.reproductions`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Sequence
from typing import Any

from absl import flags

from jaxcnn import cli
from jaxcnn.runs import Run, find_runs

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "", "Where to write the report; '' = DIR.")


def varying_fields(runs: Sequence[Run]) -> list[str]:
    """Config fields whose value is not the same in every run (what the sweep changed)."""
    fields = sorted({field for run in runs for field in run.config})
    return [
        field for field in fields if len({json.dumps(run.config.get(field)) for run in runs}) > 1
    ]


def _images_per_sec(train_records: list[dict[str, float]]) -> float:
    """Median throughput over logging windows, leaving out the first (it includes compiling)."""
    rates = [r["images_per_sec"] for r in train_records if "images_per_sec" in r]
    if len(rates) > 1:
        rates = rates[1:]
    return statistics.median(rates) if rates else math.nan


def summarize(run: Run, fields: Sequence[str]) -> dict[str, Any]:
    """One table row: the run's values of ``fields``, then its metrics (NaN when unknown)."""
    train = run.records.get("train", [])
    evals = run.records.get("eval", [])
    final_eval = run.results["eval"] if run.results else (evals[-1] if evals else {})
    best = max(evals, key=lambda r: r["accuracy"], default={})
    return {
        "run": run.name,
        **{field: run.config.get(field) for field in fields},
        "status": "finished" if run.results else "unfinished",
        "steps": run.results["step"] if run.results else int(train[-1]["step"]) if train else 0,
        "eval_accuracy": final_eval.get("accuracy", math.nan),
        "eval_loss": final_eval.get("loss", math.nan),
        "best_eval_accuracy": best.get("accuracy", math.nan),
        "best_step": int(best["step"]) if best else None,
        "train_loss": train[-1]["loss"] if train else math.nan,
        "train_accuracy": train[-1]["accuracy"] if train else math.nan,
        "train_time_sec": run.results["train_time_sec"] if run.results else math.nan,
        "images_per_sec": _images_per_sec(train),
    }


_METRIC_FORMATS = {"train_time_sec": "{:,.1f}", "images_per_sec": "{:,.0f}"}


def _markdown_cell(value: Any, column: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column in _METRIC_FORMATS:
        return _METRIC_FORMATS[column].format(value)
    if column.endswith(("_accuracy", "_loss")):
        return f"{value:.4f}"
    if isinstance(value, list):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value).replace("|", "\\|")


def write_tables(rows: Sequence[dict[str, Any]], output_dir: str) -> tuple[str, str]:
    """``report.md`` and ``report.csv`` of ``rows``; returns their paths."""
    columns = list(rows[0])
    md_path = os.path.join(output_dir, "report.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("| " + " | ".join(columns) + " |\n")
        f.write("|" + "|".join("---" for _ in columns) + "|\n")
        for row in rows:
            f.write("| " + " | ".join(_markdown_cell(row[c], c) for c in columns) + " |\n")
    csv_path = os.path.join(output_dir, "report.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return md_path, csv_path


def run_labels(runs: Sequence[Run], fields: Sequence[str]) -> list[str]:
    """Legend labels: each run's values of the varying fields (short names where unambiguous)."""
    if not fields:
        return [run.name for run in runs]
    leaves = [field.rsplit(".", 1)[-1] for field in fields]
    names = [
        leaf if leaves.count(leaf) == 1 else field
        for leaf, field in zip(leaves, fields, strict=True)
    ]
    return [
        ", ".join(
            f"{n}={_markdown_cell(run.config.get(f))}" for n, f in zip(names, fields, strict=True)
        )
        for run in runs
    ]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_curves(runs: Sequence[Run], labels: Sequence[str], path: str, title: str) -> None:
    """Training and evaluation loss and accuracy against steps, one line per run."""
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(12, 8)
    panels = [
        ("train", "loss", "Training loss (mean of each logging window)"),
        ("train", "accuracy", "Training accuracy (mean of each logging window)"),
        ("eval", "loss", "Evaluation loss"),
        ("eval", "accuracy", "Evaluation accuracy"),
    ]
    axes = figure.subplots(2, 2, sharex=True)
    for ax, (split, metric, panel_title) in zip(axes.flat, panels, strict=True):
        for i, (run, label) in enumerate(zip(runs, labels, strict=True)):
            records = run.records.get(split, [])
            steps = [r["step"] for r in records]
            values = [r[metric] for r in records]
            # Evaluation points, and a lone training record, need markers to be seen.
            style = "o-" if split == "eval" or len(records) == 1 else "-"
            ax.plot(steps, values, style, color=f"C{i % 10}", label=label, markersize=4)
        ax.set_title(panel_title)
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    handles, legend_labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, legend_labels, loc="outside lower center", ncols=min(len(runs), 2))
    figure.suptitle(title)
    figure.savefig(path, dpi=100)


def plot_final_accuracy(rows: Sequence[dict[str, Any]], labels: Sequence[str], path: str) -> None:
    """A horizontal bar per run: its final evaluation accuracy, written on the bar."""
    figure = _new_figure(9, 1.5 + 0.45 * len(rows))
    ax = figure.subplots()
    accuracies = [row["eval_accuracy"] for row in rows]
    positions = range(len(rows))
    bars = ax.barh(positions, accuracies, color=[f"C{i % 10}" for i in positions])
    ax.bar_label(bars, labels=[f"{a:.4f}" for a in accuracies], padding=3)
    ax.set_yticks(list(positions), labels)
    ax.invert_yaxis()  # first run on top, as in the table
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("final evaluation accuracy")
    ax.set_title("Final evaluation accuracy per run")
    ax.grid(axis="x", alpha=0.3)
    figure.savefig(path, dpi=100)


def write_report(directory: str, output_dir: str = "") -> list[str]:
    """Write the tables and plots comparing the runs in ``directory``; returns their paths."""
    runs = find_runs(directory)
    output_dir = output_dir or directory
    os.makedirs(output_dir, exist_ok=True)
    fields = varying_fields(runs)
    rows = [summarize(run, fields) for run in runs]
    labels = run_labels(runs, fields)
    curves = os.path.join(output_dir, "curves.png")
    final = os.path.join(output_dir, "final_accuracy.png")
    title = f"{os.path.basename(os.path.abspath(directory))}: {len(runs)} run(s)"
    plot_curves(runs, labels, curves, title)
    plot_final_accuracy(rows, labels, final)
    return [*write_tables(rows, output_dir), curves, final]


def main(argv: list[str]) -> None:
    from jaxcnn import reproductions

    if len(argv) != 2:
        cli.fail("usage: python -m jaxcnn.report DIR [--output_dir OUT]")
    if reproductions.is_reproductions_dir(argv[1]):
        paths = reproductions.write_reproductions(argv[1])
    else:
        paths = write_report(argv[1], _OUTPUT_DIR.value)
    for path in paths:
        print(path)


if __name__ == "__main__":
    cli.run(main)
