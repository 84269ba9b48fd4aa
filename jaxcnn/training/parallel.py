"""Data parallelism over every device of every process: ``jit`` over a mesh, or ``pmap``.

Both strategies compile the same step functions (jaxcnn.training.step) and expose the same
small interface to the loop: place the state, shard a batch, compile the steps, and hand
single-copy state to the checkpointer.

- ``jit`` (default): one program over a 1-D ``data`` mesh of all devices (Auto axis type, so
  ordinary model code needs no sharding annotations). Batches are global arrays sharded along
  ``data``; state is replicated. Means over the batch are global, so BatchNorm statistics are
  synchronised and N devices compute the update of one device with the same global batch.
- ``pmap``: the state carries a leading axis of local devices; gradients, BatchNorm statistics
  and metrics are averaged with ``lax.pmean`` over the ``batch`` axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxcnn.errors import UserError, unknown_choice

PMAP_AXIS = "batch"


def _check_divisible(name: str, batch_size: int, devices: int) -> None:
    if batch_size % devices:
        lower = batch_size // devices * devices
        raise UserError(
            f"{name}={batch_size} does not divide across {devices} devices; use a multiple of "
            f"{devices} (e.g. {lower or devices} or {lower + devices})"
        )


def to_host(tree: Any) -> Any:
    """Fetch replicated values to numpy (works for arrays not fully addressable, too)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


class JitParallel:
    """One jit-compiled program over a ``data`` mesh of all devices."""

    axis_name: str | None = None

    def __init__(self) -> None:
        self.mesh = Mesh(np.asarray(jax.devices()), ("data",), axis_types=(AxisType.Auto,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.data = NamedSharding(self.mesh, PartitionSpec("data"))

    def check_batch_size(self, name: str, batch_size: int) -> None:
        _check_divisible(name, batch_size, jax.device_count())

    def init(self, init_fn: Callable[[], Any]) -> Any:
        return jax.jit(init_fn, out_shardings=self.replicated)()

    def shard_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {
            k: jax.make_array_from_process_local_data(self.data, v) for k, v in local_batch.items()
        }

    def compile_train(self, train_step: Callable) -> Callable:
        return jax.jit(
            train_step,
            in_shardings=(self.replicated, self.data),
            out_shardings=(self.replicated, self.replicated),
            donate_argnums=0,
        )

    def compile_eval(self, eval_step: Callable) -> Callable:
        return jax.jit(
            eval_step, in_shardings=(self.replicated, self.data), out_shardings=self.replicated
        )

    def for_checkpoint(self, state: Any) -> Any:
        return state

    def from_checkpoint(self, restored: Any) -> Any:
        return restored

    def checkpoint_target(self, abstract_state: Any) -> Any:
        """Shapes, dtypes and placement that a restored state should have."""
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated),
            abstract_state,
        )

    def metrics_to_host(self, metrics: Any) -> Any:
        return to_host(metrics)


class PmapParallel:
    """``jax.pmap`` over local devices; collectives span all processes."""

    axis_name: str | None = PMAP_AXIS

    def __init__(self) -> None:
        self.num_local = jax.local_device_count()
        mesh = Mesh(np.asarray(jax.local_devices()), (PMAP_AXIS,), axis_types=(AxisType.Auto,))
        self.stacked = NamedSharding(mesh, PartitionSpec(PMAP_AXIS))

    def check_batch_size(self, name: str, batch_size: int) -> None:
        _check_divisible(name, batch_size, jax.device_count())

    def _replicate(self, tree: Any) -> Any:
        return jax.device_put(
            jax.tree.map(
                lambda x: np.broadcast_to(np.asarray(x), (self.num_local, *x.shape)), tree
            ),
            self.stacked,
        )

    def init(self, init_fn: Callable[[], Any]) -> Any:
        return self._replicate(jax.jit(init_fn)())

    def shard_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return jax.device_put(
            {k: v.reshape(self.num_local, -1, *v.shape[1:]) for k, v in local_batch.items()},
            self.stacked,
        )

    def compile_train(self, train_step: Callable) -> Callable:
        return jax.pmap(train_step, axis_name=PMAP_AXIS, donate_argnums=0)

    def compile_eval(self, eval_step: Callable) -> Callable:
        return jax.pmap(eval_step, axis_name=PMAP_AXIS)

    def for_checkpoint(self, state: Any) -> Any:
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], state)

    def from_checkpoint(self, restored: Any) -> Any:
        return self._replicate(restored)

    def checkpoint_target(self, abstract_state: Any) -> Any:
        return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state)

    def metrics_to_host(self, metrics: Any) -> Any:
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], metrics)


STRATEGIES = {"jit": JitParallel, "pmap": PmapParallel}


def make_parallel(name: str) -> JitParallel | PmapParallel:
    """The strategy called ``name`` ('jit' or 'pmap') over all devices."""
    if name not in STRATEGIES:
        raise unknown_choice("parallelism", name, STRATEGIES)
    return STRATEGIES[name]()


def tree_add(a: Any, b: Any) -> Any:
    """Elementwise sum of two pytrees of arrays (accumulating eval sums on device)."""
    return jax.tree.map(jnp.add, a, b)
