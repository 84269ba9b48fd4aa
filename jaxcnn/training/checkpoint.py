"""Orbax checkpoints of the train state: periodic, last-N, atomic, restorable on any devices.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoints intact and the half-written one is ignored.

The state is stored as the dict of its fields, leaving out fields that are None (``ema``
without an EMA), so adding an optional field to the state keeps older checkpoints restorable.

A checkpoint that cannot be read (truncated or garbage files, missing metadata, an emptied
folder) is moved to ``WORKDIR/damaged_checkpoints/STEP``, never deleted, and the next newest one
is used; an intact checkpoint of another model or optimizer is a one-line error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcnn.errors import UserError

DAMAGED_DIR = "damaged_checkpoints"


def _fields(state: Any) -> dict[str, Any]:
    """The state's fields by name, without those that are None."""
    values = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return {k: v for k, v in values.items() if v is not None}


def read_saved_state(workdir: str, step: int) -> dict[str, Any]:
    """The fields of the train state saved at ``step`` in ``workdir``, as numpy arrays in the
    shapes stored, whatever model, optimizer and devices wrote them: another run's weights
    for ``init_from``. Nothing there is created or changed."""
    manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(create=False),
    )
    try:
        stored = dict(manager.item_metadata(step))
        target = jax.tree.map(lambda array: np.zeros(array.shape, array.dtype), stored)
        return manager.restore(step, args=ocp.args.StandardRestore(target))
    finally:
        manager.close()


class Checkpointer:
    """Saves and restores the train state under ``WORKDIR/checkpoints/STEP``."""

    def __init__(self, workdir: str, *, keep: int, create: bool = True) -> None:
        """``create=False`` reads an existing run (evaluation, prediction) without creating
        ``checkpoints/``."""
        self._workdir = os.path.abspath(workdir)
        self._directory = os.path.join(self._workdir, "checkpoints")
        self._keep, self._create = keep, create
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=self._create),
        )

    def restore_latest(
        self, target: Any, report: Callable[[str], None] = print
    ) -> tuple[int, Any | None]:
        """(step, state) of the newest checkpoint that restores like ``target``, or (0, None)
        when there is none. Damaged checkpoints on the way are set aside (see the module
        docstring) and ``report``-ed in one line each."""
        while (step := self.latest_step()) is not None:
            try:
                return step, self.restore(step, target)
            except Exception as error:  # orbax and tensorstore raise many kinds
                first_failure = error
            try:
                self.restore(step, None)
            except Exception as error:
                reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"
                where = self._set_aside(step)
                report(f"Checkpoint at step {step} is damaged ({reason}); moved to {where}.")
                continue
            raise UserError(
                f"the checkpoint at step {step} in {self._directory} does not match the config "
                f"(another model, optimizer or EMA setting: {type(first_failure).__name__}); "
                "use a new --workdir, or move its checkpoints/ away to start over"
            ) from None
        return 0, None

    def _set_aside(self, step: int) -> str:
        """Move the folder of ``step`` to ``WORKDIR/damaged_checkpoints/`` and reopen."""
        self._manager.close()
        damaged = os.path.join(self._workdir, DAMAGED_DIR)
        os.makedirs(damaged, exist_ok=True)
        where, n = os.path.join(damaged, str(step)), 1
        while os.path.exists(where):
            where, n = os.path.join(damaged, f"{step}.{n}"), n + 1
        os.rename(os.path.join(self._directory, str(step)), where)
        self._manager = self._open()
        return where

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Start saving ``state`` (asynchronously); a no-op if ``step`` is already saved."""
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(_fields(state)))

    def restore(self, step: int, target: Any) -> Any:
        """The state saved at ``step``, laid out like ``target`` (a state of arrays or shape
        structs); with ``target`` None, the dict of saved fields as stored."""
        if target is None:  # as saved: a dict of the state's fields
            return self._manager.restore(step, args=ocp.args.StandardRestore())
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(_fields(target)))
        return target.replace(**restored)

    def reached_preemption(self, step: int) -> bool:
        """Whether JAX's multi-host preemption notice asks every process to save at ``step``."""
        return self._manager.reached_preemption(step)

    def wait(self) -> None:
        """Wait for pending saves to finish."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves to finish and release the manager (once)."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None
