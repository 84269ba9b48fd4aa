"""Train-step speed: jaxcnn's compiled step against the same model and batch in PyTorch.

    python -m benchmarks.train_step                       # resnet20, resnet18_cifar
    python -m benchmarks.train_step --models resnet50,vit_s16,efficientnet_b0 --rounds 3
    python -m benchmarks.train_step --dtype bfloat16      # PyTorch under autocast(bfloat16)
    python -m benchmarks.train_step --devices 8           # jaxcnn on 8 host devices
    python -m benchmarks.train_step --processes 2         # jaxcnn as 2 processes, 1 core each
    python -m benchmarks.train_step --quick --models resnet20  # batch 8, 1 round, 1 call
    python -m benchmarks.train_step --end_to_end            # + train_and_evaluate on cifar10_jpeg
    python -m benchmarks.train_step --compare_conv_impls taps,xla  # + the step with those convs
    python -m benchmarks.train_step --compare_steps_per_dispatch 1  # + one step per call
    python -m benchmarks.train_step --compare_dtypes bfloat16  # + the step in bfloat16
    python -m benchmarks.train_step --method interleaved  # the old one-process method

Method (default ``processes``): every measurement is a fresh process (``benchmarks/rounds.py``)
that times ``--windows`` windows of at least ``--steps`` train steps after a warm-up call, each
window ended by waiting for the device; its figure is the median window. Rounds alternate
jaxcnn, PyTorch and the jaxcnn variants (the order reversed every other round), and each
column is the median over ``--rounds`` rounds with its range. ``interleaved`` runs everything
in this one process, windows alternating: the two runtimes' thread pools then slow each other
(it overstated jaxcnn's lead), so it is kept only to compare with figures taken that way.

Set-up: ``--devices N`` gives the jaxcnn process N host devices (``JAX_NUM_CPU_DEVICES``);
``--processes P`` runs jaxcnn as P processes joined by ``jax.distributed`` on localhost, as
``launch/local.py`` does, each pinned to 1/P of the cores, and reports the images/s of the
global batch. PyTorch stays one process with its default threads on all cores. ``--dtype
bfloat16``: jaxcnn's ``model.dtype``, and PyTorch's forward pass under ``torch.autocast('cpu',
torch.bfloat16)``; weights and updates stay float32 in both.

Reported per case: compile time of jaxcnn's first call (median over rounds), the FLOPs of one
step from XLA's cost analysis (of the step with XLA's convolutions: custom calls count no
FLOPs), jaxcnn's peak RSS, images/s of each runner, the ratio of the medians, and each
framework's share of the peak: FLOPs per step × steps/s / peak FLOP/s of the dtype. The peak
is the device's from ``jaxcnn/hardware.py`` on an accelerator; on the CPU it is this machine's
dense-matmul peak from ``--peak`` (``python -m benchmarks.peak``), measured first when that file
is missing or was measured on another CPU. Generated data only: no TensorFlow. The JSON
(``benchmarks/results/``, one file per set-up: :func:`default_output`) keeps every round and
window.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from benchmarks import peak, rounds
from jaxcnn import distributed, hardware
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
METHODS = ("processes", "interleaved")
DTYPES = ("float32", "bfloat16")
RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class Runner:
    """One framework's train step, ready to time."""

    run: Callable[[int], None]  # makes that many calls, then waits for the last to finish
    steps_per_call: int
    info: dict  # what the results report besides speed
    program: jax.stages.Compiled | None = None  # jaxcnn's compiled step (benchmarks.step_profile)


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
    count_flops: bool = False,
) -> Runner:
    """jaxcnn's step, built by the training CLI's own ``build_setup`` on generated data and
    compiled as the training loop runs it: several steps per call where ``steps_per_dispatch``
    says so (0 = the backend's default), over all devices of all processes (``batch_size`` is
    the global batch). Its info: compile seconds, parameters, convolution implementation,
    steps per call, devices, processes and, with ``count_flops``, the FLOPs of one step."""
    _, _, image_shape, _ = CASES[case]
    info = DatasetInfo("generated", NUM_CLASSES, image_shape, 1_000 * batch_size, batch_size)

    def setup_with(impl: str):
        config = _config(case, batch_size, dtype, requested_steps_per_dispatch, impl)
        return build_setup(config, info=info)

    setup = setup_with(conv_impl)
    parallel = setup.parallel
    state = parallel.init(setup.init_fn())
    rng = np.random.default_rng(jax.process_index())
    local_batch = batch_size // jax.process_count()
    batch = parallel.shard_batch(
        {
            "image": rng.normal(size=(local_batch, *image_shape)).astype(np.float32),
            "label": rng.integers(0, NUM_CLASSES, local_batch).astype(np.int32),
        }
    )
    train_step = setup.train_step()
    steps = setup.steps_per_dispatch
    dispatched = parallel.compile_train(scan_steps(train_step) if steps > 1 else train_step)
    batches = parallel.stack_batches([batch] * steps) if steps > 1 else batch
    start = time.perf_counter()
    compiled = dispatched.lower(state, batches).compile()
    compile_secs = time.perf_counter() - start
    flops = float("nan")
    if count_flops:  # the same step with XLA's convolutions, all of which XLA's cost counts
        counted = parallel.compile_train(setup_with("xla").train_step())
        cost = counted.lower(state, batch).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    holder = {"state": state}

    def run(calls: int) -> None:
        for _ in range(calls):
            holder["state"], metrics = compiled(holder["state"], batches)
        jax.block_until_ready(metrics)

    return Runner(
        run,
        steps,
        {
            "compile_secs": compile_secs,
            "flops_per_step": flops,
            "parameters": setup.num_params,
            "conv_impl": setup.model.layers.conv_impl,
            "steps_per_dispatch": steps,
            "devices": jax.device_count(),
            "processes": jax.process_count(),
        },
        compiled,
    )


