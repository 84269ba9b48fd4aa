"""Reproduced results: the README table is the one generated from reproductions/, and the
table says what the runs' files say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxcnn import reproductions
from jaxcnn.cli import load_config_file
from jaxcnn.runs import find_runs

from conftest import REPO, run_cli

REPRODUCTIONS = REPO / "reproductions"


def test_readme_table_is_generated_from_the_evidence():
    groups, index = reproductions.load_groups(str(REPRODUCTIONS))
    assert index["readme"] == "../README.md"
    readme = (REPO / "README.md").read_text()
    section = readme.split(reproductions.BEGIN, 1)[1].split(reproductions.END, 1)[0]
    assert section.strip() == reproductions.table(groups, "reproductions").strip(), (
        "README's reproductions table is stale: run `python -m jaxcnn.report reproductions/`"
    )


def test_evidence_folders_hold_each_runs_files_and_match_their_experiment():
    groups, _ = reproductions.load_groups(str(REPRODUCTIONS))
    for group in groups:
        experiment = load_config_file(str(REPO / group.experiment))
        for run in group.runs:
            folder = REPRODUCTIONS / group.name / run.name
            assert (folder / "metrics.jsonl").stat().st_size > 0
            assert not (folder / "checkpoints").exists()
            assert run.config["model.name"] == experiment.model.name
            if run.results:
                assert run.results["step"] == run.records["train"][-1]["step"]


def _write_run(folder: Path, seed: int, accuracy: float | None, steps: int = 100) -> None:
    folder.mkdir(parents=True)
    config = {"seed": seed, "model": {"name": "lenet5"}, "num_train_steps": steps}
    (folder / "config.json").write_text(json.dumps(config))
    done = steps if accuracy is not None else steps // 2
    records = [
        {"step": done, "split": "train", "loss": 1.0, "accuracy": 0.5, "images_per_sec": 10.0},
        {"step": done, "split": "eval", "loss": 1.0, "accuracy": 0.8, "num_examples": 10},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if accuracy is not None:
        results = {
            "step": steps,
            "eval": {"accuracy": accuracy, "loss": 0.5, "num_examples": 10},
            "eval_weights": "raw",
            "train_time_sec": 100.0,
            "wall_time_sec": 120.0 + seed * 60,
            "started_at_step": 0,
            "hardware": "1× cpu: test",
            "commit": "abc",
        }
        (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture
def fake_reproductions(tmp_path: Path) -> Path:
    root = tmp_path / "reproductions"
    for seed, accuracy in enumerate([0.90, 0.92, 0.94]):
        _write_run(root / "recipe" / f"seed{seed}", seed, accuracy)
    _write_run(root / "long" / "seed0", 0, None)
    (root / "recipe" / "NOTES.md").write_text("Why the target is missed: measured.\n")
    entries = [
        dict(name=name, experiment="experiments/quickstart.py", title=title, paper="P",
             paper_accuracy=0.93, target=target, target_of=of)
        for name, title, target, of in [("recipe", "Recipe", 0.93, "mean"),
                                        ("long", "Long", 0.9, "each")]
    ]  # fmt: skip
    index = {"readme": "../README.md", "groups": entries}
    (root / "reproductions.json").write_text(json.dumps(index))
    (tmp_path / "README.md").write_text(
        f"# x\n\n{reproductions.BEGIN}\nold\n{reproductions.END}\n\nafter\n"
    )
    return root


def test_table_reports_mean_spread_targets_and_unfinished_runs(fake_reproductions):
    groups, _ = reproductions.load_groups(str(fake_reproductions))
    recipe, long = groups
    assert reproductions.measured(recipe).startswith("92.00% ± 2.00 (mean ± s.d. of 3 runs")
    assert reproductions.target_status(recipe) == "≥ 93.00% (mean): missed by 1.00 pt"
    assert reproductions.wall_time(recipe) == "3 min per run"
    assert reproductions.measured(long) == "unfinished: step 50 of 100; eval 80.00% at step 50"
    assert reproductions.target_status(long) == "≥ 90.00%: pending"


def test_a_resumed_run_is_timed_over_all_its_starts(tmp_path):
    """results.json of a resumed run times its last start only; the table sums the training
    loop over every start from the logged rates (the last record of a step retrained wins)."""
    folder = tmp_path / "recipe" / "seed0"
    _write_run(folder, 0, 0.9, steps=300)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "batch_size": 10}))
    rates = [(100, 10.0), (200, 5.0), (150, 1.0), (200, 20.0), (300, 100.0)]  # restart at 150
    (folder / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": step, "split": "train", "images_per_sec": rate}) + "\n"
            for step, rate in rates
        )
    )
    results = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**results, "started_at_step": 150}))
    (run,) = find_runs(str(tmp_path / "recipe"))
    # 100 steps at 10 img/s, 50 at 1, 50 at 20, 100 at 100; batch 10.
    assert reproductions.training_seconds(run) == pytest.approx(100 + 500 + 25 + 10)
    group = reproductions.Group("recipe", "x.py", "R", "P", 0.9, 0.9, "each", [run])
    assert reproductions.wall_time(group) == "11 min per run (training loop, over its restarts)"


def test_report_cli_regenerates_the_readme_section(fake_reproductions):
    result = run_cli("jaxcnn.report", str(fake_reproductions))
    assert result.returncode == 0, result.stderr
    readme = (fake_reproductions.parent / "README.md").read_text()
    assert "old" not in readme and readme.endswith("\n\nafter\n")
    assert "[reproductions/recipe/](reproductions/recipe/)" in readme
    page = (fake_reproductions / "README.md").read_text()
    assert "- `seed2`: 94.00% (raw weights)" in page and "- `seed0`: unfinished" in page
    recipe_section = page.split("## Recipe")[1].split("## Long")[0]
    assert "Why the target is missed: measured." in recipe_section
