"""Fine-tuning: a new run's initial weights taken from another run or a file (``init_from``).

``init_from`` names the source: a run's workdir (its newest checkpoint), ``WORKDIR:STEP``, or a
file of model variables — ``.msgpack`` (``flax.serialization.msgpack_serialize`` of
``{"params": ..., "batch_stats": ...}``) or ``.npz`` (one array per variable, named by its path,
``params/head/kernel``), the formats a converter of other frameworks' weights writes. From a
workdir the weights the run reports are taken: its moving average where it kept one.

Every parameter and BatchNorm statistic of the new model whose path and shape the source has
is copied; the others keep their fresh initialisation — the classifier head when the number of
classes differs, and whatever ``init_fresh`` names — and one console line lists them. The
optimizer state starts afresh. A run that has checkpoints of its own resumes from them instead
(``loop.restore_or_initialise``), so a restarted fine-tuning run never starts over.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
from flax import serialization, traverse_util

from jaxcnn.config import path_patterns
from jaxcnn.errors import UserError
from jaxcnn.training.state import TrainState
from jaxcnn.training.writers import console

FILE_SUFFIXES = (".msgpack", ".npz")
COLLECTIONS = ("params", "batch_stats")
_SHOWN = 6  # names listed in the console line before "and N more"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where initial weights come from: a run's workdir (``step`` None = its newest
    checkpoint) or a variables file."""

    path: str
    step: int | None = None

    @property
    def is_file(self) -> bool:
        return self.path.endswith(FILE_SUFFIXES)

    def describe(self) -> str:
        return f"{self.path} at step {self.step}" if self.step is not None else self.path


def parse(spec: str) -> Source | None:
    """The source that ``init_from`` names, or None for ''; ``PATH:STEP`` picks a step when
    STEP is a number (a path may itself hold colons)."""
    if not spec:
        return None
    path, colon, step = spec.rpartition(":")
    if colon and step.isdigit() and not spec.endswith(FILE_SUFFIXES):
        return Source(os.path.expanduser(path), int(step))
    return Source(os.path.expanduser(spec))


def _checkpoint_steps(workdir: str) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        return []
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def locate(spec: str) -> Source | None:
    """:func:`parse` ``spec`` and check that it names something to read, with the step filled
    in for a workdir; a one-line :class:`UserError` naming what is missing otherwise."""
    source = parse(spec)
    if source is None:
        return None
    if source.is_file:
        if not os.path.isfile(source.path):
            raise UserError(f"init_from: no file {source.path!r}")
        return source
    if not os.path.isdir(source.path):
        raise UserError(
            f"init_from: {source.path!r} is not a directory; give a run's workdir (optionally "
            f"WORKDIR:STEP) or a variables file ({', '.join(FILE_SUFFIXES)})"
        )
    steps = _checkpoint_steps(source.path)
    if not steps:
        raise UserError(f"init_from: {source.path!r} holds no checkpoint of a run")
    if source.step is None:
        return dataclasses.replace(source, step=steps[-1])
    if source.step not in steps:
        raise UserError(
            f"init_from: {source.path!r} has no checkpoint at step {source.step}; its steps: "
            + ", ".join(map(str, steps))
        )
    return source


def check_before_start(spec: str, workdir: str) -> None:
    """Refuse a missing source before ``workdir`` is created or locked, unless the run there
    has checkpoints of its own to resume from (they take precedence)."""
    if spec and not _checkpoint_steps(workdir):
        locate(spec)


