"""Sweeps: declaration helpers, override checks, and a real 2×2 sweep of the digits quickstart."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jaxcnn import sweep_grid, sweep_runner
from jaxcnn.config import base_config
from jaxcnn.errors import UserError
from jaxcnn.report import write_report
from jaxcnn.runs import find_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxcnn.sweep", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_product_and_zip_combine_axes():
    lr = sweep_grid.axis("optimizer.learning_rate", [0.1, 0.01])
    bs = sweep_grid.axis("batch_size", [32, 64])
    assert sweep_grid.product(lr, bs) == [
        {"optimizer.learning_rate": 0.1, "batch_size": 32},
        {"optimizer.learning_rate": 0.1, "batch_size": 64},
        {"optimizer.learning_rate": 0.01, "batch_size": 32},
        {"optimizer.learning_rate": 0.01, "batch_size": 64},
    ]
    assert sweep_grid.zipped(lr, bs) == [
        {"optimizer.learning_rate": 0.1, "batch_size": 32},
        {"optimizer.learning_rate": 0.01, "batch_size": 64},
    ]
    with pytest.raises(UserError, match="differ in length"):
        sweep_grid.zipped(lr, sweep_grid.axis("seed", [1, 2, 3]))
    with pytest.raises(UserError, match="sets 'seed' twice"):
        sweep_grid.product(sweep_grid.axis("seed", [1]), sweep_grid.axis("seed", [2]))


def test_point_names_are_file_safe_and_distinct():
    assert sweep_grid.point_name({}) == "base"
    name = sweep_grid.point_name({"schedule.step_epochs": (30, 60), "model.name": "a/b c"})
    assert name == "schedule.step_epochs=_30,_60_,model.name=a_b_c"
    long = sweep_grid.point_name({"model.name": "x" * 300})
    assert len(long) == 120
    assert long != sweep_grid.point_name({"model.name": "x" * 299 + "y"})


def test_overrides_are_checked_against_the_config(tmp_path):
    config = base_config()
    assert sweep_runner.apply_overrides(
        config, {"schedule.step_epochs": [1, 2]}
    ).schedule.step_epochs == (
        1,
        2,
    )
    with pytest.raises(
        UserError, match="config.optimizer has no 'lr'; its fields: accum_steps, b1, b2"
    ):
        sweep_runner.plan(config, [{"optimizer.lr": 0.1}], str(tmp_path))
    with pytest.raises(UserError, match="bad value for config.batch_size"):
        sweep_runner.apply_overrides(config, {"batch_size": "big"})
    with pytest.raises(UserError, match="group of fields"):
        sweep_runner.apply_overrides(config, {"optimizer": 1})
    with pytest.raises(UserError, match="share the directory name"):
        sweep_runner.plan(config, [{"seed": 1}, {"seed": 1}], str(tmp_path))


def test_bad_sweep_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from jaxcnn.config import base_config\n"
        "def get_config():\n    return base_config()\n"
        "def get_sweep():\n    return [{'optimizer.lr': 0.1}]\n"
    )
    for args, message in [
        ([f"--config={bad}"], "unknown config field 'config.optimizer.lr'"),
        (["--config=experiments/vgg_cifar.py"], "defines no get_sweep()"),
    ]:
        result = _cli(*args, f"--workdir={tmp_path / 'sweep'}")
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
        assert message in result.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quickstart_sweep_runs_reports_and_skips_when_rerun(tmp_path, digits_data_dir):
    workdir = tmp_path / "sweep"
    common = [
        "--config=experiments/quickstart.py",
        f"--workdir={workdir}",
        f"--config.dataset.data_dir={digits_data_dir}",
        "--config.num_train_steps=10",
        "--config.schedule.warmup_epochs=0",
        "--config.log_every_steps=5",
    ]
    first = _cli(*common, "--parallel=2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("start ") == 4

    runs = find_runs(str(workdir))
    assert len(runs) == 4 and all(run.results["step"] == 10 for run in runs)
    assert [run.config["batch_size"] for run in runs] == [32, 64, 32, 64]  # manifest order
    md_path, csv_path, curves, final = write_report(str(workdir))
    with open(md_path, encoding="utf-8") as f:
        table = f.read()
    for run in runs:
        row = next(line for line in table.splitlines() if line.startswith(f"| {run.name} |"))
        assert f"{run.results['eval']['accuracy']:.4f}" in row
    with open(csv_path, encoding="utf-8") as f:
        assert len(f.read().strip().splitlines()) == 5
    for png in (curves, final):
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    again = _cli(*common)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skip ") == 4 and "start " not in again.stdout
    printed = _cli(*common, "--print_commands", "--launcher=srun --nodes 1")
    assert printed.stdout.count("# finished: ") == 4
