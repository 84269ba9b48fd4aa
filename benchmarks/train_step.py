"""Train-step speed: jaxcnn's compiled step against the same model and batch in PyTorch.

    python -m benchmarks.train_step                       # resnet20, resnet18_cifar
    python -m benchmarks.train_step --models resnet50,vit_s16,efficientnet_b0 --windows 3

For each case it prints the compile time of the first jaxcnn step, the steady-state images/s
of the jaxcnn train step (median of timed windows after warm-up, each ended by
``block_until_ready``), the same for PyTorch (CPU build, channels-last, SGD with momentum), the
ratio, and the FLOPs of one step from XLA's cost analysis. jaxcnn and PyTorch windows alternate,
so a shared, noisy machine slows both alike. Generated data only: no TensorFlow. Results go to
``benchmarks/results/train_step_<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxcnn import models
from jaxcnn.training.optim import make_optimizer
from jaxcnn.training.parallel import make_parallel
from jaxcnn.training.state import init_train_state
from jaxcnn.training.step import make_train_step

# name: (registered model, constructor fields, image shape, default batch on CPU)
CASES = {
    "resnet20": ("resnet20", {}, (32, 32, 3), 128),
    "resnet18_cifar": ("resnet18", {"small_images": True}, (32, 32, 3), 128),
    "resnet50": ("resnet50", {}, (224, 224, 3), 8),
    "vit_s16": ("vit_s16", {}, (224, 224, 3), 8),
    "efficientnet_b0": ("efficientnet_b0", {}, (224, 224, 3), 8),
}
NUM_CLASSES = 10
RESULTS = Path(__file__).parent / "results"


def _sgd_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.optimizer = ml_collections.ConfigDict(
        dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=0.0, grad_clip_norm=0.0)
    )
    return config


def jaxcnn_step(case: str, batch_size: int) -> tuple[Callable[[], None], float, float, int]:
    """(run one step and wait, compile seconds, FLOPs per step, parameters) of jaxcnn's step."""
    name, fields, image_shape, _ = CASES[case]
    model = models.create(name, NUM_CLASSES, **fields)
    schedule = lambda step: 0.1  # noqa: E731
    tx = make_optimizer(_sgd_config(), schedule)
    parallel = make_parallel("jit")
    state = parallel.init(lambda: init_train_state(model, tx, image_shape, 0))
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch(
        {
            "image": rng.normal(size=(batch_size, *image_shape)).astype(np.float32),
            "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
        }
    )
    step = parallel.compile_train(make_train_step(model, tx, schedule))
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_secs = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    holder = {"state": state}

    def run() -> None:
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics)

    return run, compile_secs, flops, num_params


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


def images_per_sec(run: Callable[[], None], batch_size: int, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return steps * batch_size / (time.perf_counter() - start)


def benchmark(case: str, batch_size: int, windows: int, steps: int) -> dict:
    run_jax, compile_secs, flops, jax_params = jaxcnn_step(case, batch_size)
    twin = torch_step(case, batch_size)
    run_jax()  # warm-up
    jax_rates, torch_rates = [], []
    if twin:
        run_torch, torch_params = twin
        if torch_params != jax_params:
            raise SystemExit(
                f"{case}: PyTorch twin has {torch_params:,} parameters, jaxcnn {jax_params:,}"
            )
        run_torch()
    for _ in range(windows):
        jax_rates.append(images_per_sec(run_jax, batch_size, steps))
        if twin:
            torch_rates.append(images_per_sec(run_torch, batch_size, steps))
    result = {
        "case": case,
        "batch_size": batch_size,
        "parameters": jax_params,
        "compile_secs": compile_secs,
        "flops_per_step": flops,
        "jaxcnn_images_per_sec": statistics.median(jax_rates),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if twin:
        result["torch_images_per_sec"] = statistics.median(torch_rates)
        result["ratio_jaxcnn_to_torch"] = (
            result["jaxcnn_images_per_sec"] / result["torch_images_per_sec"]
        )
    return result


def machine() -> dict:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [x for x in cpuinfo.read_text().splitlines() if x.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="resnet20,resnet18_cifar", help=f"of {', '.join(CASES)}"
    )
    parser.add_argument("--batch", type=int, default=0, help="0 = each case's default")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per framework")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed window")
    parser.add_argument("--output", default="", help="results file; '' = benchmarks/results/")
    args = parser.parse_args()
    cases = args.models.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.exit(2, f"error: unknown case {unknown[0]!r}; valid choices: {', '.join(CASES)}\n")

    info = machine()
    print(f"# {info['cpu']}, {info['cores']} cores; jax {info['jax']}, torch {info['torch']}")
    print(
        "| case | batch | params | compile s | GFLOP/step | jaxcnn img/s | PyTorch img/s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    output = Path(args.output or RESULTS / f"train_step_{jax.devices()[0].platform}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for case in cases:
        r = benchmark(case, args.batch or CASES[case][3], args.windows, args.steps)
        results.append(r)
        torch_rate = r.get("torch_images_per_sec")
        print(
            f"| {case} | {r['batch_size']} | {r['parameters']:,} | {r['compile_secs']:.1f} | "
            f"{r['flops_per_step'] / 1e9:.2f} | {r['jaxcnn_images_per_sec']:,.0f} | "
            + (
                f"{torch_rate:,.0f} | {r['ratio_jaxcnn_to_torch']:.2f} |"
                if torch_rate
                else "– | – |"
            ),
            flush=True,
        )
        # Written after every case, so a long run that is stopped keeps what it measured.
        output.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    print(f"# written to {output}")


if __name__ == "__main__":
    main()
