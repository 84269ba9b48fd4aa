"""Accelerator check: one command for a GPU or TPU machine without TensorFlow (under 8 min).

    python -m benchmarks.accelerator           # on a GPU or TPU
    python -m benchmarks.accelerator --tiny    # CPU smoke run at toy sizes

It measures, and prints as one table:

1. ResNet-50's train step in bfloat16 at batch 256 over all visible devices (generated data;
   built as the training loop builds it, ``benchmarks.train_step``; ``CUDA_VISIBLE_DEVICES=0``
   for one GPU): images/s (median of the timed windows), compile time and MFU: XLA's FLOPs
   per step × steps/s over the devices' dense bfloat16 peak from ``jaxcnn/hardware.py`` (A100
   312 TFLOP/s, H100 SXM and H200 989, TPU v4 275, v5e 197, ...), or, for a device not listed
   there, an XLA matmul's measured peak. NVIDIA's published ResNet-50 v1.5 figure for one
   A100 with mixed precision is about 2,470 images/s.
2. airbench94's bare train step (``experiments/fast_cifar.py``'s network, float32, batch
   1024): images/s and compile time, the yardstick of the loop below.
3. The fast CIFAR recipe end to end: ``experiments/fast_cifar.py`` on ``cifar10_jpeg`` with
   the device-resident pipeline (no TensorFlow): test accuracy, wall and training time, the
   loop's images/s against the bare step's, the compile time inside the run (JAX's own
   compile events: tracing, lowering, XLA) and the host syncs inside the loop's dispatches
   (``benchmarks/host_syncs.py``; there must be none: the loop waits for the device only
   when it logs, checkpoints or evaluates).

CIFAR-10 without TensorFlow: the device pipeline reads its array cache (``dataset.array_dir``,
``--array_dir``). Where the cache is missing it is decoded from the JPEG TFRecords of the
prepared TFDS dataset under ``--data_dir`` (``cifar10_jpeg/1.0.0``: 60 MB, which fits within
what can be carried to a machine, unlike the 184 MB decoded cache) by
``benchmarks/tfrecord_arrays.py``, in about 10 s. ``--tiny`` (:data:`TINY`) times airbench94
in float32 in place of ResNet-50, one step per call, and trains the recipe for 4 steps of 32
on a random 128-image cache.
Results: ``benchmarks/results/accelerator_<device>.json`` (``--tiny``: only with ``--output``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import ml_collections
import numpy as np

from benchmarks import host_syncs, peak, tfrecord_arrays, train_step
from jaxcnn import cli, hardware
from jaxcnn.data import device_resident
from jaxcnn.data.interface import split_names
from jaxcnn.errors import UserError
from jaxcnn.training import loop

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
# JAX's compile events (jax/_src/dispatch.py): tracing, lowering to MLIR, XLA's compilation.
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What the check runs: full size on an accelerator, toy size with ``--tiny``."""

    case: str  # of benchmarks.train_step.CASES
    dtype: str
    batch: int
    bare_batch: int  # airbench94's
    windows: int
    steps: int  # per window, at least
    steps_per_dispatch: int  # 0 = the backend's default
    matmul_size: int  # for a device without a listed peak
    train_images: int  # --tiny's random cache
    recipe_steps: int  # 0 = the recipe's
    recipe_batch: int  # 0 = the recipe's


FULL = Sizes("resnet50", "bfloat16", 256, 1024, 5, 20, 0, 8192, 0, 0, 0)
# float32 on the CPU: bfloat16 needs its instructions there (AVX512-BF16 or AMX)
TINY = Sizes("airbench94", "float32", 8, 16, 1, 1, 1, 256, 128, 4, 32)


def device_peak(dtype: str, matmul_size: int) -> tuple[float, str]:
    """(peak FLOP/s of JAX's first device in ``dtype``, where the figure comes from)."""
    kind = jax.devices()[0].device_kind
    listed = hardware.peak_flops(kind, dtype)
    if listed:
        return listed, f"{kind}, jaxcnn/hardware.py"
    call = peak.matmul("xla", dtype, matmul_size)
    gflops, _ = peak.best_gflops(call, matmul_size, repeats=5)
    return gflops * 1e9, f"{kind} not listed: measured, XLA {matmul_size}² matmul"


