"""A finished (or running) run read back from its workdir, for evaluation, prediction and
pictures: ``load_trained(workdir)``.

It rebuilds the run's parts from the config the run recorded (``config.json``, or the newest
``config.stepN.json`` of a restarted run), with any changes the caller makes (another split
or dataset), and restores a checkpoint into them without writing anything to the workdir.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from collections.abc import Callable
from typing import Any

import ml_collections

from jaxcnn.config import base_config
from jaxcnn.errors import UserError
from jaxcnn.training.checkpoint import Checkpointer
from jaxcnn.training.setup import Setup, build_setup
from jaxcnn.training.state import TrainState
from jaxcnn.training.writers import CONFIG_FILE


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run's parts and its state at ``step``."""

    workdir: str
    setup: Setup
    step: int
    state: TrainState

    @property
    def has_ema(self) -> bool:
        return self.state.ema is not None

    def variables(self, ema: bool = True) -> dict[str, Any]:
        """The weights to use: the moving average's where the run kept one (and ``ema``),
        else the trained weights. One copy (pmap states are not read back)."""
        return self.state.ema if ema and self.has_ema else self.state.variables()


def recorded_config(workdir: str) -> ml_collections.ConfigDict:
    """The config the run in ``workdir`` last started with; a ``UserError`` if there is none.

    It is read onto :func:`~jaxcnn.config.base_config`, so fields added to jaxcnn after the
    run was recorded have their defaults and every field keeps its type (JSON turns tuples
    into lists)."""
    paths = glob.glob(os.path.join(workdir, "config.step*.json"))
    steps = {int(m.group(1)): p for p in paths if (m := re.search(r"config\.step(\d+)\.json$", p))}
    path = steps[max(steps)] if steps else os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{workdir} holds no run: {CONFIG_FILE} not found")
    with open(path, encoding="utf-8") as f:
        recorded = json.load(f)
    config = base_config()
    config.update(recorded)
    return config


def load_trained(
    workdir: str,
    step: int | None = None,
    change: Callable[[ml_collections.ConfigDict], None] | None = None,
) -> TrainedRun:
    """The run in ``workdir`` at checkpoint ``step`` (default: the newest), its config first
    changed by ``change`` (e.g. another eval split). Bad workdirs and steps are ``UserError``s
    naming what exists, raised before the model and the dataset are built."""
    config = recorded_config(workdir)
    config.parallelism, config.shard_params = "jit", False  # one program, state in one piece
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints, create=False)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise UserError(f"{workdir} has no checkpoint yet (its run saves one at the end)")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise UserError(
                f"{workdir} has no checkpoint at step {step}; its steps: "
                + ", ".join(map(str, steps))
            )
        if change is not None:
            change(config)
        setup = build_setup(config)
        target = setup.parallel.checkpoint_target(setup.abstract_state)
        try:
            restored = checkpointer.restore(step, target)
        except Exception as error:  # orbax and tensorstore raise many kinds
            raise UserError(
                f"the checkpoint at step {step} in {workdir} cannot be read into "
                f"{config.model.name} ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[0][:160]})"
            ) from None
    finally:
        checkpointer.close()
    return TrainedRun(workdir, setup, step, setup.parallel.from_checkpoint(restored))
