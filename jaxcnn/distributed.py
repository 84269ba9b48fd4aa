"""Joining a multi-process run: ``jax.distributed.initialize`` from flags or the environment.

One JAX process runs per host (or per GPU); together they see every device of the job. Each
setting comes from its ``train`` flag, else from the environment variable ``JAXCNN_<SETTING>``
(``JAXCNN_COORDINATOR_ADDRESS``, ``JAXCNN_NUM_PROCESSES``, ...), so launchers can pass either.

- ``coordinator_address`` given: join the run that process 0 coordinates there, as
  ``process_id`` of ``num_processes`` (JAX fills in those two from SLURM or Open MPI if unset).
- ``distributed='on'``: let JAX detect everything (Cloud TPU pod slices, SLURM, Open MPI).
- ``distributed='auto'`` (default): like 'on' inside an ``srun`` or ``mpirun`` of several
  tasks; otherwise one process on its own.
- ``distributed='off'``: one process on its own, whatever the environment says.

JAX's coordination service watches every process: when one dies, the others stop with an
error after ``heartbeat_timeout_seconds`` (JAX's default: 100) instead of waiting forever in a
collective. On CPUs the processes exchange data with gloo over TCP.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Callable

import jax
from absl import flags

from jaxcnn.errors import UserError, unknown_choice

ENV_PREFIX = "JAXCNN_"
MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How this process joins a run; ``None`` leaves a setting to ``JAXCNN_<NAME>`` or JAX."""

    distributed: str | None = None
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout_seconds: int | None = None
    initialization_timeout_seconds: int | None = None


_INTEGER_SETTINGS = frozenset(
    name for name, hint in typing.get_type_hints(Settings).items() if int in typing.get_args(hint)
)
_HELP = {
    "distributed": "auto: join a multi-process run if flags, JAXCNN_* variables or an srun/mpirun "
    "of several tasks say so; on: also let JAX detect Cloud TPU pods; off: one process.",
    "coordinator_address": "HOST:PORT of process 0, where it coordinates a multi-process run.",
    "num_processes": "Number of processes in the run.",
    "process_id": "This process's index, 0 to num_processes-1.",
    "heartbeat_timeout_seconds": "Stop with an error when another process has been silent this "
    "long (JAX's default: 100).",
    "initialization_timeout_seconds": "Stop with an error when the other processes have not "
    "all joined within this time (JAX's default: 300).",
}


def define_flags() -> Callable[[], Settings]:
    """Define ``--distributed``, ``--coordinator_address``, ... on the command line.

    Returns a function that reads the parsed flags as :class:`Settings`.
    """
    holders = {}
    for field in dataclasses.fields(Settings):
        define = flags.DEFINE_integer if field.name in _INTEGER_SETTINGS else flags.DEFINE_string
        holders[field.name] = define(field.name, None, _HELP[field.name])
    return lambda: Settings(**{name: holder.value for name, holder in holders.items()})


def _from_env(name: str) -> int | str | None:
    variable = ENV_PREFIX + name.upper()
    value = os.environ.get(variable, "")
    if not value or name not in _INTEGER_SETTINGS:
        return value or None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{variable}={value!r} is not an integer") from None


def resolve(settings: Settings) -> Settings:
    """``settings`` with each unset field taken from its environment variable, if set."""
    values = {
        field.name: value
        if (value := getattr(settings, field.name)) is not None
        else _from_env(field.name)
        for field in dataclasses.fields(Settings)
    }
    resolved = Settings(**values)
    if resolved.distributed is not None and resolved.distributed not in MODES:
        raise unknown_choice("distributed mode", resolved.distributed, MODES)
    return resolved


def _started_as_one_of_several_tasks() -> bool:
    """Whether ``srun`` (SLURM) or ``mpirun`` (Open MPI) started several copies of this."""
    return any(
        int(os.environ.get(variable, "1")) > 1
        for variable in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE")
    )


def _or_detected(value: object) -> str:
    return "(detected)" if value is None else str(value)


def initialize_from_flags_or_env(settings: Settings = Settings()) -> bool:
    """Join the other processes of a multi-process run, if this is one; returns whether it is.

    Call it before anything touches JAX devices.
    """
    settings = resolve(settings)
    mode = settings.distributed or "auto"
    if mode == "off":
        return False
    if settings.coordinator_address is None:
        if settings.num_processes is not None or settings.process_id is not None:
            raise UserError(
                "num_processes and process_id need coordinator_address (HOST:PORT of process 0)"
            )
        if mode == "auto" and not _started_as_one_of_several_tasks():
            return False
    timeouts = {
        "heartbeat_timeout_seconds": settings.heartbeat_timeout_seconds,
        "initialization_timeout": settings.initialization_timeout_seconds,
    }
    # Processes on CPUs (tests, CPU clusters) run their collectives over TCP with gloo.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX aborts with a terse message if the coordinator cannot be reached; say what we tried.
    print(
        f"Joining a multi-process run as process {_or_detected(settings.process_id)} of "
        f"{_or_detected(settings.num_processes)}, coordinated at "
        f"{_or_detected(settings.coordinator_address)}.",
        file=sys.stderr,
        flush=True,
    )
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator_address,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
            **{name: value for name, value in timeouts.items() if value is not None},
        )
    except ValueError as error:  # neither the settings nor a detected cluster say enough
        raise UserError(
            f"cannot join a multi-process run ({error}); pass --coordinator_address, "
            "--num_processes and --process_id (or JAXCNN_* variables), or --distributed=off"
        ) from None
    return True