def step_speed(case: str, batch: int, dtype: str, sizes: Sizes) -> dict:
    """images/s (median of the timed windows), compile time and FLOPs of jaxcnn's train step
    for ``case`` of ``benchmarks.train_step`` over all devices, timed as ``sizes`` says."""
    windows, steps = sizes.windows, sizes.steps
    runner = train_step.jaxcnn_step(case, batch, dtype, sizes.steps_per_dispatch, count_flops=True)
    rates = train_step.time_windows({case: runner}, batch, windows, steps)[case]
    return {
        "case": case,
        "batch_size": batch,
        "dtype": dtype,
        **runner.info,
        "window_images_per_sec": rates,
        "images_per_sec": statistics.median(rates),
    }


@contextlib.contextmanager
def compile_time() -> Iterator[dict[str, float]]:
    """Seconds JAX spends compiling (by event) while the block runs."""
    seconds = dict.fromkeys(COMPILE_EVENTS, 0.0)

    def listener(event: str, duration: float, **_: object) -> None:
        if event in seconds:
            seconds[event] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seconds
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def recipe_config(data_dir: str, array_dir: str, sizes: Sizes) -> ml_collections.ConfigDict:
    """experiments/fast_cifar.py on cifar10_jpeg through the device-resident pipeline (a
    few small steps, without warm-up, logging every other step at toy sizes)."""
    config = cli.load_config_file(str(REPO / "experiments" / "fast_cifar.py"))
    config.dataset.update(
        name="cifar10_jpeg", data_dir=data_dir, pipeline="device", array_dir=array_dir
    )
    if sizes.recipe_steps:
        config.update(num_train_steps=sizes.recipe_steps, log_every_steps=2)
        config.batch_size = config.eval_batch_size = sizes.recipe_batch
        config.schedule.warmup_epochs = 0.0
    return config


