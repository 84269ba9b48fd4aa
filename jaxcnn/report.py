"""Compare training runs: ``python -m jaxcnn.report DIR``.

DIR is a sweep directory (one sub-directory per run) or a single run's workdir. The report
reads each run's ``config.json``, ``metrics.jsonl`` and ``results.json`` and writes, to DIR
(or ``--output_dir``):

- ``report.md`` and ``report.csv``: one row per run with the config fields that differ between
  runs, final and best evaluation metrics, steps, training time and throughput;
- ``curves.png``: training loss and accuracy and evaluation loss and accuracy against steps,
  one line per run, labelled by the run's name (wrapped; the settings that differ are in the
  table);
- ``final_accuracy.png``: the final evaluation accuracy of every run, side by side.

A directory with a ``reproductions.json`` (``reproductions/``) gets the table of reproduced
results instead (:mod:`jaxcnn.reproductions`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
import textwrap
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


LABEL_WIDTH = 40  # characters per line of a run's label in the plots


def wrap_label(name: str, width: int = LABEL_WIDTH) -> str:
    """``name`` on lines of at most ``width`` characters, broken after its commas where it can
    (a sweep point's name lists its overrides) and inside longer pieces where it must."""
    lines: list[str] = []
    for piece in re.split(r"(?<=,)", name):
        if lines and len(lines[-1]) + len(piece) <= width:
            lines[-1] += piece
        else:
            lines += textwrap.wrap(piece, width, break_on_hyphens=False) or [piece]
    return "\n".join(lines)


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Legend and axis labels: each run's name (the ``run`` column of the table, which also
    holds the settings that differ), wrapped so that long names stay inside the figure."""
    return [wrap_label(run.name) for run in runs]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_curves(runs: Sequence[Run], labels: Sequence[str], path: str, title: str):
    """Training and evaluation loss and accuracy against steps, one line per run, and a legend
    of every run below (the figure grows with it); returns the figure."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    columns = min(len(runs), 3)
    lines_per_row = max(label.count("\n") + 1 for label in labels)
    legend_lines = math.ceil(len(runs) / columns) * lines_per_row
    figure = _new_figure(12, 7.5 + 0.2 * legend_lines)
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
    handles = [Line2D([], [], color=f"C{i % 10}") for i in range(len(runs))]
    figure.legend(handles, labels, loc="outside lower center", ncols=columns)
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return figure


def plot_final_accuracy(rows: Sequence[dict[str, Any]], labels: Sequence[str], path: str):
    """A horizontal bar per run: its final evaluation accuracy, written on the bar; returns
    the figure."""
    lines = max(label.count("\n") + 1 for label in labels)
    figure = _new_figure(9, 1.5 + 0.2 * max(2, lines) * len(rows))
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
    return figure


def write_report(directory: str, output_dir: str = "") -> list[str]:
    """Write the tables and plots comparing the runs in ``directory``; returns their paths."""
    runs = find_runs(directory)
    output_dir = output_dir or directory
    os.makedirs(output_dir, exist_ok=True)
    fields = varying_fields(runs)
    rows = [summarize(run, fields) for run in runs]
    labels = run_labels(runs)
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
