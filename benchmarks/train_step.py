"""Train-step throughput of jaxcnn against PyTorch, and the training loop's own overhead.

    python -m benchmarks.train_step                      # every case, results/train_step.json
    python -m benchmarks.train_step --quick --models resnet20
    python -m benchmarks.train_step --end-to-end         # + jaxcnn.train vs the bare step
    python -m benchmarks.train_step --dtype bfloat16     # accelerators: bf16 compute, MFU

Each case runs in a fresh subprocess (so peak host memory and compilation are its own). There
the jaxcnn train step is built exactly as ``jaxcnn.training.loop`` builds it
(``make_train_step`` compiled by ``make_parallel('jit')``), compiled ahead of time (timed),
warmed up, and then timed in windows that alternate with windows of the same model, batch and
optimizer in PyTorch (channels-last), so that load from other processes hits both alike;
throughputs are medians over windows and the ratio is the median of per-window-pair ratios.
FLOPs per step come from XLA's cost analysis of the compiled step; MFU divides the achieved
FLOP/s by the device peak (benchmarks.hardware), where known. Data are random arrays, so no
TensorFlow is imported here except by ``--end-to-end``, which runs the real input pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from jaxcnn import xla_flags

xla_flags.apply_default_flags()  # before JAX starts, as the train CLI does

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.hardware import describe_machine, peak_flops  # noqa: E402
from jaxcnn import models  # noqa: E402
from jaxcnn.config import base_config  # noqa: E402
from jaxcnn.training.optim import make_optimizer, make_schedule  # noqa: E402
from jaxcnn.training.parallel import make_parallel  # noqa: E402
from jaxcnn.training.state import init_train_state  # noqa: E402
from jaxcnn.training.step import make_train_step  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked model: jaxcnn registry name and fields, input, and batch sizes."""

    name: str  # also the key of benchmarks.torch_models.BUILDERS
    model: str
    image_size: int
    num_classes: int
    cpu_batch: int
    accelerator_batch: int
    fields: tuple[tuple[str, Any], ...] = ()


CASES = {
    case.name: case
    for case in (
        Case("resnet20", "resnet20", 32, 10, cpu_batch=128, accelerator_batch=1024),
        Case(
            "resnet18_cifar",
            "resnet18",
            32,
            10,
            cpu_batch=32,
            accelerator_batch=512,
            fields=(("small_images", True),),
        ),
        Case("resnet50", "resnet50", 224, 1000, cpu_batch=8, accelerator_batch=256),
        Case("vit_s16", "vit_s16", 224, 1000, cpu_batch=8, accelerator_batch=256),
        Case("efficientnet_b0", "efficientnet_b0", 224, 1000, cpu_batch=16, accelerator_batch=256),
    )
}


def default_batch(case: Case) -> int:
    return case.cpu_batch if jax.devices()[0].platform == "cpu" else case.accelerator_batch


def build_jaxcnn_step(case: Case, batch_size: int, dtype: str) -> tuple[Callable, Any, Any]:
    """(jitted train step, initial state, batch on device), as the training loop builds them."""
    config = base_config()
    parallel = make_parallel("jit")
    parallel.check_batch_size("batch_size", batch_size)
    model = models.create(case.model, case.num_classes, dtype=DTYPES[dtype], **dict(case.fields))
    schedule = make_schedule(config.schedule, peak=0.1, steps_per_epoch=100, total_steps=10_000)
    tx = make_optimizer(config, schedule)
    image_shape = (case.image_size, case.image_size, 3)
    state = parallel.init(functools.partial(init_train_state, model, tx, image_shape, 0))
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch(
        {
            "image": rng.standard_normal((batch_size, *image_shape), dtype=np.float32),
            "label": rng.integers(0, case.num_classes, batch_size).astype(np.int32),
        }
    )
    step = parallel.compile_train(make_train_step(model, tx, schedule))
    return step, state, batch


