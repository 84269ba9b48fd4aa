"""The report reads workdirs as the train loop writes them; built here by hand, no training."""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from jaxcnn.errors import UserError
from jaxcnn.report import summarize, varying_fields, write_report
from jaxcnn.runs import find_runs, read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make_run(path, *, lr, records, results=None):
    os.makedirs(path)
    config = {"seed": 0, "optimizer": {"name": "sgd", "learning_rate": lr}, "model": {"x": [1]}}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    if results:
        with open(os.path.join(path, "results.json"), "w") as f:
            json.dump(results, f)


def _train(step, loss, rate=100.0):
    return {"step": step, "split": "train", "time": 0, "loss": loss, "accuracy": 1 - loss,
            "learning_rate": 0.1, "images_per_sec": rate}  # fmt: skip


def _eval(step, accuracy):
    return {"step": step, "split": "eval", "time": 0, "loss": 1 - accuracy, "accuracy": accuracy}


@pytest.fixture
def sweep_dir(tmp_path):
    finished = [_train(10, 0.9, rate=5.0), _train(20, 0.5, rate=300.0), _eval(20, 0.7)]
    finished += [_train(30, 0.4), _eval(30, 0.6)]
    # A resumed run logs step 20 again; the report must keep the later record.
    finished += [_train(20, 0.45, rate=100.0), _eval(20, 0.8)]
    results = {"step": 30, "eval": {"accuracy": 0.6, "loss": 0.4}, "train_time_sec": 12.5}
    _make_run(tmp_path / "lr=0.1", lr=0.1, records=finished, results=results)
    _make_run(tmp_path / "lr=0.01", lr=0.01, records=[_train(10, 0.95)])
    with open(tmp_path / "sweep.json", "w") as f:  # declaration order: lr=0.1 first
        json.dump({"points": [{"name": "lr=0.1"}, {"name": "lr=0.01"}]}, f)
    return tmp_path


def test_reader_keeps_the_last_record_per_step_and_split(sweep_dir):
    records = read_metrics(str(sweep_dir / "lr=0.1" / "metrics.jsonl"))
    assert [r["step"] for r in records["train"]] == [10, 20, 30]
    assert records["train"][1]["loss"] == 0.45
    assert [(r["step"], r["accuracy"]) for r in records["eval"]] == [(20, 0.8), (30, 0.6)]


def test_rows_compare_what_varies(sweep_dir):
    runs = find_runs(str(sweep_dir))
    assert [run.name for run in runs] == ["lr=0.1", "lr=0.01"]
    fields = varying_fields(runs)
    assert fields == ["optimizer.learning_rate"]
    done, unfinished = (summarize(run, fields) for run in runs)
    assert done["optimizer.learning_rate"] == 0.1
    assert (done["status"], done["steps"], done["eval_accuracy"]) == ("finished", 30, 0.6)
    assert (done["best_eval_accuracy"], done["best_step"]) == (0.8, 20)
    assert done["train_loss"] == 0.4 and done["train_time_sec"] == 12.5
    assert done["images_per_sec"] == 100.0  # median without the first (compiling) window
    assert (unfinished["status"], unfinished["steps"]) == ("unfinished", 10)
    assert math.isnan(unfinished["eval_accuracy"])


def test_report_files(sweep_dir, tmp_path):
    out = tmp_path / "out"
    md_path, csv_path, *pngs = write_report(str(sweep_dir), str(out))
    table = pathlib.Path(md_path).read_text().splitlines()
    assert table[0].startswith("| run | optimizer.learning_rate | status | steps |")
    assert table[2].startswith("| lr=0.1 | 0.1 | finished | 30 | 0.6000 |")
    assert "| lr=0.01 | 0.01 | unfinished | 10 | – |" in table[3]
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["best_eval_accuracy"] for r in rows] == ["0.8", "nan"]
    for png in pngs:
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_single_workdir_is_a_one_row_report(sweep_dir):
    [run] = find_runs(str(sweep_dir / "lr=0.1"))
    assert run.name == "lr=0.1" and run.results["step"] == 30


def test_bad_directories(tmp_path):
    with pytest.raises(UserError, match="not found"):
        find_runs(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no training runs"):
        find_runs(str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "jaxcnn.report", str(tmp_path / "missing")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: directory {str(tmp_path / 'missing')!r} not found"
    ]


def test_plots_label_runs_by_name_inside_the_figure(tmp_path):
    """Sweep points are named after their overrides: the plots label each run by that name,
    wrapped, and no label runs off the figure."""
    from jaxcnn.report import plot_curves, plot_final_accuracy, run_labels

    names = [
        f"optimizer.learning_rate={lr},batch_size={bs},dataset.randaugment_magnitude=9.0"
        for lr in (0.001, 0.003, 0.01)
        for bs in (32, 64)
    ]
    for name in names:
        _make_run(tmp_path / name, lr=0.1, records=[_train(10, 0.9), _eval(10, 0.5)])
    runs = find_runs(str(tmp_path))
    labels = run_labels(runs)
    assert [label.replace("\n", "") for label in labels] == [run.name for run in runs]
    assert all(len(line) <= 40 for label in labels for line in label.split("\n"))
    curves = plot_curves(runs, labels, str(tmp_path / "curves.png"), "title")
    rows = [{"eval_accuracy": 0.5} for _ in runs]
    final = plot_final_accuracy(rows, labels, str(tmp_path / "final.png"))
    for figure, texts in [
        (curves, curves.legends[0].get_texts()),
        (final, final.axes[0].get_yticklabels()),
    ]:
        renderer = figure.canvas.get_renderer()
        assert sorted(t.get_text() for t in texts) == sorted(labels)
        for text in texts:
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= figure.bbox.width, text.get_text()
            assert box.y0 >= 0 and box.y1 <= figure.bbox.height, text.get_text()
