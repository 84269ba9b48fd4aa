"""A tiny real sweep (2×2 points of the digits quickstart) end to end, then its report."""

from __future__ import annotations

import csv

import matplotlib.image
import pytest

from conftest import run_cli

POINTS = {
    "optimizer.learning_rate=0.001,batch_size=32",
    "optimizer.learning_rate=0.001,batch_size=64",
    "optimizer.learning_rate=0.003,batch_size=32",
    "optimizer.learning_rate=0.003,batch_size=64",
}


@pytest.mark.timeout(300)
def test_sweep_runs_every_point_reports_them_and_skips_them_on_rerun(digits_data_dir, tmp_path):
    sweep = [
        "jaxcnn.sweep",
        "--config=experiments/quickstart.py",
        f"--workdir={tmp_path}",
        f"--config.dataset.data_dir={digits_data_dir}",
        "--config.num_train_steps=12",
        "--config.log_every_steps=4",
        "--config.schedule.warmup_epochs=0",
        "--parallel=2",
    ]
    first = run_cli(*sweep)
    assert first.returncode == 0, first.stderr
    assert {p.name for p in tmp_path.iterdir() if p.is_dir()} == POINTS
    for point in POINTS:
        assert (tmp_path / point / "results.json").exists()

    report = run_cli("jaxcnn.report", str(tmp_path))
    assert report.returncode == 0, report.stderr
    with open(tmp_path / "report.csv", newline="") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert set(rows) == POINTS
    for name, row in rows.items():
        assert row["status"] == "finished" and int(row["steps"]) == 12
        assert 0.0 < float(row["eval_accuracy"]) <= 1.0
        assert float(row["optimizer.learning_rate"]) == float(name.split(",")[0].split("=")[1])
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"| {name} |" in markdown for name in POINTS)
    for plot in ("curves.png", "final_accuracy.png"):
        image = matplotlib.image.imread(tmp_path / plot)  # raises unless a valid PNG
        assert image.shape[0] > 100 and image.shape[1] > 100

    again = run_cli(*sweep)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skip ") == 4 and "start " not in again.stdout


def test_bad_report_directory_is_one_line(tmp_path):
    result = run_cli("jaxcnn.report", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")


def test_config_without_a_sweep_is_one_line(tmp_path):
    result = run_cli(
        "jaxcnn.sweep", "--config=experiments/vgg16_imagenet.py", f"--workdir={tmp_path}"
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "get_sweep" in result.stderr
