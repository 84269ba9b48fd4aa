"""Data parallelism over every device of every process: ``jit`` over a mesh, or ``pmap``.

Both strategies compile the same step functions (jaxcnn.training.step) and expose the same
small interface to the loop: place the state, shard a batch, stack batches for several steps
per call, compile the steps, and hand single-copy state to the checkpointer.

- ``jit`` (default): one program over a 1-D ``data`` mesh of all devices (Auto axis type, so
  ordinary model code needs no sharding annotations). Batches are global arrays sharded along
  ``data``; state is replicated, or split over ``data`` with ``shard_params`` (FSDP). Means
  over the batch are global, so BatchNorm statistics are synchronised and N devices compute
  the update of one device with the same global batch.
- ``pmap``: the state carries a leading axis of local devices; gradients, BatchNorm statistics
  and metrics are averaged with ``lax.pmean`` over the ``batch`` axis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxcnn.errors import UserError, unknown_choice
from jaxcnn.training.state import TrainState

DATA_AXIS = "data"
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


def _stack(*trees: Any, axis: int) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves, axis), *trees)


def _fsdp_spec(shape: tuple[int, ...], num_shards: int) -> PartitionSpec:
    """Split the largest dimension that divides evenly over ``num_shards``; else replicate."""
    divisible = [(size, axis) for axis, size in enumerate(shape) if size % num_shards == 0]
    if not divisible:
        return PartitionSpec()
    _, axis = max(divisible)
    return PartitionSpec(*(DATA_AXIS if i == axis else None for i in range(len(shape))))


class JitParallel:
    """One jit-compiled program over a ``data`` mesh of ``devices`` (default: all of them).

    With ``shard_params`` every parameter and optimizer-state array is split along its largest
    dimension that divides over the devices (FSDP / ZeRO-3 style): each device keeps 1/N of the
    state and the compiler gathers the parameters where a layer needs them. The update is the
    same as with replicated state; only memory and communication differ.
    """

    axis_name: str | None = None

    def __init__(
        self, devices: Sequence[jax.Device] | None = None, *, shard_params: bool = False
    ) -> None:
        devices = jax.devices() if devices is None else devices
        self.mesh = Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))
        self.shard_params = shard_params
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.data = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        steps_data = NamedSharding(self.mesh, PartitionSpec(None, DATA_AXIS))
        self._stack = jax.jit(functools.partial(_stack, axis=0), out_shardings=steps_data)

    @property
    def num_devices(self) -> int:
        """Devices one step runs on (in all processes)."""
        return self.mesh.size

    def check_batch_size(self, name: str, batch_size: int) -> None:
        _check_divisible(name, batch_size, self.mesh.size)

    def state_sharding(self, state: TrainState) -> TrainState:
        """Where each array of ``state`` (arrays or shape structs) lives on the mesh."""
        shardings = jax.tree.map(lambda _: self.replicated, state)
        if not self.shard_params:
            return shardings

        def split(tree: Any) -> Any:
            return jax.tree.map(
                lambda x: NamedSharding(self.mesh, _fsdp_spec(x.shape, self.mesh.size)), tree
            )

        return shardings.replace(
            params=split(state.params), opt_state=split(state.opt_state), ema=split(state.ema)
        )

    def init(self, init_fn: Callable[[], TrainState]) -> TrainState:
        return jax.jit(init_fn, out_shardings=self.state_sharding(jax.eval_shape(init_fn)))()

    def shard_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {
            k: jax.make_array_from_process_local_data(self.data, v) for k, v in local_batch.items()
        }

    def stack_batches(self, batches: Sequence[dict[str, jax.Array]]) -> dict[str, jax.Array]:
        """Sharded batches stacked along a new leading axis of steps (for ``scan_steps``)."""
        return self._stack(*batches)

    def compile_train(self, train_step: Callable) -> Callable:
        def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, Any]:
            new_state, metrics = train_step(state, batch)
            # The input state arrives laid out by state_sharding; keep the output the same.
            new_state = jax.lax.with_sharding_constraint(new_state, self.state_sharding(new_state))
            return new_state, metrics

        return jax.jit(step, donate_argnums=0)

    def compile_eval(self, eval_step: Callable) -> Callable:
        return jax.jit(eval_step, out_shardings=self.replicated)

    def for_checkpoint(self, state: TrainState) -> TrainState:
        return state

    def from_checkpoint(self, restored: TrainState) -> TrainState:
        """Lay out a single-copy state (host arrays, or arrays restored already in place)."""
        return jax.device_put(restored, self.state_sharding(restored))

    def checkpoint_target(self, abstract_state: TrainState) -> TrainState:
        """Shapes, dtypes and placement that a restored state should have."""
        return jax.tree.map(
            lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
            abstract_state,
            self.state_sharding(abstract_state),
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
        self._stack = jax.jit(functools.partial(_stack, axis=1), out_shardings=self.stacked)

    @property
    def num_devices(self) -> int:
        """Devices one step runs on (in all processes)."""
        return jax.device_count()

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

    def stack_batches(self, batches: Sequence[dict[str, jax.Array]]) -> dict[str, jax.Array]:
        """Batches stacked along a new axis of steps after the device axis."""
        return self._stack(*batches)

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


def make_parallel(name: str, *, shard_params: bool = False) -> JitParallel | PmapParallel:
    """The strategy called ``name`` ('jit' or 'pmap') over all devices."""
    if name not in STRATEGIES:
        raise unknown_choice("parallelism", name, STRATEGIES)
    if name == "jit":
        return JitParallel(shard_params=shard_params)
    if shard_params:
        raise UserError("shard_params=True needs parallelism='jit' (pmap replicates the state)")
    return PmapParallel()


def tree_add(a: Any, b: Any) -> Any:
    """Elementwise sum of two pytrees of arrays (accumulating eval sums on device)."""
    return jax.tree.map(jnp.add, a, b)
