"""Convolutions computed by oneDNN inside XLA:CPU programs, through an XLA FFI custom call.

XLA:CPU's own convolution kernels run at a third to a half of the speed of oneDNN, the library
behind PyTorch's CPU convolutions (BENCHMARKS.md). The jaxlib wheels ship without oneDNN, so
jaxcnn brings it: the ``onednn-cpu-gomp`` wheel (a dependency on Linux x86-64) provides the
library, and ``onednn_conv.cc`` is a small XLA FFI handler around its forward, input-gradient
and kernel-gradient convolution primitives.

:func:`load` builds the handler with the system's C++ compiler (a few seconds, once per machine:
the library is cached in ``$JAXCNN_KERNEL_DIR`` or ``~/.cache/jaxcnn/kernels``, keyed by its
source, jaxlib and oneDNN), loads it and registers it with XLA, or says why it cannot (no oneDNN
wheel, no compiler, a build error). It runs at a known moment: when a model is built with
oneDNN convolutions (``conv_impl``), i.e. at a training run's start-up, or explicitly with
``python -m jaxcnn.kernels``; never while a function is being traced. :func:`conv` is an
NHWC/HWIO convolution (any strides, padding, kernel dilation and feature groups) whose gradients
are oneDNN's too, in float32 or bfloat16. oneDNN accumulates bfloat16 products in float32 and
rounds each result to bfloat16 once: the kernel gradient, a sum over the batch, comes out
bit-identical to its float32 sum rounded to bfloat16 (measured), so asking oneDNN for a float32
one would only add traffic (flax casts the float32 master kernel to bfloat16 before the
convolution, and XLA keeps that cast's bfloat16 round trip on the way back). :func:`unsupported`
says whether a dtype runs at full speed here: bfloat16 needs the CPU's bfloat16 instructions
(AVX512-BF16 or AMX), without which oneDNN emulates them or takes its slow reference kernels.

XLA cannot partition a custom call over devices: in a ``jit`` program whose batch is sharded it
would gather each convolution's operands onto every device. So :func:`conv`, given the program's
mesh, maps the call over the devices with ``shard_map``: each device convolves its own shard of
the batch with the whole kernel, and the kernel gradients of the shards are summed over the
mesh. (``jax.experimental.custom_partitioning`` would find the sharding itself, but it writes
a per-process pointer into the program, so the persistent compilation cache would miss every
multi-device program.) Under ``pmap`` each device's program already holds its own shard.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

TARGET = "jaxcnn_onednn_conv"
SOURCE = Path(__file__).with_name("onednn_conv.cc")
_FORWARD, _INPUT_GRAD, _KERNEL_GRAD = 0, 1, 2
DTYPES = (jnp.float32, jnp.bfloat16)
# oneDNN's ISA values are bit masks (dnnl_types.h): an ISA includes another when it has all
# of the other's bits. AVX512-BF16 is the first with bfloat16 dot products; AMX includes it.
_ISA_AVX512_CORE_BF16 = 0xE7


class BuildError(RuntimeError):
    """The oneDNN custom call cannot be built or loaded on this machine."""


def kernel_dir() -> Path:
    """Where compiled custom-call libraries are cached."""
    return Path(os.environ.get("JAXCNN_KERNEL_DIR") or "~/.cache/jaxcnn/kernels").expanduser()


def _installed_file(distribution: str, suffix: str) -> Path:
    try:
        files = importlib.metadata.distribution(distribution).files or ()
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(f"the {distribution} package is not installed") from None
    for file in files:
        if str(file).endswith(suffix):
            return Path(file.locate()).resolve()
    raise BuildError(f"the {distribution} package has no {suffix}")


def _build() -> Path:
    """Compile the custom call against the installed oneDNN (once per source and versions),
    saying so in one line when it compiles."""
    library = _installed_file("onednn-cpu-gomp", "/libdnnl.so.3")
    header = _installed_file("onednn-devel-cpu-gomp", "/oneapi/dnnl/dnnl.hpp")
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        raise BuildError("no C++ compiler (set CXX, or install g++)")
    includes = [str(header.parents[2]), jax.ffi.include_dir()]
    fingerprint = "\n".join(
        [
            SOURCE.read_text(),
            jax.__version__,
            importlib.metadata.version("jaxlib"),
            str(library),
            compiler,
            *includes,
        ]
    )
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    target = kernel_dir() / f"jaxcnn_onednn_conv-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        print(
            f"Building the oneDNN convolution kernel (once per machine) into {target}.", flush=True
        )
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        command = [
            compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
            *(f"-I{path}" for path in includes), str(SOURCE), "-o", str(built),
            str(library), f"-Wl,-rpath,{library.parent}",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            raise BuildError(f"compiling {SOURCE.name} failed: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: concurrent builders each publish a whole file
    return target


@functools.cache
def _library() -> ctypes.CDLL:
    """The custom call's library, built where not cached, loaded and registered with XLA."""
    library = ctypes.cdll.LoadLibrary(str(_build()))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.JaxcnnOnednnConv), "cpu")
    return library


