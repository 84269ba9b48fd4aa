"""Periodic actions of the training loop: when they are due, and the profiler's trace window.

Logging, evaluation and checkpointing each run every N steps (0 = off, ``Every``); the loop
dispatches several steps per call up to the next step at which any of them, or the profiler,
has something to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import jax

from jaxcnn.errors import UserError
from jaxcnn.training.writers import console


@dataclasses.dataclass(frozen=True)
class Every:
    """A periodic action's schedule: every ``steps`` steps; 0 = never."""

    steps: int

    def due(self, step: int) -> bool:
        return self.steps > 0 and step % self.steps == 0

    def next_after(self, step: int) -> int | None:
        """The first step after ``step`` at which it is due, or None if never."""
        return (step // self.steps + 1) * self.steps if self.steps > 0 else None


class Profiler:
    """A ``jax.profiler`` trace of the steps ``START:STOP`` (``profile_steps``; '' = none)
    under ``WORKDIR/profile``, each dispatch annotated with its first step."""

    def __init__(self, steps: str, workdir: str) -> None:
        self.start = self.stop = 0
        self.active = False
        self.path = os.path.join(workdir, "profile")
        if steps:
            start, _, stop = steps.partition(":")
            try:
                self.start, self.stop = int(start), int(stop)
            except ValueError:
                self.stop = -1
            if not 0 <= self.start < self.stop:
                raise UserError(f"profile_steps={steps!r} is not START:STOP with 0 <= START < STOP")

    def next_after(self, step: int) -> int | None:
        """The next step after ``step`` at which the trace starts or stops."""
        return next((s for s in (self.start, self.stop) if self.stop and s > step), None)

    def before(self, step: int) -> None:
        if self.stop and step == self.start:
            jax.profiler.start_trace(self.path)
            self.active = True

    def annotate(self, step: int) -> Any:
        """A step annotation while tracing; nothing on the other steps."""
        if not self.active:
            return contextlib.nullcontext()
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def after(self, step: int, state: Any) -> None:
        if self.active and step >= self.stop:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            console(f"Profile of steps {self.start}:{self.stop} written to {self.path}.")

    def close(self) -> None:
        """End a trace still running (the run stopped inside the window)."""
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