def torch_step(case: str, batch_size: int, dtype: str = "float32") -> Runner | None:
    """The PyTorch twin's step (info: parameters, threads), or None without torch."""
    try:
        import torch

        from benchmarks import torch_models
    except ImportError:
        return None
    model = torch_models.build(case, NUM_CLASSES)
    _, _, image_shape, _ = CASES[case]
    step = torch_models.make_train_step(model, batch_size, image_shape, NUM_CLASSES, dtype)

    def run(calls: int) -> None:
        for _ in range(calls):
            step()

    info = {"parameters": torch_models.num_params(model), "threads": torch.get_num_threads()}
    return Runner(run, 1, info)


def images_per_sec(runner: Runner, batch_size: int, steps: int) -> float:
    """images/s of one window of at least ``steps`` train steps (whole calls)."""
    calls = math.ceil(steps / runner.steps_per_call)
    start = time.perf_counter()
    runner.run(calls)
    return calls * runner.steps_per_call * batch_size / (time.perf_counter() - start)


def time_windows(
    runners: dict[str, Runner], batch_size: int, windows: int, steps: int
) -> dict[str, list[float]]:
    """images/s of each runner's ``windows`` windows after a warm-up call, the runners'
    windows alternating."""
    for runner in runners.values():
        runner.run(1)
    rates = {label: [] for label in runners}
    for _ in range(windows):
        for label, runner in runners.items():
            rates[label].append(images_per_sec(runner, batch_size, steps))
    return rates


def build_runner(spec: dict) -> Runner | None:
    """The runner a spec (from :func:`runner_specs`) describes."""
    if spec["framework"] == "torch":
        return torch_step(spec["case"], spec["batch"], spec["dtype"])
    return jaxcnn_step(
        spec["case"],
        spec["batch"],
        spec["dtype"],
        spec["steps_per_dispatch"],
        spec["conv_impl"],
        spec.get("count_flops", False),
    )


def runner_specs(
    case: str,
    batch_size: int,
    dtype: str,
    conv_impl: str,
    requested_steps_per_dispatch: int,
    compare_conv_impls: Sequence[str] = (),
    compare_steps_per_dispatch: Sequence[int] = (),
    compare_dtypes: Sequence[str] = (),
    with_torch: bool = True,
) -> dict[str, dict]:
    """label: spec of every runner of a case: ``jaxcnn``, ``torch`` (``with_torch``) and
    jaxcnn's step with each other convolution implementation, steps per dispatch and dtype."""
    jaxcnn = {
        "framework": "jaxcnn",
        "case": case,
        "batch": batch_size,
        "dtype": dtype,
        "conv_impl": conv_impl,
        "steps_per_dispatch": requested_steps_per_dispatch,
    }
    specs = {"jaxcnn": jaxcnn}
    if with_torch:
        specs["torch"] = {"framework": "torch", "case": case, "batch": batch_size, "dtype": dtype}
    for impl in compare_conv_impls:
        specs[f"conv_impl={impl}"] = {**jaxcnn, "conv_impl": impl}
    for n in compare_steps_per_dispatch:
        specs[f"steps_per_dispatch={n}"] = {**jaxcnn, "steps_per_dispatch": n}
    for other in compare_dtypes:
        specs[f"dtype={other}"] = {**jaxcnn, "dtype": other}
    return specs


