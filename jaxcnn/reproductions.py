"""Reproduced results: published figures beside the accuracy jaxcnn measured, with evidence.

A reproductions directory (``reproductions/`` in the repository) holds ``reproductions.json``,
which lists groups of runs, and one folder per group with one sub-folder per run (seed), each
holding the run's ``config.json``, ``metrics.jsonl`` and ``results.json`` (no checkpoints)::

    {"readme": "../README.md",   # optional: the file whose marked table to regenerate
     "groups": [{"name": "fast_cifar", "experiment": "experiments/fast_cifar.py",
                 "title": "...", "paper": "...", "paper_accuracy": 0.9401,
                 "target": 0.94, "target_of": "mean"}]}

A group's folder may also hold ``NOTES.md`` (what was found about the result, e.g. why a
target is missed), copied into its section. ``python -m jaxcnn.report reproductions/`` writes
``reproductions/README.md`` (the table, every run and the notes) and replaces the table
between ``<!-- reproductions:begin -->`` and ``<!-- reproductions:end -->`` in the readme file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from typing import Any

from jaxcnn.errors import UserError
from jaxcnn.runs import Run, find_runs

INDEX_FILE = "reproductions.json"
NOTES_FILE = "NOTES.md"
BEGIN, END = "<!-- reproductions:begin -->", "<!-- reproductions:end -->"


@dataclasses.dataclass
class Group:
    """One reproduced figure: its reference and the runs made for it."""

    name: str
    experiment: str
    title: str
    paper: str
    paper_accuracy: float
    target: float
    target_of: str  # "mean" over the runs, or "each" run
    runs: list[Run]
    notes: str = ""  # the group folder's NOTES.md

    @property
    def finished(self) -> list[Run]:
        return [run for run in self.runs if run.results]

    @property
    def accuracies(self) -> list[float]:
        return [run.results["eval"]["accuracy"] for run in self.finished]


def is_reproductions_dir(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, INDEX_FILE))


def load_groups(directory: str) -> tuple[list[Group], dict[str, Any]]:
    """The groups of ``directory`` with their runs, and the index file's contents."""
    with open(os.path.join(directory, INDEX_FILE), encoding="utf-8") as f:
        index = json.load(f)
    groups = []
    for entry in index["groups"]:
        folder = os.path.join(directory, entry["name"])
        runs = find_runs(folder) if os.path.isdir(folder) else []
        notes_path = os.path.join(folder, NOTES_FILE)
        notes = ""
        if os.path.exists(notes_path):
            with open(notes_path, encoding="utf-8") as f:
                notes = f.read().strip() + "\n"
        groups.append(Group(**{k: entry[k] for k in _FIELDS}, runs=runs, notes=notes))
    return groups, index


_FIELDS = ("name", "experiment", "title", "paper", "paper_accuracy", "target", "target_of")


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def measured(group: Group) -> str:
    """Our figure: mean ± sample standard deviation over the finished runs, or the state of
    the runs when none has finished."""
    accuracies = group.accuracies
    if len(accuracies) > 1:
        spread = statistics.stdev(accuracies)
        return (
            f"{_percent(statistics.mean(accuracies))} ± {100 * spread:.2f} "
            f"(mean ± s.d. of {len(accuracies)} runs: "
            + ", ".join(_percent(a) for a in accuracies)
            + ")"
        )
    if accuracies:
        return _percent(accuracies[0])
    progress = [
        (int(run.records["train"][-1]["step"]), run.config.get("num_train_steps"))
        for run in group.runs
        if run.records.get("train")
    ]
    if not progress:
        return "not yet reproduced here"
    step, total = max(progress)
    evals = [r for run in group.runs for r in run.records.get("eval", [])]
    last = (
        f"; eval {_percent(evals[-1]['accuracy'])} at step {evals[-1]['step']:,}" if evals else ""
    )
    of_total = f" of {total:,}" if isinstance(total, int) and total > 0 else ""
    return f"unfinished: step {step:,}{of_total}{last}"


def target_status(group: Group) -> str:
    """Whether the target is met, and by how much it is missed."""
    accuracies = group.accuracies
    if not accuracies:
        return f"≥ {_percent(group.target)}: pending"
    value = statistics.mean(accuracies) if group.target_of == "mean" else min(accuracies)
    what = "mean" if group.target_of == "mean" else "every run"
    if value >= group.target:
        return f"≥ {_percent(group.target)} ({what}): met"
    return f"≥ {_percent(group.target)} ({what}): missed by {100 * (group.target - value):.2f} pt"


