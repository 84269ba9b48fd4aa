"""Where a convolution's training time goes: forward, input gradient and filter gradient.

    python -m benchmarks.conv_layers            # the 3×3 layers of ResNet-20 and ResNet-18
    python -m benchmarks.conv_layers --quick    # batch 8, one repeat, three layers

For each layer shape it times, in milliseconds (median of repeats, after a warm-up), XLA's
forward convolution, XLA's input gradient, XLA's own filter gradient and jaxcnn's per-tap
matmul filter gradient (``jaxcnn/models/conv.py``), the forward and forward + backward of
jaxcnn's oneDNN custom call (``jaxcnn/kernels/onednn.py``, where it is available) and, with
PyTorch installed, PyTorch's forward and forward + backward of the same layer (channels-last).
This is the measurement behind ``conv_impl``; BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn import hardware
from jaxcnn.kernels import onednn
from jaxcnn.models import conv

# (batch, height = width, in channels, out channels, stride): ResNet-20's and ResNet-18's
# (CIFAR stem) 3×3 convolutions at batch 128, and a strided one.
LAYERS = [
    (128, 32, 16, 16, 1),
    (128, 16, 32, 32, 1),
    (128, 8, 64, 64, 1),
    (128, 32, 64, 64, 1),
    (128, 16, 128, 128, 1),
    (128, 8, 256, 256, 1),
    (128, 4, 512, 512, 1),
    (128, 32, 64, 128, 2),
]
NHWC = ("NHWC", "HWIO", "NHWC")
RESULTS = Path(__file__).parent / "results"


def median_ms(run: Callable[[], object], repeats: int) -> float:
    jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def jax_times(batch: int, size: int, cin: int, cout: int, stride: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)
    strides, padding = (stride, stride), ((1, 1), (1, 1))

    def forward(x, w):
        return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)

    forward = jax.jit(forward)
    dy = jnp.ones_like(forward(x, w))
    input_grad = jax.jit(lambda x, w: jax.vjp(lambda x: forward(x, w), x)[1](dy)[0])
    xla_filter_grad = jax.jit(lambda x, w: jax.vjp(lambda w: forward(x, w), w)[1](dy)[0])
    gemm_filter_grad = jax.jit(
        lambda x, w: conv.gemm_filter_grad(x, dy, w.shape, strides, padding, (1, 1))
    )
    np.testing.assert_allclose(gemm_filter_grad(x, w), xla_filter_grad(x, w), rtol=2e-3, atol=0.5)
    times = {
        "forward_ms": median_ms(lambda: forward(x, w), repeats),
        "input_grad_ms": median_ms(lambda: input_grad(x, w), repeats),
        "xla_filter_grad_ms": median_ms(lambda: xla_filter_grad(x, w), repeats),
        "gemm_filter_grad_ms": median_ms(lambda: gemm_filter_grad(x, w), repeats),
    }
    if onednn.load() is None:
        out_size = dy.shape[1:3]
        onednn_forward = jax.jit(
            lambda x, w: onednn.conv(x, w, out_size, strides, padding, (1, 1), groups=1)
        )
        # Forward and both gradients, like PyTorch's forward + backward below.
        onednn_grads = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn_forward(x, w)), (0, 1)))
        np.testing.assert_allclose(onednn_forward(x, w), forward(x, w), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(
            onednn_grads(x, w)[1], xla_filter_grad(x, w), rtol=2e-3, atol=0.5
        )
        times["onednn_forward_ms"] = median_ms(lambda: onednn_forward(x, w), repeats)
        times["onednn_forward_backward_ms"] = median_ms(lambda: onednn_grads(x, w), repeats)
    return times


def torch_times(batch: int, size: int, cin: int, cout: int, stride: int, repeats: int) -> dict:
    import torch

    torch.manual_seed(0)
    channels_last = torch.channels_last
    x = torch.randn(batch, cin, size, size).to(memory_format=channels_last).requires_grad_()
    w = torch.randn(cout, cin, 3, 3).to(memory_format=channels_last).requires_grad_()

    def forward():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w, stride=stride, padding=1)

    def forward_backward():
        torch.nn.functional.conv2d(x, w, stride=stride, padding=1).sum().backward()

    return {
        "torch_forward_ms": median_ms(forward, repeats),
        "torch_forward_backward_ms": median_ms(forward_backward, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.conv_layers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip_torch", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: batch 8, one repeat, three layers"
    )
    parser.add_argument("--output", default="", help="results file; '' = benchmarks/results/")
    args = parser.parse_args()
    info = hardware.describe_machine()
    with_torch = not args.skip_torch and info["torch"] is not None
    print(f"# {info['cpu']}, {info['cores']} cores; jax {info['jax']}, torch {info['torch']}")
    print(
        "| layer (batch, size, in→out, stride) | forward | input grad | XLA filter grad "
        "| gemm filter grad | fwd+bwd, XLA grad | fwd+bwd, gemm grad "
        "| oneDNN forward | oneDNN fwd+bwd | PyTorch forward | PyTorch fwd+bwd |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    output = Path(args.output or RESULTS / f"conv_layers_{jax.devices()[0].platform}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    results = []
    repeats = 1 if args.quick else args.repeats
    layers = LAYERS[:2] + LAYERS[-1:] if args.quick else LAYERS
    for batch, size, cin, cout, stride in layers:
        batch = 8 if args.quick else batch
        shape = (batch, size, cin, cout, stride)
        row = {"layer": shape, **jax_times(*shape, repeats)}
        if with_torch:
            row.update(torch_times(*shape, repeats))
        results.append(row)
        common = row["forward_ms"] + row["input_grad_ms"]
        onednn_cells = (
            f"{row['onednn_forward_ms']:.1f} | {row['onednn_forward_backward_ms']:.1f} |"
            if "onednn_forward_ms" in row
            else "– | – |"
        )
        torch_cells = (
            f"{row['torch_forward_ms']:.1f} | {row['torch_forward_backward_ms']:.1f} |"
            if with_torch
            else "– | – |"
        )
        print(
            f"| {batch}, {size}×{size}, {cin}→{cout}, {stride} | {row['forward_ms']:.1f} | "
            f"{row['input_grad_ms']:.1f} | {row['xla_filter_grad_ms']:.1f} | "
            f"{row['gemm_filter_grad_ms']:.1f} | {common + row['xla_filter_grad_ms']:.1f} | "
            f"{common + row['gemm_filter_grad_ms']:.1f} | " + onednn_cells + " " + torch_cells,
            flush=True,
        )
        output.write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
    print(f"# written to {output}")


if __name__ == "__main__":
    main()