def _step_flops(compiled: Any) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_case(
    case: Case,
    *,
    batch_size: int,
    dtype: str = "float32",
    windows: int = 5,
    window_secs: float = 2.0,
    with_torch: bool = True,
) -> dict[str, Any]:
    """Compile, warm up and time one case; jaxcnn and PyTorch windows alternate."""
    jitted, state, batch = build_jaxcnn_step(case, batch_size, dtype)
    start = time.perf_counter()
    compiled = jitted.lower(state, batch).compile()
    compile_secs = time.perf_counter() - start

    def run_jax(steps: int) -> float:
        nonlocal state
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        return time.perf_counter() - start

    first_step_secs = run_jax(1)
    run_jax(1)
    # As many steps per window as fill about window_secs (at least one).
    steps_per_window = max(1, round(window_secs / run_jax(1)))
    result: dict[str, Any] = {
        "case": case.name,
        "model": case.model,
        "image_size": case.image_size,
        "batch_size": batch_size,
        "dtype": dtype,
        "num_params": sum(x.size for x in jax.tree.leaves(state.params)),
        "compile_secs": compile_secs,
        "first_step_secs": first_step_secs,
        "peak_host_memory_mib": _peak_rss_mib(),  # before PyTorch is loaded
        "steps_per_window": steps_per_window,
    }
    run_torch = _torch_step(case, batch_size, dtype, result) if with_torch else None

    jax_rates, torch_rates = [], []
    for _ in range(windows):
        jax_rates.append(steps_per_window * batch_size / run_jax(steps_per_window))
        if run_torch:
            torch_rates.append(steps_per_window * batch_size / run_torch(steps_per_window))
    step_secs = batch_size / statistics.median(jax_rates)
    flops = _step_flops(compiled)
    device = jax.devices()[0]
    peak = peak_flops(device.device_kind, dtype)
    result.update(
        jaxcnn_images_per_sec=statistics.median(jax_rates),
        jaxcnn_window_images_per_sec=jax_rates,
        step_flops=flops,
        achieved_flops_per_sec=flops / step_secs if flops else None,
        mfu=flops / step_secs / (peak * jax.device_count()) if flops and peak else None,
    )
    if torch_rates:
        result.update(
            torch_images_per_sec=statistics.median(torch_rates),
            torch_window_images_per_sec=torch_rates,
            ratio_jaxcnn_over_torch=statistics.median(
                j / t for j, t in zip(jax_rates, torch_rates, strict=True)
            ),
        )
    return result


def _torch_step(
    case: Case, batch_size: int, dtype: str, result: dict[str, Any]
) -> Callable[[int], float] | None:
    """A timer of ``n`` PyTorch train steps, or None (with the reason in ``result``)."""
    try:
        import torch

        from benchmarks import torch_models
    except ImportError:
        result["torch_skipped"] = "torch is not installed (pip install -e '.[bench]')"
        return None
    if jax.devices()[0].platform != "cpu":
        result["torch_skipped"] = "the PyTorch comparison runs on CPU only"
        return None
    model = torch_models.build(case.name, case.num_classes)
    result["torch_num_params"] = torch_models.num_params(model)
    result["torch_threads"] = torch.get_num_threads()
    if result["torch_num_params"] != result["num_params"]:
        raise RuntimeError(
            f"{case.name}: the PyTorch twin has {result['torch_num_params']:,} parameters, "
            f"jaxcnn's model {result['num_params']:,}; fix benchmarks/torch_models.py"
        )
    image_shape = (case.image_size, case.image_size, 3)
    step = torch_models.make_train_step(model, batch_size, image_shape, case.num_classes)
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16")

    def run(steps: int) -> float:
        start = time.perf_counter()
        with autocast:
            for _ in range(steps):
                step()
        return time.perf_counter() - start

    run(2)  # warm-up
    return run


def _run_worker(args: list[str]) -> dict[str, Any]:
    """Run ``--worker ...`` in a fresh interpreter and parse its JSON line."""
    command = [sys.executable, "-m", "benchmarks.train_step", "--worker", *args]
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    completed = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_compilation_cache(case: Case, batch_size: int, dtype: str) -> dict[str, float]:
    """Compile time of a first run (empty persistent cache) and of a second run (cache hit)."""
    with tempfile.TemporaryDirectory() as cache_dir:
        args = [case.name, "--batch", str(batch_size), "--dtype", dtype, "--compile-only"]
        args += ["--cache-dir", cache_dir]
        first = _run_worker(args)["compile_secs"]
        second = _run_worker(args)["compile_secs"]
    return {"case": case.name, "first_run_compile_secs": first, "second_run_compile_secs": second}


