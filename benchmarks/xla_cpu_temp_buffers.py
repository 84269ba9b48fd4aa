"""XLA:CPU allocates a compiled call's temporary buffer afresh on every call: a reproduction.

    python -m benchmarks.xla_cpu_temp_buffers                       # 256 MiB, 8 iterations
    python -m benchmarks.xla_cpu_temp_buffers --mib 1 --iterations 2 --repeats 1  # smoke run

``body(x, c)`` writes a temporary as large as ``x`` (``x * c``, the operand of a
matrix-vector product, which XLA does not fuse into the product) and reduces the product to
the next scalar ``c``. The same
``iterations`` run two ways, each timed as the best of ``--repeats``: ``jit(body)`` called
once per iteration, and one call of a ``jit`` whose ``lax.fori_loop`` runs ``body``
``iterations`` times. It prints, for each, milliseconds and minor page faults (``getrusage``)
per iteration, and the ratio of the times. Standalone (JAX and numpy only), to paste into an
upstream issue; BENCHMARKS.md ("XLA:CPU's per-call temporary buffers") explains it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


def body(x: jax.Array, c: jax.Array) -> jax.Array:
    """One iteration: a temporary the size of ``x``, reduced to the next carry (about 1)."""
    temporary = (x * c).reshape(-1, 256)
    return jnp.mean(temporary @ jnp.full(256, 1 / 256, x.dtype)) * 1e-3 + 1.0


def one_call_per_iteration(x: jax.Array, iterations: int) -> Callable[[], jax.Array]:
    step = jax.jit(body)

    def run() -> jax.Array:
        c = jnp.float32(1.0)
        for _ in range(iterations):
            c = step(x, c)
        return c.block_until_ready()

    return run


def all_iterations_in_one_call(x: jax.Array, iterations: int) -> Callable[[], jax.Array]:
    loop = jax.jit(lambda x, c: jax.lax.fori_loop(0, iterations, lambda _, c: body(x, c), c))
    return lambda: loop(x, jnp.float32(1.0)).block_until_ready()


def best_of(run: Callable[[], jax.Array], repeats: int) -> tuple[float, int]:
    """(seconds, minor page faults) of the fastest of ``repeats`` runs after a warm-up."""
    run()
    best = (float("inf"), 0)
    for _ in range(repeats):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        best = min(best, (seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.xla_cpu_temp_buffers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--mib", type=int, default=256, help="size of the temporary")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; best kept")
    args = parser.parse_args()
    if min(args.mib, args.iterations, args.repeats) < 1:
        parser.exit(2, "error: --mib, --iterations and --repeats must be 1 or more\n")
    x = jnp.ones(args.mib * 2**20 // 4, jnp.float32)
    glibc = " ".join(os.confstr("CS_GNU_LIBC_VERSION").split()[1:]) or "?"
    print(
        f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, {jax.devices()[0].platform}, "
        f"{platform.machine()}, glibc {glibc}, {len(os.sched_getaffinity(0))} cores"
    )
    temp = jax.jit(body).lower(x, jnp.float32(1.0)).compile().memory_analysis().temp_size_in_bytes
    print(
        f"x: {args.mib} MiB; temporary buffer of one call: {temp / 2**20:,.1f} MiB; "
        f"{args.iterations} iterations, best of {args.repeats}:"
    )
    times = {}
    for name, make in (
        ("one call per iteration", one_call_per_iteration),
        ("all in one call (fori_loop)", all_iterations_in_one_call),
    ):
        seconds, faults = best_of(make(x, args.iterations), args.repeats)
        times[name] = seconds
        print(
            f"  {name:28} {seconds / args.iterations * 1e3:9.2f} ms/iteration "
            f"{faults / args.iterations:12,.0f} minor page faults/iteration"
        )
    ratio = times["one call per iteration"] / times["all in one call (fori_loop)"]
    print(f"one call per iteration takes {ratio:.2f}× the time of all in one call")


if __name__ == "__main__":
    main()