def training_seconds(run: Run) -> float:
    """The training loop's time over all of a run's starts, from its logged rates: each train
    record covers the steps since the one before at its images/s. A resumed run's
    results.json times only its last start."""
    batch, total, previous = run.config["batch_size"], 0.0, 0
    for record in run.records.get("train", []):
        if record.get("images_per_sec"):
            total += (record["step"] - previous) * batch / record["images_per_sec"]
        previous = record["step"]
    return total


def wall_time(group: Group) -> str:
    """Mean wall time of the finished runs (training, compiling and evaluating), from fresh
    starts; where a run was resumed from a checkpoint, the mean training-loop time summed
    over its starts (:func:`training_seconds`) instead."""
    if any(run.results.get("started_at_step", 0) for run in group.finished):
        loop = [training_seconds(run) for run in group.finished]
        return f"{_minutes(statistics.mean(loop))} per run (training loop, over its restarts)"
    fresh = [
        run.results["wall_time_sec"] for run in group.finished if "wall_time_sec" in run.results
    ]
    if fresh:
        return _minutes(statistics.mean(fresh)) + " per run"
    loop = [run.results["train_time_sec"] for run in group.finished]
    return f"{_minutes(statistics.mean(loop))} per run (training loop)" if loop else "–"


def _distinct(group: Group, key: str) -> str:
    """The different values of results field ``key`` among finished runs that record it."""
    values = sorted({str(run.results[key]) for run in group.finished if key in run.results})
    return ", ".join(f"`{v}`" if key == "commit" else v for v in values) or "–"


def table(groups: list[Group], evidence_root: str) -> str:
    """The Markdown table of ``groups``; evidence links are relative to ``evidence_root``."""
    lines = [
        "| experiment | paper | ours (measured) | target | hardware | wall time | commit "
        "| evidence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        evidence = f"{evidence_root}/{group.name}/"
        lines.append(
            f"| {group.title} (`{group.experiment}`) | {_percent(group.paper_accuracy)} "
            f"({group.paper}) | {measured(group)} | {target_status(group)} | "
            f"{_distinct(group, 'hardware')} | {wall_time(group)} | {_distinct(group, 'commit')} "
            f"| [{evidence}]({evidence}) |"
        )
    return "\n".join(lines) + "\n"


def run_details(group: Group) -> str:
    """One line per run of ``group``: its final accuracies and times."""
    lines = []
    for run in group.runs:
        if not run.results:
            lines.append(f"- `{run.name}`: {measured(Group(**{**vars(group), 'runs': [run]}))}")
            continue
        results = run.results
        raw = results.get("eval_raw")
        weights = results.get("eval_weights", "raw")
        parts = [f"{_percent(results['eval']['accuracy'])} ({weights} weights)"]
        if raw:
            parts.append(f"raw weights {_percent(raw['accuracy'])}")
        parts.append(f"seed {run.config.get('seed')}, {results['step']:,} steps")
        if results.get("started_at_step", 0) == 0:
            if "wall_time_sec" in results:
                parts.append(f"wall time {_minutes(results['wall_time_sec'])}")
            parts.append(f"training loop {_minutes(results['train_time_sec'])}")
        else:
            restarts = f"resumed at step {results['started_at_step']:,} and earlier"
            parts.append(f"training loop {_minutes(training_seconds(run))} ({restarts})")
        lines.append(f"- `{run.name}`: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def write_reproductions(directory: str) -> list[str]:
    """Write ``DIRECTORY/README.md`` and regenerate the readme's table; returns the paths."""
    groups, index = load_groups(directory)
    page = [
        "# Reproduced results\n\n",
        "Generated by `python -m jaxcnn.report reproductions/` from the run folders here: copies\n"
        "of each run's workdir without `checkpoints/` and `tensorboard/`.\n\n",
    ]
    page.append(table(groups, "."))
    for group in groups:
        page.append(f"\n## {group.title}\n\n`{group.experiment}`; paper: {group.paper}.\n\n")
        page.append(run_details(group) if group.runs else "No runs yet.\n")
        if group.notes:
            page.append(f"\n{group.notes}")
    written = [os.path.join(directory, "README.md")]
    with open(written[0], "w", encoding="utf-8") as f:
        f.write("".join(page))
    if index.get("readme"):
        readme = os.path.normpath(os.path.join(directory, index["readme"]))
        root = os.path.relpath(directory, os.path.dirname(readme))
        replace_section(readme, table(groups, root))
        written.append(readme)
    return written


def replace_section(path: str, content: str) -> None:
    """Put ``content`` between the reproductions markers of the file at ``path``."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise UserError(f"{path} has no {BEGIN} ... {END} section for the reproductions table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{BEGIN}\n{content}{END}{tail}")