def _as_variables(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``{"params", "batch_stats"}`` of a loaded tree; a bare parameter tree is ``params``."""
    if "params" not in tree:
        return {"params": dict(tree), "batch_stats": {}}
    return {name: dict(tree.get(name) or {}) for name in COLLECTIONS}


def load_variables(source: Source) -> tuple[dict[str, Any], str]:
    """(the source's ``{"params", "batch_stats"}`` as numpy arrays, a description of them)."""
    from jaxcnn.training.checkpoint import read_saved_state

    try:
        if source.path.endswith(".npz"):
            with np.load(source.path) as arrays:
                flat = {tuple(key.split("/")): arrays[key] for key in arrays.files}
            return _as_variables(traverse_util.unflatten_dict(flat)), source.describe()
        if source.path.endswith(".msgpack"):
            with open(source.path, "rb") as f:
                tree = serialization.msgpack_restore(f.read())
            return _as_variables(tree), source.describe()
        saved = read_saved_state(source.path, source.step)
    except UserError:
        raise
    except Exception as error:  # numpy, msgpack, orbax and tensorstore raise many kinds
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"
        raise UserError(f"init_from: {source.describe()} cannot be read ({reason})") from None
    if saved.get("ema") is not None:
        return _as_variables(saved["ema"]), f"{source.describe()} (its moving average)"
    return _as_variables(saved), source.describe()


@dataclasses.dataclass
class Transplant:
    """The outcome of :func:`transplant`, for the console line."""

    copied: int = 0
    fresh: list[str] = dataclasses.field(default_factory=list)  # with why, per variable
    unused: list[str] = dataclasses.field(default_factory=list)  # the source's, not taken

    @property
    def total(self) -> int:
        return self.copied + len(self.fresh)


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape)) or "scalar"


def transplant(
    fresh: Mapping[str, Any], loaded: Mapping[str, Any], init_fresh: str = ""
) -> tuple[dict[str, Any], Transplant]:
    """``fresh`` model variables (``{"params", "batch_stats"}``) with every leaf that
    ``loaded`` has at the same path and shape copied in (as the fresh leaf's dtype), except
    those whose path within its collection (``head/kernel``, as ``trainable`` and
    ``optimizer.lr_multipliers`` name parameters) a regex of ``init_fresh`` matches."""
    keep = path_patterns("init_fresh", init_fresh)
    report = Transplant()
    merged: dict[str, Any] = {}
    for collection in COLLECTIONS:
        ours = traverse_util.flatten_dict(dict(fresh.get(collection) or {}), sep="/")
        theirs = traverse_util.flatten_dict(dict(loaded.get(collection) or {}), sep="/")
        out = {}
        for name, value in ours.items():
            path = f"{collection}/{name}"
            source = theirs.get(name)
            if any(pattern.search(name) for pattern in keep):  # paths as lr_multipliers
                out[name] = value
                report.fresh.append(f"{path} (init_fresh)")
            elif source is None:
                out[name] = value
                report.fresh.append(f"{path} (not in the source)")
            elif tuple(np.shape(source)) != tuple(value.shape):
                out[name] = value
                report.fresh.append(
                    f"{path} ({_shape(value.shape)}; the source's {_shape(np.shape(source))})"
                )
            else:
                out[name] = np.asarray(source, dtype=value.dtype)
                report.copied += 1
        report.unused += [f"{collection}/{name}" for name in theirs if name not in ours]
        merged[collection] = traverse_util.unflatten_dict(out, sep="/") if out else {}
    return merged, report


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def summary(report: Transplant, description: str) -> str:
    """One console line: how much was copied from where, and what starts fresh."""
    line = f"Initialised {report.copied} of {report.total} arrays from {description}"
    if report.fresh:
        line += f"; kept fresh: {_listing(report.fresh)}"
    if report.unused:
        line += f"; not used: {_listing(report.unused)}"
    return line + "."


def initialise(state: TrainState, config: ml_collections.ConfigDict, parallel: Any) -> TrainState:
    """``state`` (freshly initialised, placed by ``parallel``) with the weights of
    ``config.init_from`` transplanted into its parameters, BatchNorm statistics and moving
    average; prints the :func:`summary` line. A source that shares nothing with the model is
    a :class:`UserError` (another model, most likely)."""
    source = locate(config.init_from)
    loaded, description = load_variables(source)
    single = parallel.for_checkpoint(state)
    merged, report = transplant(single.variables(), loaded, config.init_fresh)
    if not report.copied:
        raise UserError(
            f"init_from: {description} shares no variable (same path and shape) with "
            f"{config.model.name}; was it trained with another model?"
        )
    single = single.replace(params=merged["params"], batch_stats=merged["batch_stats"])
    if single.ema is not None:  # its own arrays: the train step donates params and ema apart
        ema, _ = transplant(single.ema, loaded, config.init_fresh)
        single = single.replace(ema=ema)
    console(summary(report, description))
    return parallel.from_checkpoint(single)
