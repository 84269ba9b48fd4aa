"""The train-step benchmark still runs (a tiny smoke run; speed itself is in BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from jaxcnn.models import conv
from jaxcnn.training.step import steps_per_dispatch

from conftest import run_cli


@pytest.mark.timeout(180)
def test_train_step_benchmark_smoke_run(tmp_path):
    output = tmp_path / "results.json"
    result = run_cli(
        "benchmarks.train_step",
        "--quick",
        "--models=resnet20",
        f"--output={output}",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    (row,) = report["results"]
    assert row["steps_per_dispatch"] == steps_per_dispatch(0)  # as the training loop runs it
    assert f"| resnet20 | 8 | 269,722 | {row['steps_per_dispatch']} |" in result.stdout
    assert row["parameters"] == 269_722
    assert row["jaxcnn_images_per_sec"] > 0 and row["flops_per_step"] > 0
    assert row["conv_impl"] == conv.resolve_impl("auto")  # auto: oneDNN on one CPU device
    assert row["flops_per_step"] > 1e9  # XLA's convolutions are counted (custom calls are not)
    if report["machine"]["platform"] == "cpu":
        assert row["mfu"] is None  # CPUs have no MFU
    elif row["mfu"] is not None:
        assert 0 < row["mfu"] < 1
    assert row["peak_rss_mib"] > 0
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install -e '.[bench]'): PyTorch side not run")
    assert row["torch_images_per_sec"] > 0


def test_benchmark_times_variants_alongside(monkeypatch):
    from benchmarks import train_step

    monkeypatch.setitem(train_step.CASES, "tiny", ("lenet5", {}, (32, 32, 1), 8))
    row = train_step.benchmark(
        "tiny",
        8,
        2,
        3,
        with_torch=False,
        compare_conv_impls=("taps", "xla"),
        steps_per_dispatch=2,
        compare_steps_per_dispatch=(1,),
        compare_dtypes=("bfloat16",),
    )
    assert row["conv_impl"] == conv.resolve_impl("auto")  # the default ...
    assert row["steps_per_dispatch"] == 2
    # ... and the same step with each other implementation, one step per dispatch, bfloat16.
    labels = {"conv_impl=taps", "conv_impl=xla", "steps_per_dispatch=1", "dtype=bfloat16"}
    assert set(row["variants"]) == labels
    for variant in row["variants"].values():
        assert len(variant["window_images_per_sec"]) == 2
        assert variant["images_per_sec"] > 0


def test_negative_steps_per_dispatch_is_one_line():
    result = run_cli("benchmarks.train_step", "--steps_per_dispatch=-1")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: steps_per_dispatch must be 0 (auto) or more, not -1"


def test_unavailable_conv_impl_is_one_line():
    result = run_cli("benchmarks.train_step", "--compare_conv_impls=taps,fast")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown conv_impl 'fast'; valid choices: auto, onednn, taps, xla"
    )


def test_unknown_case_is_one_line():
    result = run_cli("benchmarks.train_step", "--models=resnet9000")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown case 'resnet9000'")


@pytest.mark.timeout(180)
def test_conv_layers_benchmark_smoke_run(tmp_path):
    output = tmp_path / "layers.json"
    result = run_cli("benchmarks.conv_layers", "--quick", "--skip_torch", f"--output={output}")
    assert result.returncode == 0, result.stderr
    rows = json.loads(output.read_text())["results"]
    assert len(rows) == 3  # the script also checks that the filter gradients agree
    for row in rows:
        assert row["xla_filter_grad_ms"] > 0 and row["gemm_filter_grad_ms"] > 0
        if conv.resolve_impl("auto") == "onednn":
            assert row["onednn_forward_backward_ms"] > 0
    assert result.stdout.count("| 8, ") == 3
