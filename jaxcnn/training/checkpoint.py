"""Orbax checkpoints of the train state: periodic, last-N, atomic, restorable on any devices.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoints intact and the half-written one is ignored.

The state is stored as the dict of its fields, leaving out fields that are None (``ema``
without an EMA), so adding an optional field to the state keeps older checkpoints restorable.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import orbax.checkpoint as ocp


def _fields(state: Any) -> dict[str, Any]:
    """The state's fields by name, without those that are None."""
    values = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return {k: v for k, v in values.items() if v is not None}


class Checkpointer:
    """Saves and restores the train state under ``WORKDIR/checkpoints/STEP``."""

    def __init__(self, workdir: str, *, keep: int) -> None:
        self._manager = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

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

    def close(self) -> None:
        """Wait for pending saves to finish."""
        self._manager.wait_until_finished()
        self._manager.close()
