"""Dense matmul peak of this machine's CPU: the best GFLOP/s of numpy, XLA and PyTorch.

    python -m benchmarks.peak            # float32 and bfloat16; n = 1024, 2048, 4096
    python -m benchmarks.peak --quick    # n = 128: a smoke run

Each library and dtype runs in its own process (``benchmarks/rounds.py`` says why) with its
default threads on all usable cores: an n×n by n×n product into a preallocated result (2n³
FLOPs), a warm-up call, then ``--repeats`` timed calls per size, the fastest kept. Sizes stop
growing once a call takes over 5 s. The peak of a dtype is the best over libraries and
sizes. numpy has no bfloat16 product (ml_dtypes' runs in a loop), so bfloat16 is XLA's and
PyTorch's, on whatever the CPU offers (oneDNN uses AVX-512 BF16 or AMX where present). It is
always the host CPU, also where JAX would pick an accelerator. ``benchmarks.train_step``
divides its model FLOP/s by it ("% of peak"). Output: ``benchmarks/results/peak.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import rounds
from jaxcnn import hardware

LIBRARIES = ("numpy", "xla", "torch")
DTYPES = ("float32", "bfloat16")
DEFAULT_SIZES = [1024, 2048, 4096]
SLOW_CALL_SECS = 5.0
RESULTS = Path(__file__).parent / "results" / "peak.json"


def matmul(library: str, dtype: str, size: int) -> Callable[[], None] | str:
    """One ``size``² matmul of ``library`` in ``dtype`` that returns when it is done, or why
    there is none. XLA runs on JAX's default device."""
    if library == "numpy":
        if dtype != "float32":
            return "numpy has no bfloat16 matmul"
        import numpy as np

        a, b = np.random.default_rng(0).standard_normal((2, size, size), dtype=np.float32)
        out = np.empty_like(a)
        return lambda: np.matmul(a, b, out=out)
    if library == "xla":
        import jax
        import jax.numpy as jnp

        a, b = jax.random.normal(jax.random.key(0), (2, size, size), jnp.dtype(dtype))
        product = jax.jit(lambda a, b, out: a @ b, donate_argnums=2)  # reuses out's buffer
        held = [jnp.zeros_like(a)]

        def call() -> None:
            held[0] = product(a, b, held[0])
            held[0].block_until_ready()

        return call
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    a, b = torch.randn(2, size, size, dtype=getattr(torch, dtype))
    out = torch.empty_like(a)
    return lambda: torch.mm(a, b, out=out)


def best_gflops(call: Callable[[], None], size: int, repeats: int) -> tuple[float, float]:
    """(GFLOP/s of the fastest of ``repeats`` timed calls after a warm-up, slowest call's s)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if times[-1] > SLOW_CALL_SECS:
            break
    return 2 * size**3 / min(times) / 1e9, max(times)


def measure(spec: dict) -> dict:
    """Child: the best GFLOP/s of ``spec['library']`` in ``spec['dtype']`` at each size."""
    library, dtype = spec["library"], spec["dtype"]
    result: dict = {"library": library, "dtype": dtype, "gflops_by_size": {}}
    for size in spec["sizes"]:
        call = matmul(library, dtype, size)
        if isinstance(call, str):
            return {**result, "skipped": call}
        gflops, slowest = best_gflops(call, size, spec["repeats"])
        result["gflops_by_size"][str(size)] = gflops
        if slowest > SLOW_CALL_SECS:
            break
    return result


def measure_all(libraries: list[str], sizes: list[int], repeats: int, quick: bool) -> dict:
    """Every library and dtype, each in its own CPU-only process; the peak of each dtype."""
    results = []
    for dtype in DTYPES:
        for library in libraries:
            spec = {"library": library, "dtype": dtype, "sizes": sizes, "repeats": repeats}
            results.append(rounds.run_child("benchmarks.peak", spec, env={"JAX_PLATFORMS": "cpu"}))
    peak = {}
    for r in results:
        for size, gflops in r["gflops_by_size"].items():
            if gflops > peak.get(r["dtype"], {}).get("gflops", 0):
                peak[r["dtype"]] = {"gflops": gflops, "library": r["library"], "size": int(size)}
    host = hardware.describe_host()
    return {"host": host, "quick": quick, "repeats": repeats, "results": results, "peak": peak}


def host_peak(path: Path, quick: bool) -> tuple[dict, str]:
    """(``peak`` of the report at ``path``, where it came from) if that report was measured on
    this host (same CPU model and usable cores; for a full run, not by ``--quick``); else
    measured now with every library and written to ``path``."""
    host = hardware.describe_host()
    try:
        report = json.loads(path.read_text())
        same = all(report["host"][key] == host[key] for key in ("cpu", "cores"))
        if same and (quick or not report["quick"]):
            return report["peak"], f"{path}"
    except (OSError, ValueError, KeyError):
        pass
    sizes, repeats = ([128], 2) if quick else (DEFAULT_SIZES, 3)
    report = measure_all(list(LIBRARIES), sizes, repeats, quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report["peak"], f"measured now, written to {path}"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="matrix n")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size")
    parser.add_argument("--quick", action="store_true", help="smoke run: n = 128, 2 repeats")
    parser.add_argument("--output", default=str(RESULTS), help="results file")
    rounds.add_child_arguments(parser)
    args = parser.parse_args()
    if args.child:
        return rounds.child_main(args, measure)
    libraries = [name for name in args.libraries.split(",") if name]
    if unknown := [name for name in libraries if name not in LIBRARIES]:
        parser.exit(2, f"error: unknown library {unknown[0]!r}; valid choices: numpy, xla, torch\n")
    try:
        sizes = [int(n) for n in args.sizes.split(",")]
        if min(sizes) < 1 or args.repeats < 1:
            raise ValueError
    except ValueError:
        parser.exit(
            2, "error: --sizes takes positive integers (e.g. 1024,2048) and --repeats >= 1\n"
        )
    if args.quick:
        sizes, args.repeats = [128], 2
    report = measure_all(libraries, sizes, args.repeats, args.quick)
    host = report["host"]
    print(f"# {host['cpu']}, {host['cores']} cores; GFLOP/s of an n×n matmul, best over n")
    print("| dtype | " + " | ".join(libraries) + " | peak |")
    print("|---|" + "---:|" * (len(libraries) + 1))
    for dtype in DTYPES:
        cells = []
        for r in (r for r in report["results"] if r["dtype"] == dtype):
            by_size = r["gflops_by_size"]
            cells.append(f"{max(by_size.values()):,.1f}" if by_size else "–")
        best = report["peak"].get(dtype)
        peak = f"**{best['gflops']:,.1f}** ({best['library']}, n={best['size']})" if best else "–"
        print(f"| {dtype} | " + " | ".join(cells) + f" | {peak} |")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"# written to {output}")


if __name__ == "__main__":
    main()
