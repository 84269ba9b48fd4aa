"""Train-step speed: jaxcnn's compiled step against the same model and batch in PyTorch.

    python -m benchmarks.train_step                       # resnet20, resnet18_cifar
    python -m benchmarks.train_step --models resnet50,vit_s16,efficientnet_b0 --windows 3
    python -m benchmarks.train_step --quick --models resnet20  # batch 8, one one-step window
    python -m benchmarks.train_step --end_to_end            # + train_and_evaluate on cifar10_jpeg
    python -m benchmarks.train_step --compare_conv_impls taps,xla  # + the step with those convs
    python -m benchmarks.train_step --compare_steps_per_dispatch 1  # + one step per call
    python -m benchmarks.train_step --compare_dtypes bfloat16  # + the step in bfloat16

For each case it prints the compile time of the first jaxcnn call, the steady-state images/s
of the jaxcnn train step, dispatched as the training loop does (``steps_per_dispatch``; median
of timed windows after warm-up, each ended by ``block_until_ready``), the same for PyTorch (CPU
build, channels-last, SGD with momentum), the ratio, the FLOPs of one step from XLA's cost
analysis (of the step with XLA's convolutions: custom calls count no FLOPs), the peak host RSS
and, on an accelerator listed in ``jaxcnn/hardware.py``, the MFU. jaxcnn and PyTorch
windows alternate, so a shared, noisy machine slows both alike. Generated data only: no
TensorFlow. Results go to ``benchmarks/results/train_step_<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxcnn import hardware
from jaxcnn.config import base_config
from jaxcnn.data import DatasetInfo
from jaxcnn.errors import UserError, unknown_choice
from jaxcnn.models import conv
from jaxcnn.training.setup import build_setup
from jaxcnn.training.step import scan_steps, steps_per_dispatch

# name: (registered model, constructor fields, image shape, default batch on CPU)
CASES = {
    "resnet20": ("resnet20", {}, (32, 32, 3), 128),
    "resnet18_cifar": ("resnet18", {"small_images": True}, (32, 32, 3), 128),
    "resnet50": ("resnet50", {}, (224, 224, 3), 8),
    "vit_s16": ("vit_s16", {}, (224, 224, 3), 8),
    "efficientnet_b0": ("efficientnet_b0", {}, (224, 224, 3), 8),
    "airbench94": ("airbench94", {}, (32, 32, 3), 1024),  # experiments/fast_cifar.py's network
}
NUM_CLASSES = 10
RESULTS = Path(__file__).parent / "results"


def _config(
    case: str, batch_size: int, dtype: str, steps_per_dispatch: int, conv_impl: str
) -> ml_collections.ConfigDict:
    """The case as a training config: plain SGD with momentum 0.9 at a constant rate, as the
    PyTorch side runs."""
    name, fields, _, _ = CASES[case]
    config = base_config()
    config.model.name, config.model.dtype = name, dtype
    config.model.update(fields)
    config.batch_size = config.eval_batch_size = batch_size
    config.optimizer.name, config.optimizer.momentum = "sgd", 0.9
    config.optimizer.learning_rate = 0.1
    config.schedule.name, config.schedule.warmup_epochs = "constant", 0.0
    config.steps_per_dispatch, config.conv_impl = steps_per_dispatch, conv_impl
    return config


def jaxcnn_step(
    case: str,
    batch_size: int,
    dtype: str = "float32",
    requested_steps_per_dispatch: int = 0,
    conv_impl: str = "auto",
) -> tuple[Callable[[], None], int, float, float, int, str]:
    """(run one dispatch and wait, its train steps, compile seconds, FLOPs per step,
    parameters, convolution implementation) of jaxcnn's step, built by the training CLI's own
    ``build_setup`` on generated data and compiled as the training loop runs it: several steps
    per dispatch where ``steps_per_dispatch`` says so (0 = the backend's default)."""
    _, _, image_shape, _ = CASES[case]
    info = DatasetInfo("generated", NUM_CLASSES, image_shape, 1_000 * batch_size, batch_size)

    def setup_with(impl: str):
        config = _config(case, batch_size, dtype, requested_steps_per_dispatch, impl)
        return build_setup(config, info=info)

    setup = setup_with(conv_impl)
    parallel = setup.parallel
    state = parallel.init(setup.init_fn())
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch(
        {
            "image": rng.normal(size=(batch_size, *image_shape)).astype(np.float32),
            "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
        }
    )
    train_step = setup.train_step()
    steps = setup.steps_per_dispatch
    dispatched = parallel.compile_train(scan_steps(train_step) if steps > 1 else train_step)
    batches = parallel.stack_batches([batch] * steps) if steps > 1 else batch
    start = time.perf_counter()
    compiled = dispatched.lower(state, batches).compile()
    compile_secs = time.perf_counter() - start
    # The same step with XLA's convolutions, every one of which XLA's cost analysis counts.
    counted = parallel.compile_train(setup_with("xla").train_step())
    cost = counted.lower(state, batch).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    holder = {"state": state}

    def run() -> None:
        holder["state"], metrics = compiled(holder["state"], batches)
        jax.block_until_ready(metrics)

    return run, steps, compile_secs, flops, setup.num_params, setup.model.layers.conv_impl


def torch_step(case: str, batch_size: int) -> tuple[Callable[[], None], int] | None:
    """(run one step, parameters) of the PyTorch twin, or None without torch."""
    try:
        from benchmarks import torch_models
    except ImportError:
        return None
    model = torch_models.build(case, NUM_CLASSES)
    _, _, image_shape, _ = CASES[case]
    step = torch_models.make_train_step(model, batch_size, image_shape, NUM_CLASSES)
    return step, torch_models.num_params(model)


def images_per_sec(run: Callable[[], None], images_per_run: int, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        run()
    return runs * images_per_run / (time.perf_counter() - start)


def benchmark(
    case: str,
    batch_size: int,
    windows: int,
    steps: int,
    with_torch: bool = True,
    dtype: str = "float32",
    conv_impl: str = "auto",
    compare_conv_impls: Sequence[str] = (),
    steps_per_dispatch: int = 0,
    compare_steps_per_dispatch: Sequence[int] = (),
    compare_dtypes: Sequence[str] = (),
) -> dict:
    """One case: jaxcnn's step, its PyTorch twin (``with_torch``) and variants of jaxcnn's step
    (each convolution implementation in ``compare_conv_impls``, each number of steps per
    dispatch in ``compare_steps_per_dispatch``, each computation dtype in ``compare_dtypes``),
    in alternating windows of at least ``steps`` train steps each."""
    run_jax, jax_steps, compile_secs, flops, jax_params, impl_used = jaxcnn_step(
        case, batch_size, dtype, steps_per_dispatch, conv_impl
    )
    variants = {}  # label: (run, steps per run)
    for impl in compare_conv_impls:
        run, run_steps, *_ = jaxcnn_step(case, batch_size, dtype, steps_per_dispatch, impl)
        variants[f"conv_impl={impl}"] = run, run_steps
    for other_steps in compare_steps_per_dispatch:
        run, run_steps, *_ = jaxcnn_step(case, batch_size, dtype, other_steps, conv_impl)
        variants[f"steps_per_dispatch={other_steps}"] = run, run_steps
    for other_dtype in compare_dtypes:
        run, run_steps, *_ = jaxcnn_step(
            case, batch_size, other_dtype, steps_per_dispatch, conv_impl
        )
        variants[f"dtype={other_dtype}"] = run, run_steps
    # The PyTorch twin runs in float32 only: its CPU bfloat16 path is not what users train with.
    twin = torch_step(case, batch_size) if with_torch and dtype == "float32" else None
    for run, _ in [(run_jax, jax_steps), *variants.values()]:
        run()  # warm-up
    jax_rates, torch_rates = [], []
    variant_rates = {label: [] for label in variants}
    if twin:
        run_torch, torch_params = twin
        if torch_params != jax_params:
            raise SystemExit(
                f"{case}: PyTorch twin has {torch_params:,} parameters, jaxcnn {jax_params:,}"
            )
        run_torch()

    def window(run: Callable[[], None], steps_per_run: int) -> float:
        return images_per_sec(run, batch_size * steps_per_run, math.ceil(steps / steps_per_run))

    for _ in range(windows):
        jax_rates.append(window(run_jax, jax_steps))
        if twin:
            torch_rates.append(window(run_torch, 1))
        for label, (run, run_steps) in variants.items():
            variant_rates[label].append(window(run, run_steps))
    device = jax.devices()[0]
    peak = hardware.peak_flops(device.device_kind, dtype) if device.platform != "cpu" else None
    jax_rate = statistics.median(jax_rates)
    result = {
        "case": case,
        "dtype": dtype,
        "conv_impl": impl_used,  # the main jaxcnn column's
        "steps_per_dispatch": jax_steps,
        "batch_size": batch_size,
        "parameters": jax_params,
        "compile_secs": compile_secs,
        "flops_per_step": flops,
        "jaxcnn_images_per_sec": jax_rate,
        "jaxcnn_window_images_per_sec": jax_rates,
        # Model FLOPs utilisation; None on CPUs and devices missing from hardware.PEAK_FLOPS.
        "mfu": flops * jax_rate / batch_size / peak if peak and math.isfinite(flops) else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if variants:
        result["variants"] = {
            label: {"images_per_sec": statistics.median(rates), "window_images_per_sec": rates}
            for label, rates in variant_rates.items()
        }
    if twin:
        result["torch_images_per_sec"] = statistics.median(torch_rates)
        result["torch_window_images_per_sec"] = torch_rates
        result["ratio_jaxcnn_to_torch"] = (
            result["jaxcnn_images_per_sec"] / result["torch_images_per_sec"]
        )
    return result


def end_to_end(data_dir: str, steps: int, log_every_steps: int, batch_size: int) -> dict:
    """images/s of ``train_and_evaluate`` (ResNet-20, cifar10_jpeg) against the bare step.

    The loop's rate is the mean over its logging windows after the first (which pays for
    compilation); the bare step is timed just before and just after, and averaged, so that a
    change in the machine's load during the run affects both.
    """
    import tempfile

    from jaxcnn.config import base_config
    from jaxcnn.training.loop import train_and_evaluate
    from jaxcnn.training.writers import METRICS_FILE

    run_bare, bare_steps, *_ = jaxcnn_step("resnet20", batch_size)
    run_bare()
    runs = max(1, log_every_steps // bare_steps)
    before = images_per_sec(run_bare, batch_size * bare_steps, runs)
    config = base_config()
    config.model.name = "resnet20"
    config.dataset.name = "cifar10_jpeg"
    config.dataset.data_dir = data_dir
    config.dataset.augment = "crop_flip"
    config.batch_size = batch_size
    config.num_train_steps = steps
    config.optimizer.learning_rate = 0.1
    config.schedule.name = "constant"
    config.log_every_steps = log_every_steps
    config.log_every_secs = math.inf  # windows of exactly log_every_steps steps
    config.checkpoint_every_steps = steps
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(config, workdir)
        lines = Path(workdir, METRICS_FILE).read_text().splitlines()
    rates = [
        record["images_per_sec"]
        for record in map(json.loads, lines)
        if record.get("split") == "train" and "images_per_sec" in record
    ][1:]
    after = images_per_sec(run_bare, batch_size * bare_steps, runs)
    bare = (before + after) / 2
    loop = statistics.mean(rates)
    return {
        "steps": steps,
        "batch_size": batch_size,
        "loop_window_images_per_sec": rates,
        "loop_images_per_sec": loop,
        "bare_step_images_per_sec": [before, after],
        "loop_fraction_of_bare_step": loop / bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_step", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--models", default="resnet20,resnet18_cifar", help=f"of {', '.join(CASES)}"
    )
    parser.add_argument("--batch", type=int, default=0, help="0 = each case's default")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per framework")
    parser.add_argument(
        "--steps", type=int, default=5, help="train steps per timed window (at least)"
    )
    dtypes = ("float32", "bfloat16")
    parser.add_argument("--dtype", default="float32", choices=dtypes)
    parser.add_argument("--skip_torch", action="store_true", help="time jaxcnn only")
    parser.add_argument(
        "--conv_impl",
        default="auto",
        choices=conv.IMPL_CHOICES,
        help="jaxcnn's convolution implementation (jaxcnn/models/conv.py)",
    )
    parser.add_argument(
        "--compare_conv_impls",
        default="",
        help=f"also time jaxcnn's step with these conv_impls (comma-separated, of "
        f"{', '.join(conv.IMPL_CHOICES)})",
    )
    parser.add_argument(
        "--steps_per_dispatch",
        type=int,
        default=0,
        help="jaxcnn's train steps per compiled call, as the config field (0 = auto)",
    )
    parser.add_argument(
        "--compare_steps_per_dispatch",
        default="",
        help="also time jaxcnn's step with these steps_per_dispatch (comma-separated)",
    )
    parser.add_argument(
        "--compare_dtypes",
        default="",
        help=f"also time jaxcnn's step in these dtypes (comma-separated, of {', '.join(dtypes)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: batch <= 8, one window of one step"
    )
    parser.add_argument(
        "--end_to_end", action="store_true", help="also time train_and_evaluate (ResNet-20)"
    )
    parser.add_argument("--e2e_steps", type=int, default=150, help="--end_to_end: loop steps")
    parser.add_argument(
        "--data_dir",
        default=str(Path(__file__).parents[1] / ".." / "shared" / "datasets"),
        help="--end_to_end: TFDS data dir holding cifar10_jpeg",
    )
    parser.add_argument("--output", default="", help="results file; '' = benchmarks/results/")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.steps = 1, 1
    cases = args.models.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.exit(2, f"error: unknown case {unknown[0]!r}; valid choices: {', '.join(CASES)}\n")
    compare_conv_impls = [impl for impl in args.compare_conv_impls.split(",") if impl]
    compare_dtypes = [dtype for dtype in args.compare_dtypes.split(",") if dtype]
    try:
        for impl in [args.conv_impl, *compare_conv_impls]:
            conv.resolve_impl(impl)
        for dtype in compare_dtypes:
            if dtype not in dtypes:
                raise unknown_choice("dtype", dtype, dtypes)
        compare_steps = [int(n) for n in args.compare_steps_per_dispatch.split(",") if n]
        for n in [args.steps_per_dispatch, *compare_steps]:
            steps_per_dispatch(n)
    except ValueError as error:
        parser.exit(2, f"error: --compare_steps_per_dispatch: {error}\n")
    except UserError as error:
        parser.exit(2, f"error: {error}\n")

    info = hardware.describe_machine()
    print(f"# {info['cpu']}, {info['cores']} cores; jax {info['jax']}, torch {info['torch']}")
    with_torch = not args.skip_torch and info["torch"] is not None
    if not args.skip_torch and not with_torch:
        print("# torch is not installed (pip install -e '.[bench]'): PyTorch columns skipped")
    print(
        "| case | batch | params | steps/dispatch | compile s | GFLOP/step | peak RSS MiB | MFU "
        "| jaxcnn img/s | PyTorch img/s | ratio | jaxcnn variants img/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    output = Path(args.output or RESULTS / f"train_step_{jax.devices()[0].platform}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for case in cases:
        batch_size = args.batch or CASES[case][3]
        if args.quick:
            batch_size = min(batch_size, 8)
        r = benchmark(
            case,
            batch_size,
            args.windows,
            args.steps,
            with_torch,
            args.dtype,
            args.conv_impl,
            compare_conv_impls,
            args.steps_per_dispatch,
            compare_steps,
            compare_dtypes,
        )
        results.append(r)
        torch_rate = r.get("torch_images_per_sec")
        others = "; ".join(
            f"{label}: {variant['images_per_sec']:,.1f}"
            for label, variant in r.get("variants", {}).items()
        )
        print(
            f"| {case} | {r['batch_size']} | {r['parameters']:,} | {r['steps_per_dispatch']} | "
            f"{r['compile_secs']:.1f} | "
            f"{r['flops_per_step'] / 1e9:.2f} | {r['peak_rss_mib']:,.0f} | "
            f"{f'{mfu:.1%}' if (mfu := r['mfu']) else '–'} | "
            f"{r['jaxcnn_images_per_sec']:,.1f} | "
            + (
                f"{torch_rate:,.1f} | {r['ratio_jaxcnn_to_torch']:.2f} |"
                if torch_rate
                else "– | – |"
            )
            + f" {others or '–'} |",
            flush=True,
        )
        # Written after every case, so a long run that is stopped keeps what it measured.
        output.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    report = {"machine": info, "results": results}
    if args.end_to_end:
        e2e = end_to_end(args.data_dir, args.e2e_steps, 25, 128)
        print(
            f"# end to end (train_and_evaluate, ResNet-20, cifar10_jpeg, batch 128): "
            f"{e2e['loop_images_per_sec']:,.1f} img/s = "
            f"{e2e['loop_fraction_of_bare_step']:.1%} of the bare step",
            flush=True,
        )
        report["end_to_end"] = e2e
        output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"# written to {output}")


if __name__ == "__main__":
    main()