def measure_end_to_end(steps: int, windows: int) -> dict[str, Any]:
    """``jaxcnn.train`` (pipeline + step + logging) on ResNet-20/CIFAR-10 vs the bare step."""
    from jaxcnn.training.loop import train_and_evaluate
    from jaxcnn.training.writers import METRICS_FILE

    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data_dir = os.path.join(repo_root, "..", "shared", "datasets")
    config = base_config()
    config.model.name = "resnet20"
    config.dataset.name = "cifar10_jpeg"
    config.dataset.data_dir = data_dir
    config.batch_size = CASES["resnet20"].cpu_batch
    config.num_train_steps = steps
    config.log_every_steps = max(5, steps // 8)
    config.log_every_secs = 1e9  # windows of log_every_steps steps only
    config.checkpoint_every_steps = steps
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, METRICS_FILE), encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
    # The first window contains compilation; the last ends with the final checkpoint.
    train = [r["images_per_sec"] for r in records if r["split"] == "train"][1:]
    bare = measure_case(
        CASES["resnet20"], batch_size=config.batch_size, windows=windows, with_torch=False
    )
    end_to_end = statistics.median(train)
    return {
        "case": "resnet20",
        "dataset": "cifar10_jpeg",
        "steps": steps,
        "end_to_end_window_images_per_sec": train,
        "end_to_end_images_per_sec": end_to_end,
        "bare_step_images_per_sec": bare["jaxcnn_images_per_sec"],
        "fraction_of_bare_step": end_to_end / bare["jaxcnn_images_per_sec"],
    }


def _print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'case':16} {'batch':>5} {'compile s':>9} {'jaxcnn img/s':>12} {'torch img/s':>11} "
        f"{'ratio':>6} {'GFLOP/s':>8} {'MFU':>6} {'peak MiB':>8}"
    )
    print(header)
    nan = float("nan")
    for r in results:
        achieved = r.get("achieved_flops_per_sec") or nan
        print(
            f"{r['case']:16} {r['batch_size']:>5} {r['compile_secs']:>9.1f} "
            f"{r['jaxcnn_images_per_sec']:>12.1f} {r.get('torch_images_per_sec', nan):>11.1f} "
            f"{r.get('ratio_jaxcnn_over_torch', nan):>6.2f} "
            f"{achieved / 1e9:>8.1f} {r.get('mfu') or nan:>6.3f} "
            f"{r['peak_host_memory_mib']:>8.0f}"
        )


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    available = [name for name, case in CASES.items() if case.model in models.list_models()]
    parser.add_argument("--models", nargs="+", default=available, choices=available)
    parser.add_argument("--batch", type=int, default=0, help="batch size; 0 = the case's own")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--windows", type=int, default=7, help="timed windows per framework")
    parser.add_argument("--window-secs", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="3 short windows, for smoke runs")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--end-to-end", action="store_true", help="also time jaxcnn.train")
    parser.add_argument("--end-to-end-steps", type=int, default=160)
    parser.add_argument("--output", default=os.path.join(RESULTS_DIR, "train_step.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one case, JSON out
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.window_secs, args.end_to_end_steps = 3, 1.0, 40
    return args


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    case = CASES[args.worker]
    batch_size = args.batch or default_batch(case)
    if args.compile_only:
        xla_flags.enable_compilation_cache(args.cache_dir)
        jitted, state, batch = build_jaxcnn_step(case, batch_size, args.dtype)
        start = time.perf_counter()
        jitted.lower(state, batch).compile()
        return {"compile_secs": time.perf_counter() - start}
    return measure_case(
        case,
        batch_size=batch_size,
        dtype=args.dtype,
        windows=args.windows,
        window_secs=args.window_secs,
        with_torch=not args.no_torch,
    )


def main(argv: list[str]) -> None:
    args = _parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    common = ["--dtype", args.dtype, "--windows", str(args.windows)]
    common += ["--window-secs", str(args.window_secs)] + (["--no-torch"] if args.no_torch else [])
    results = []
    for name in args.models:
        batch = ["--batch", str(args.batch)] if args.batch else []
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(_run_worker([name, *batch, *common]))
    report: dict[str, Any] = {"machine": describe_machine(), "train_step": results}
    first = CASES[args.models[0]]
    report["compilation_cache"] = measure_compilation_cache(
        first, args.batch or default_batch(first), args.dtype
    )
    if args.end_to_end:
        print("measuring the end-to-end loop ...", file=sys.stderr, flush=True)
        report["end_to_end"] = measure_end_to_end(args.end_to_end_steps, args.windows)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    _print_table(results)
    print(json.dumps({k: v for k, v in report.items() if k != "train_step"}, indent=2))
    print(f"results in {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