def measure(spec: dict) -> dict | None:
    """Child mode: time one runner (joining a multi-process JAX run if the environment says
    so); process 0 returns its info, windows, peak RSS and machine."""
    jaxcnn = spec["framework"] == "jaxcnn"
    if jaxcnn:
        distributed.initialize_from_flags_or_env()
    runner = build_runner(spec)
    if runner is None:
        raise SystemExit("torch is not installed")
    rates = time_windows({"one": runner}, spec["batch"], spec["windows"], spec["steps"])["one"]
    if jaxcnn and jax.process_index() != 0:
        return None
    return {
        **runner.info,
        "window_images_per_sec": rates,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average": os.getloadavg(),  # after the windows: was anything else running?
        "machine": hardware.describe_machine() if jaxcnn else hardware.describe_host(),
    }


def in_processes(
    specs: dict[str, dict], n_rounds: int, windows: int, steps: int, devices: int, processes: int
) -> dict[str, list[dict]]:
    """label: the result of each round, every runner in a fresh process (or ``processes``
    processes for jaxcnn's), alternating; the first jaxcnn round also counts the FLOPs."""
    env = {}
    if devices > 1 or processes > 1:
        env = {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
    results = {label: [] for label in specs}
    for r, label in rounds.schedule(list(specs), n_rounds):
        spec = {**specs[label], "windows": windows, "steps": steps}
        if spec["framework"] == "torch":
            result = rounds.run_child("benchmarks.train_step", spec)
        else:
            spec["count_flops"] = r == 0 and label == "jaxcnn"
            result = rounds.run_child("benchmarks.train_step", spec, env=env, processes=processes)
        results[label].append(result)
    return results


def interleaved(specs: dict[str, dict], windows: int, steps: int) -> dict[str, list[dict]]:
    """label: one result (all its windows), every runner in this process, windows
    alternating; as :func:`in_processes` returns them."""
    runners = {
        label: build_runner({**spec, "count_flops": label == "jaxcnn"})
        for label, spec in specs.items()
    }
    runners = {label: runner for label, runner in runners.items() if runner is not None}
    batch = specs["jaxcnn"]["batch"]
    rates = time_windows(runners, batch, windows, steps)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # all runners together
    machine = hardware.describe_machine()
    return {
        label: [
            {**runner.info, "window_images_per_sec": rates[label], "peak_rss_mib": rss}
            | ({"machine": machine} if label == "jaxcnn" else {})
        ]
        for label, runner in runners.items()
    }


def summarise(
    case: str,
    method: str,
    dtype: str,
    batch_size: int,
    results: dict[str, list[dict]],
    peak_flops: float | None,
) -> dict:
    """One case's row: jaxcnn's step (compile time, FLOPs, parameters, ...) and for every
    runner the median and range of its rounds (``interleaved``: of its windows), the ratio of
    jaxcnn's median to PyTorch's, and the fraction of ``peak_flops`` (the peak of jaxcnn's
    device in ``dtype``; PyTorch's fraction only when that is this CPU, none for the variants
    in another dtype) that each runner reaches."""
    jax_rounds = results["jaxcnn"]
    first = jax_rounds[0]
    twin = results.get("torch")
    if twin and twin[0]["parameters"] != first["parameters"]:
        raise SystemExit(
            f"{case}: PyTorch twin has {twin[0]['parameters']:,} parameters, "
            f"jaxcnn {first['parameters']:,}"
        )
    on_cpu = first["machine"]["platform"] == "cpu"
    flops = first["flops_per_step"]
    runners = {}
    for label, label_rounds in results.items():
        windows = [r["window_images_per_sec"] for r in label_rounds]
        samples = windows[0] if method == "interleaved" else [statistics.median(w) for w in windows]
        runners[label] = {**rounds.spread(samples), "rounds": label_rounds}
        same_peak = (label != "torch" or on_cpu) and not label.startswith("dtype=")
        if peak_flops and math.isfinite(flops) and same_peak:
            runners[label]["fraction_of_peak"] = (
                flops * runners[label]["median"] / batch_size / peak_flops
            )
    return {
        "case": case,
        "method": method,
        "dtype": dtype,
        "batch_size": batch_size,
        "devices": first["devices"],
        "processes": first["processes"],
        "conv_impl": first["conv_impl"],
        "steps_per_dispatch": first["steps_per_dispatch"],
        "parameters": first["parameters"],
        "compile_secs": statistics.median(r["compile_secs"] for r in jax_rounds),
        "flops_per_step": flops,
        "peak_flops": peak_flops,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in jax_rounds),
        "torch_threads": twin[0]["threads"] if twin else None,
        "runners": runners,
        "ratio_jaxcnn_to_torch": (
            runners["jaxcnn"]["median"] / runners["torch"]["median"] if twin else None
        ),
    }


