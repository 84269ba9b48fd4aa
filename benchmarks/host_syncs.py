"""Count where a program waits for the device: reads of an array's value and explicit waits.

The training loop should wait for the device only when it logs (and checkpoints, evaluates):
between those, each dispatch must return at once so that the host stays ahead of the device.
``count_host_syncs(owner, name)`` counts, while active, every host sync made inside calls of
``owner.name`` (e.g. ``jaxcnn.training.loop._Run._dispatch``) and every one made elsewhere.

A host sync here is a read of a ``jax.Array``'s value, the path of ``float()``, ``int()``,
``bool()``, ``.item()``, ``.tolist()``, printing, ``jax.device_get`` and, on accelerators,
``np.asarray()`` (``ArrayImpl._value``, which a profile shows as "np.asarray(jax.Array)"); a
call of ``np.asarray``/``np.array`` on a ``jax.Array`` (on the CPU numpy reads it through the
buffer protocol, bypassing ``_value``); or a call of ``block_until_ready``. Code that binds
those functions before the block starts (``from numpy import asarray``) is not seen.

Why not ``jax.transfer_guard_device_to_host('disallow')``: it catches such reads on a GPU or
TPU, but not on the CPU, where arrays live in host memory and reading one is no transfer
(tried: ``float()`` of a device array passes it there). Counting works on every platform, so a
CPU test can check the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class HostSyncs:
    """Host syncs counted inside the watched method (on the thread that runs it) and
    elsewhere (outside it, or on other threads: an asynchronous checkpoint's writer)."""

    inside: int = 0
    elsewhere: int = 0
    _threads: threading.local = dataclasses.field(default_factory=threading.local)

    def counting(self, fn: Callable, of_arrays: bool = False) -> Callable:
        """``fn``, counted as one sync per outermost call on a thread (with ``of_arrays``: only
        when its first argument is a ``jax.Array``)."""

        def counted(*args: Any, **kwargs: Any) -> Any:
            state = self._threads
            nested = getattr(state, "syncing", False)  # jax.block_until_ready -> the method
            if nested or (of_arrays and not (args and isinstance(args[0], jax.Array))):
                return fn(*args, **kwargs)
            if getattr(state, "depth", 0):
                self.inside += 1
            else:
                self.elsewhere += 1
            state.syncing = True
            try:
                return fn(*args, **kwargs)
            finally:
                state.syncing = False

        return counted

    def watching(self, method: Callable) -> Callable:
        """``method``, inside which this thread's syncs count as ``inside``."""

        @functools.wraps(method)
        def watched(*args: Any, **kwargs: Any) -> Any:
            state = self._threads
            state.depth = getattr(state, "depth", 0) + 1
            try:
                return method(*args, **kwargs)
            finally:
                state.depth -= 1

        return watched


@contextlib.contextmanager
def count_host_syncs(owner: type, name: str) -> Iterator[HostSyncs]:
    """Count host syncs inside calls of ``owner.name`` and elsewhere while the block runs."""
    counts = HostSyncs()
    array_type = type(jnp.zeros(()))
    value = array_type._value  # the property
    patches = [
        (array_type, "_value", property(counts.counting(value.fget))),
        (array_type, "block_until_ready", counts.counting(array_type.block_until_ready)),
        (jax, "block_until_ready", counts.counting(jax.block_until_ready)),
        (np, "asarray", counts.counting(np.asarray, of_arrays=True)),
        (np, "array", counts.counting(np.array, of_arrays=True)),
        (owner, name, counts.watching(getattr(owner, name))),
    ]
    originals = [(target, attr, getattr(target, attr)) for target, attr, _ in patches]
    try:
        for target, attr, patched in patches:
            setattr(target, attr, patched)
        yield counts
    finally:
        for target, attr, original in originals:
            setattr(target, attr, original)
