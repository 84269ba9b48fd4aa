"""Shared fixtures: a prepared digits dataset and helpers to run the CLIs as a user would."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The suite compiles far more than it runs (a few steps per program): with XLA's backend
# optimisations off (no expensive LLVM passes) GoogLeNet's training step compiles in 14 s
# instead of 26 on 2 cores. Set before JAX is imported, for this process and the CLIs it starts;
# ``JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest`` tests the optimised programs. Speed is measured in
# benchmarks/, never here.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# PyTorch's PyPI build (the torch extra) loads triton, whose libraries crash the process
# (SIGSEGV) when TensorFlow was loaded before them; loading torch first avoids the clash.
# Without the extra, tests/test_convert.py skips, saying how to install it.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A TFDS data dir with the digits dataset prepared (offline, from scikit-learn)."""
    from jaxcnn import data
    from jaxcnn.config import base_config

    config = base_config().dataset
    config.name = "digits"
    config.data_dir = str(tmp_path_factory.mktemp("tfds"))
    assert data.dataset_info(config).num_train_examples == 1437  # prepares it
    return config.data_dir


@pytest.fixture(scope="session", autouse=True)
def compilation_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One XLA compilation cache and one directory of built custom calls for this test session,
    shared by pytest-xdist's workers and the CLIs they run, instead of the user's
    ``~/.cache/jaxcnn``: a run is like CI's (which starts with empty caches) and leaves nothing
    behind."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    os.environ["JAXCNN_CACHE_DIR"] = str(shared / "xla_cache")
    os.environ["JAXCNN_KERNEL_DIR"] = str(shared / "kernels")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """Run ``python -m ARGS…`` from the repository root; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def shared_workdir(
    tmp_path_factory: pytest.TempPathFactory, name: str, train: Callable[[Path], object]
) -> Path:
    """The workdir ``name`` that ``train(workdir)`` fills once for the whole session, shared by
    pytest-xdist's workers: the first to take its lock trains it, the others wait for it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    workdir = shared / name
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (workdir / "results.json").exists():
            train(workdir)
    return workdir