def peak_of(machine: dict, dtype: str, peak_file: Path, quick: bool) -> tuple[float | None, str]:
    """(peak FLOP/s in ``dtype`` of the device jaxcnn ran on, where that figure comes from):
    an accelerator's from ``jaxcnn/hardware.py``; this CPU's measured dense-matmul peak."""
    if machine["platform"] != "cpu":
        flops = hardware.peak_flops(machine["device_kind"], dtype)
        return flops, "jaxcnn/hardware.py" if flops else f"{machine['device_kind']} not listed"
    peaks, source = _host_peak(peak_file, quick)
    if dtype not in peaks:
        return None, f"no {dtype} matmul measured ({source})"
    return peaks[dtype]["gflops"] * 1e9, f"{peaks[dtype]['library']} matmul, {source}"


_host_peak = functools.cache(peak.host_peak)  # measured at most once per run

HEADER = (
    "| case | batch | params | steps/dispatch | compile s | GFLOP/step | peak RSS MiB "
    "| jaxcnn img/s | PyTorch img/s | ratio | jaxcnn % of peak | PyTorch % of peak "
    "| jaxcnn variants img/s |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def _rate(runner: dict) -> str:
    """'median (min–max)' images/s."""
    if runner["min"] == runner["max"]:
        return f"{runner['median']:,.1f}"
    return f"{runner['median']:,.1f} ({runner['min']:,.1f}–{runner['max']:,.1f})"


def _share(runner: dict | None) -> str:
    fraction = runner.get("fraction_of_peak") if runner else None
    return "–" if fraction is None else f"{fraction:.1%}"


def table_row(row: dict) -> str:
    """``row`` as a line of the :data:`HEADER` table."""
    runners = row["runners"]
    twin = runners.get("torch")
    variants = "; ".join(
        f"{label}: {_rate(runner)}"
        for label, runner in runners.items()
        if label not in ("jaxcnn", "torch")
    )
    ratio = row["ratio_jaxcnn_to_torch"]
    return (
        f"| {row['case']} | {row['batch_size']} | {row['parameters']:,} | "
        f"{row['steps_per_dispatch']} | {row['compile_secs']:.1f} | "
        f"{row['flops_per_step'] / 1e9:.2f} | {row['peak_rss_mib']:,.0f} | "
        f"{_rate(runners['jaxcnn'])} | {_rate(twin) if twin else '–'} | "
        f"{f'{ratio:.2f}' if ratio else '–'} | {_share(runners['jaxcnn'])} | {_share(twin)} | "
        f"{variants or '–'} |"
    )


def describe_method(args: argparse.Namespace, with_torch: bool) -> list[str]:
    """Comment lines saying how the table was measured."""
    if args.method == "processes":
        how = (
            f"each runner in a fresh process, {args.rounds} alternating round(s) of "
            f"{args.windows} window(s) of >= {args.steps} steps; median of the rounds (range)"
        )
    else:
        how = f"one process, {args.windows} alternating windows of >= {args.steps} steps; median"
    jaxcnn = f"{args.devices} device(s) per process × {args.processes} process(es)"
    if args.processes > 1:
        jaxcnn += f", each pinned to {len(rounds.split_cores(args.processes)[0])} core(s)"
    torch = "1 process, its default threads on all cores" if with_torch else "not run"
    autocast = "; PyTorch under torch.autocast('cpu', bfloat16)" if args.dtype != "float32" else ""
    return [
        f"# method: {args.method}: {how}",
        f"# set-up: jaxcnn {jaxcnn}; PyTorch {torch}; dtype {args.dtype}{autocast}",
    ]


def end_to_end(data_dir: str, steps: int, log_every_steps: int, batch_size: int) -> dict:
    """images/s of ``train_and_evaluate`` (ResNet-20, cifar10_jpeg) against the bare step.

    The loop's rate is the mean over its logging windows after the first (which pays for
    compilation); the bare step is timed just before and just after, and averaged, so that a
    change in the machine's load during the run affects both.
    """
    import tempfile

    from jaxcnn.training.loop import train_and_evaluate

    bare_step = jaxcnn_step("resnet20", batch_size)
    bare_step.run(1)
    before = images_per_sec(bare_step, batch_size, log_every_steps)
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
    config.log_every_secs = 1e9  # never by time: windows of exactly log_every_steps steps
    config.checkpoint_every_steps = steps
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(config, workdir)
        rates = logged_rates(workdir)
    after = images_per_sec(bare_step, batch_size, log_every_steps)
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


def logged_rates(workdir: str) -> list[float]:
    """The images/s of a run's logging windows after the first (which pays for compiling)."""
    from jaxcnn.training.writers import METRICS_FILE

    lines = Path(workdir, METRICS_FILE).read_text().splitlines()
    return [
        record["images_per_sec"]
        for record in map(json.loads, lines)
        if record.get("split") == "train" and "images_per_sec" in record
    ][1:]


def default_output(platform: str, args: argparse.Namespace) -> Path:
    """``benchmarks/results/train_step_<platform>[_interleaved]_<dtype>[_<N>devices]
    [_<P>processes].json``: one file per set-up."""
    parts = [f"train_step_{platform}"] + (["interleaved"] if args.method == "interleaved" else [])
    parts.append(args.dtype)
    parts += [f"{args.devices}devices"] if args.devices > 1 else []
    parts += [f"{args.processes}processes"] if args.processes > 1 else []
    return RESULTS / f"{'_'.join(parts)}.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_step", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--models", default="resnet20,resnet18_cifar", help=f"of {', '.join(CASES)}")
    add(
        "--method",
        default="processes",
        choices=METHODS,
        help="processes: each measurement in a fresh process, rounds alternating; "
        "interleaved: the old method, everything in this process",
    )
    add("--rounds", type=int, default=5, help="processes method: rounds per runner")
    add("--windows", type=int, default=3, help="timed windows per process (interleaved: in all)")
    add("--steps", type=int, default=8, help="train steps per timed window (at least)")
    add("--batch", type=int, default=0, help="global batch; 0 = each case's default")
    add("--dtype", default="float32", choices=DTYPES)
    add("--devices", type=int, default=1, help="host devices per jaxcnn process (CPU)")
    add(
        "--processes",
        type=int,
        default=1,
        help="jaxcnn processes (CPU; jax.distributed on localhost, each on 1/P of the cores)",
    )
    add("--skip_torch", action="store_true", help="time jaxcnn only")
    add("--conv_impl", default="auto", choices=conv.IMPL_CHOICES, help="jaxcnn/models/conv.py")
    add(
        "--compare_conv_impls",
        default="",
        help=f"also time jaxcnn's step with these conv_impls (comma-separated, of "
        f"{', '.join(conv.IMPL_CHOICES)})",
    )
    add("--steps_per_dispatch", type=int, default=0, help="as the config field (0 = auto)")
    add(
        "--compare_steps_per_dispatch",
        default="",
        help="also time jaxcnn's step with these steps_per_dispatch (comma-separated)",
    )
    add(
        "--compare_dtypes",
        default="",
        help=f"also time jaxcnn's step in these dtypes (comma-separated, of {', '.join(DTYPES)})",
    )
    add("--quick", action="store_true", help="smoke run: batch <= 8, 1 round, 1 call")
    add(
        "--peak",
        default=str(RESULTS / "peak.json"),
        help="this CPU's peak as python -m benchmarks.peak writes it (measured first when "
        "missing or from another CPU)",
    )
    add("--end_to_end", action="store_true", help="also time train_and_evaluate (ResNet-20)")
    add("--e2e_steps", type=int, default=150, help="--end_to_end: loop steps")
    add(
        "--data_dir",
        default=str(Path(__file__).parents[1] / ".." / "shared" / "datasets"),
        help="--end_to_end: TFDS data dir holding cifar10_jpeg",
    )
    add("--output", default="", help="results file; '' = one per set-up in benchmarks/results/")
    rounds.add_child_arguments(parser)
    return parser


def _check(args: argparse.Namespace) -> tuple[list[str], list[str], list[int], list[str]]:
    """(cases, conv_impls, steps_per_dispatch and dtypes to compare); raises UserError."""
    cases = args.models.split(",")
    if unknown := [c for c in cases if c not in CASES]:
        raise UserError(f"unknown case {unknown[0]!r}; valid choices: {', '.join(CASES)}")
    compare_conv_impls = [impl for impl in args.compare_conv_impls.split(",") if impl]
    for impl in [args.conv_impl, *compare_conv_impls]:
        conv.resolve_impl(impl)
    try:
        compare_steps = [int(n) for n in args.compare_steps_per_dispatch.split(",") if n]
    except ValueError:
        raise UserError("--compare_steps_per_dispatch takes integers, e.g. 1,4") from None
    for n in [args.steps_per_dispatch, *compare_steps]:
        steps_per_dispatch(n)
    compare_dtypes = [dtype for dtype in args.compare_dtypes.split(",") if dtype]
    if unknown := [dtype for dtype in compare_dtypes if dtype not in DTYPES]:
        raise unknown_choice("--compare_dtypes", unknown[0], DTYPES)
    for name in ("rounds", "windows", "steps", "devices", "processes"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be 1 or more, not {getattr(args, name)}")
    if args.method == "interleaved" and args.devices * args.processes > 1:
        raise UserError("--devices and --processes need --method processes")
    try:
        rounds.split_cores(args.processes)
    except ValueError as error:
        raise UserError(f"--processes: {error}") from None
    devices = args.devices * args.processes
    for case in cases:
        batch = args.batch or CASES[case][3]
        if (min(batch, 8) if args.quick else batch) % devices:
            raise UserError(f"{case}: batch {batch} does not divide over {devices} devices")
    return cases, compare_conv_impls, compare_steps, compare_dtypes


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.child:
        return rounds.child_main(args, measure)
    try:
        cases, compare_conv_impls, compare_steps, compare_dtypes = _check(args)
    except UserError as error:
        parser.exit(2, f"error: {error}\n")
    if args.quick:
        args.rounds, args.windows, args.steps = 1, 1, 1
    host = hardware.describe_host()
    print(f"# {host['cpu']}, {host['cores']} cores; jax {host['jax']}, torch {host['torch']}")
    if (load := os.getloadavg()[0]) > host["cores"] / 2:
        print(f"# warning: load average {load:.1f} on {host['cores']} cores: not an idle machine")
    with_torch = not args.skip_torch and host["torch"] is not None
    if not args.skip_torch and not with_torch:
        print("# torch is not installed (pip install -e '.[bench]'): PyTorch columns skipped")
    described = describe_method(args, with_torch)
    print("\n".join(described))
    print(HEADER, flush=True)
    names = ("method", "dtype", "devices", "processes", "rounds", "windows", "steps")
    setup = {name: getattr(args, name) for name in names} | {"description": described}
    report = {"host": host, "setup": setup, "results": []}
    output = Path(args.output) if args.output else None
    for case in cases:
        batch_size = args.batch or CASES[case][3]
        if args.quick:
            batch_size = min(batch_size, 8)
        specs = runner_specs(
            case,
            batch_size,
            args.dtype,
            args.conv_impl,
            args.steps_per_dispatch,
            compare_conv_impls,
            compare_steps,
            compare_dtypes,
            with_torch,
        )
        try:
            if args.method == "processes":
                results = in_processes(
                    specs, args.rounds, args.windows, args.steps, args.devices, args.processes
                )
            else:
                results = interleaved(specs, args.windows, args.steps)
            machine = results["jaxcnn"][0]["machine"]
            peak_flops, peak_source = peak_of(machine, args.dtype, Path(args.peak), args.quick)
        except rounds.ChildFailed as error:
            raise SystemExit(f"error: a measurement failed: {error}") from None
        row = summarise(case, args.method, args.dtype, batch_size, results, peak_flops)
        row["peak_source"] = peak_source
        report["results"].append(row)
        print(table_row(row), flush=True)
        output = output or default_output(machine["platform"], args)
        # Written after every case, so a long run that is stopped keeps what it measured.
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"# peak: {peak_source}")
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
