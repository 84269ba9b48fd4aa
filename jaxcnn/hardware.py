"""What a run or benchmark ran on, and the peak FLOP/s of common accelerators (for MFU)."""

from __future__ import annotations

import importlib.metadata
import os
import platform

# Dense peak FLOP/s per chip (vendor datasheets, without sparsity), by jax device_kind prefix
# (the first that matches).
# float32 on GPUs is the non-tensor-core rate; TPUs run float32 matmuls through bfloat16 passes.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "NVIDIA H200": {"bfloat16": 989e12, "float32": 67e12},
    "NVIDIA H100 PCIe": {"bfloat16": 756e12, "float32": 51e12},
    "NVIDIA H100": {"bfloat16": 989e12, "float32": 67e12},  # SXM
    "NVIDIA A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "NVIDIA L4": {"bfloat16": 121e12, "float32": 30.3e12},
    "NVIDIA A10": {"bfloat16": 125e12, "float32": 31.2e12},
    "Tesla V100": {"bfloat16": 125e12, "float32": 15.7e12},
    "Tesla T4": {"bfloat16": 65e12, "float32": 8.1e12},
    "TPU v6": {"bfloat16": 918e12, "float32": 918e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v3": {"bfloat16": 123e12, "float32": 123e12},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one device of ``device_kind`` in ``dtype``; None if unknown (e.g. CPUs)."""
    for prefix, peaks in PEAK_FLOPS.items():
        if device_kind.startswith(prefix):
            return peaks.get(dtype)
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_host() -> dict[str, object]:
    """CPU model, usable cores and library versions, without starting JAX: a process that only
    launches benchmarks must not claim the accelerator its children need."""
    return {
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "torch": _version("torch"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def describe_machine() -> dict[str, object]:
    """:func:`describe_host` and the devices JAX runs on."""
    import jax

    device = jax.devices()[0]
    return {
        **describe_host(),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
    }


def summary() -> str:
    """One line for results files: the accelerator (or CPU) kind and how many are used."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        cores = len(os.sched_getaffinity(0))
        what = f"{_cpu_model()} ({cores} cores)"
    else:
        what = device.device_kind
    return f"{jax.device_count()}× {device.platform}: {what}, {jax.process_count()} process(es)"