@functools.cache
def load() -> str | None:
    """Build (where not cached), load and register the custom call, once per process; returns
    why oneDNN convolutions cannot run here, or None when they can."""
    try:
        _library()
    except (BuildError, OSError) as error:
        return str(error)
    return None


@functools.cache
def unsupported(dtype: jnp.dtype) -> str | None:
    """Why oneDNN cannot run convolutions of ``dtype`` at full speed here, or None when it can:
    float32 wherever :func:`load` succeeds, bfloat16 where the CPU has bfloat16 instructions as
    oneDNN sees them (``ONEDNN_MAX_CPU_ISA`` can hide them)."""
    if reason := load():
        return reason
    if dtype not in DTYPES:
        return f"oneDNN convolutions take float32 or bfloat16, not {jnp.dtype(dtype).name}"
    isa = _library().dnnl_get_effective_cpu_isa()  # libdnnl's C API, through the kernel's link
    if dtype == jnp.bfloat16 and isa & _ISA_AVX512_CORE_BF16 != _ISA_AVX512_CORE_BF16:
        return "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX) for oneDNN to use"
    return None


def _call(kind: int, a: jax.Array, b: jax.Array, out_shape: Sequence[int], geometry) -> jax.Array:
    """One oneDNN primitive on ``a`` and ``b``; its result has their dtype."""
    result = jax.ShapeDtypeStruct(tuple(out_shape), a.dtype)
    call = jax.ffi.ffi_call(TARGET, result, vmap_method="sequential")
    # XLA:CPU may run the programs of all local devices at once, each calling oneDNN on its own
    # thread: the handler shares the cores among them (onednn_conv.cc).
    local_devices = np.int64(jax.local_device_count())
    return call(a, b, kind=np.int64(kind), local_devices=local_devices, **geometry)


def _per_shard(
    mesh: Mesh, kind: int, a: jax.Array, b: jax.Array, out_shape: Sequence[int], geometry
) -> jax.Array:
    """:func:`_call` on each device's shard of the batch, which ``mesh`` splits over all its
    axes (``shard_map``); the kernel gradient of a shard is a partial sum, summed over them."""
    batch = PartitionSpec(mesh.axis_names)
    if kind == _KERNEL_GRAD:  # (x, dy) -> dw

        def body(a: jax.Array, b: jax.Array) -> jax.Array:
            partial = _call(kind, a, b, out_shape, geometry)  # summed in float32 over the mesh
            total = jax.lax.psum(partial.astype(jnp.float32), mesh.axis_names)
            return total.astype(partial.dtype)

        in_specs, out_specs = (batch, batch), PartitionSpec()
    else:  # (x, w) -> y or (dy, w) -> dx
        shard_shape = (out_shape[0] // mesh.size, *out_shape[1:])

        def body(a: jax.Array, b: jax.Array) -> jax.Array:
            return _call(kind, a, b, shard_shape, geometry)

        in_specs, out_specs = (batch, PartitionSpec()), batch
    # The custom call's result does not say that it varies over the mesh: no check of that.
    mapped = jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    return mapped(a, b)


def conv(
    x: jax.Array,
    kernel: jax.Array,
    out_size: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Convolution of NHWC ``x`` with HWIO ``kernel`` by oneDNN, forward and backward, both
    float32 or both bfloat16 (a ``TypeError`` otherwise).

    ``out_size`` is the output's spatial size (XLA's shape rule gives it), ``padding`` the
    explicit, non-negative (low, high) padding of the two spatial axes, ``groups`` the feature
    group count. ``mesh``: the ``jit`` program's mesh, over all of whose axes the batch is
    split; each device then convolves its own shard (a batch that does not divide over the
    mesh, e.g. at initialisation, is convolved whole, on operands XLA gathers). :func:`load`
    must have succeeded: this only emits the call.
    """
    if x.dtype != kernel.dtype or x.dtype not in DTYPES:
        raise TypeError(
            f"oneDNN convolutions take float32 or bfloat16 operands of one dtype, not "
            f"{x.dtype.name} and {kernel.dtype.name}"
        )
    geometry = dict(
        strides=np.asarray(strides, np.int64),
        pad_lo=np.asarray([lo for lo, _ in padding], np.int64),
        pad_hi=np.asarray([hi for _, hi in padding], np.int64),
        dilation=np.asarray(dilation, np.int64),
        groups=np.int64(groups),
    )
    out_shape = (x.shape[0], *out_size, kernel.shape[3])
    sharded = mesh is not None and mesh.size > 1 and x.shape[0] % mesh.size == 0
    call = functools.partial(_per_shard, mesh) if sharded else _call

    @jax.custom_vjp
    def onednn_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
        return call(_FORWARD, x, kernel, out_shape, geometry)

    def forward(x: jax.Array, kernel: jax.Array):
        return onednn_conv(x, kernel), (x, kernel)

    def backward(residuals: tuple[jax.Array, jax.Array], dy: jax.Array):
        x, kernel = residuals
        dx = call(_INPUT_GRAD, dy, kernel, x.shape, geometry)
        dkernel = call(_KERNEL_GRAD, x, dy, kernel.shape, geometry)
        return dx, dkernel

    onednn_conv.defvjp(forward, backward)
    return onednn_conv(x, kernel)
