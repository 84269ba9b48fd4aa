"""Smoke tests of the benchmark suite and of jaxcnn's XLA flag defaults (not timings)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from jaxcnn import xla_flags


def test_default_flags_yield_to_the_users_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    defaults = ("--xla_cpu_multi_thread_eigen=false", "--xla_cpu_use_thunk_runtime=true")
    flags = xla_flags.apply_default_flags(defaults).split()
    assert flags == ["--xla_cpu_use_thunk_runtime=true", "--xla_cpu_multi_thread_eigen=true"]
    assert os.environ["XLA_FLAGS"] == " ".join(flags)


def test_compilation_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(xla_flags.CACHE_DIR_ENV, "/tmp/jaxcnn-cache")
    assert xla_flags.compilation_cache_dir() == "/tmp/jaxcnn-cache"
    monkeypatch.setenv(xla_flags.CACHE_DIR_ENV, "")
    assert xla_flags.compilation_cache_dir() is None


def test_peak_flops_table_knows_common_accelerators_and_not_cpus() -> None:
    from benchmarks.hardware import peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert peak_flops("TPU v4", "float32") == 275e12
    assert peak_flops("cpu", "float32") is None


@pytest.mark.timeout(120)
def test_train_step_benchmark_measures_jaxcnn_and_torch() -> None:
    from benchmarks.train_step import CASES, measure_case

    with_torch = importlib.util.find_spec("torch") is not None
    result = measure_case(
        CASES["resnet20"], batch_size=4, windows=2, window_secs=0.05, with_torch=with_torch
    )
    assert result["num_params"] == 269_722
    assert result["compile_secs"] > 0 and result["peak_host_memory_mib"] > 0
    assert len(result["jaxcnn_window_images_per_sec"]) == 2
    assert result["jaxcnn_images_per_sec"] > 0
    assert result["step_flops"] and result["achieved_flops_per_sec"] > 0
    if not with_torch:
        pytest.skip("torch is not installed (pip install -e '.[bench]'): jaxcnn side checked only")
    # The PyTorch twin must be the same network, and both sides must have been timed.
    assert result["torch_num_params"] == result["num_params"]
    assert result["torch_images_per_sec"] > 0 and result["ratio_jaxcnn_over_torch"] > 0