def prepare_arrays(dataset: ml_collections.ConfigDict, sizes: Sizes) -> str:
    """Make sure the array cache of ``dataset`` exists; returns how it was found or made."""
    path = device_resident.array_path(dataset)
    if Path(path).exists():
        return f"cache {path}"
    if n := sizes.train_images:
        rng = np.random.default_rng(0)
        device_resident.write_arrays(
            path,
            train_image=rng.integers(0, 256, (n, 32, 32, 3), np.uint8),
            train_label=rng.integers(0, 10, n),
            eval_image=rng.integers(0, 256, (n // 4, 32, 32, 3), np.uint8),
            eval_label=rng.integers(0, 10, n // 4),
            num_classes=10,
            class_names=[],
        )
        return f"random images written to {path}"
    versions = sorted(Path(dataset.data_dir, dataset.name).glob("*/dataset_info.json"))
    if not versions:
        raise UserError(
            f"no array cache {path} and no prepared {dataset.name} under {dataset.data_dir} "
            "(carry ../shared/datasets/cifar10_jpeg and pass --data_dir, or copy the cache)"
        )
    start = time.perf_counter()
    tfrecord_arrays.write_cache(versions[-1].parent, dataset.name, split_names(dataset), path)
    return f"decoded from {versions[-1].parent} in {time.perf_counter() - start:.0f} s"


def run_recipe(config: ml_collections.ConfigDict) -> dict:
    """Train the recipe in a temporary workdir, counting compile time and host syncs."""
    with tempfile.TemporaryDirectory() as workdir:
        sync_counter = host_syncs.count_host_syncs(loop._Run, "_dispatch")
        with compile_time() as compiling, sync_counter as syncs:
            start = time.perf_counter()
            results = loop.train_and_evaluate(config, workdir)
            wall = time.perf_counter() - start
        rates = train_step.logged_rates(workdir)
    return {
        "steps": results["step"],
        "batch_size": config.batch_size,
        "accuracy": results["eval"]["accuracy"],
        "wall_secs": wall,
        "train_secs": results["train_time_sec"],
        "loop_window_images_per_sec": rates,
        "loop_images_per_sec": statistics.mean(rates) if rates else float("nan"),
        "compile_secs": dict(compiling),
        "host_syncs_in_dispatches": syncs.inside,
        "host_syncs_elsewhere": syncs.elsewhere,
    }


def summary(report: dict) -> str:
    """The report as one Markdown table."""
    step, bare, recipe = report["step"], report["bare_step"], report["recipe"]
    spread = f"{min(step['window_images_per_sec']):,.0f}–{max(step['window_images_per_sec']):,.0f}"
    compiling = recipe["compile_secs"]
    rows = [
        (
            f"{step['case']} train step, {step['dtype']}, batch {step['batch_size']}: images/s",
            f"{step['images_per_sec']:,.1f} (windows {spread})",
        ),
        (
            f"{step['case']} MFU",
            f"{step['mfu']:.1%} of {step['devices']} × {report['peak_flops'] / 1e12:,.3g} "
            f"TFLOP/s ({report['peak_source']})",
        ),
        (f"{step['case']} compile (s)", f"{step['compile_secs']:.1f}"),
        (
            f"airbench94 bare train step, float32, batch {bare['batch_size']}: images/s",
            f"{bare['images_per_sec']:,.0f}",
        ),
        ("airbench94 compile (s)", f"{bare['compile_secs']:.1f}"),
        ("fast CIFAR data", report["arrays"]),
        (
            f"fast CIFAR recipe ({recipe['steps']} steps of {recipe['batch_size']}): test accuracy",
            f"{recipe['accuracy']:.4f}",
        ),
        (
            "fast CIFAR: wall time, training time (s)",
            f"{recipe['wall_secs']:.1f}, {recipe['train_secs']:.1f}",
        ),
        (
            "fast CIFAR: images/s through the loop, / bare step",
            f"{recipe['loop_images_per_sec']:,.0f}, "
            f"{recipe['loop_images_per_sec'] / bare['images_per_sec']:.2f}",
        ),
        (
            "fast CIFAR: compile time in the run (s): trace, lower, XLA",
            ", ".join(f"{compiling[event]:.1f}" for event in COMPILE_EVENTS),
        ),
        (
            "fast CIFAR: host syncs inside dispatches (elsewhere)",
            f"{recipe['host_syncs_in_dispatches']} ({recipe['host_syncs_elsewhere']})",
        ),
        ("total time of this check (s)", f"{report['total_secs']:.0f}"),
    ]
    lines = ["| measurement | value |", "|---|---|"]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows])


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accelerator", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run at toy sizes")
    parser.add_argument(
        "--data_dir",
        default=str(REPO.parent / "shared" / "datasets"),
        help="TFDS data dir holding cifar10_jpeg (decoded when no array cache exists)",
    )
    parser.add_argument("--array_dir", default="", help="array caches; '' = jaxcnn's default")
    parser.add_argument("--output", default="", help="results file; '' = benchmarks/results/")
    args = parser.parse_args()
    started = time.perf_counter()
    machine = hardware.describe_machine()
    if machine["platform"] == "cpu" and not args.tiny:
        parser.exit(2, "error: no GPU or TPU here; --tiny runs this at toy sizes on the CPU\n")
    print(f"# {machine['device_count']}× {machine['device_kind']}; jax {machine['jax']}")
    sizes = TINY if args.tiny else FULL
    report: dict = {"machine": machine, "sizes": dataclasses.asdict(sizes)}
    config = recipe_config(args.data_dir, args.array_dir, sizes)
    try:  # first, so that missing data fails at once
        report["arrays"] = prepare_arrays(config.dataset, sizes)
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    report["step"] = step = step_speed(sizes.case, sizes.batch, sizes.dtype, sizes)
    report["peak_flops"], report["peak_source"] = device_peak(sizes.dtype, sizes.matmul_size)
    all_devices = report["peak_flops"] * step["devices"]
    step["mfu"] = step["flops_per_step"] * step["images_per_sec"] / sizes.batch / all_devices
    report["bare_step"] = step_speed("airbench94", sizes.bare_batch, "float32", sizes)
    report["recipe"] = run_recipe(config)
    report["tensorflow_imported"] = "tensorflow" in sys.modules
    report["total_secs"] = time.perf_counter() - started
    print(summary(report))
    kind = re.sub(r"[^A-Za-z0-9]+", "_", machine["device_kind"]).strip("_").lower()
    output = args.output or ("" if args.tiny else str(RESULTS / f"accelerator_{kind}.json"))
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(report, indent=2) + "\n")
        print(f"# written to {output}")


if __name__ == "__main__":
    main()
