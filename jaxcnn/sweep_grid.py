"""Declaring a sweep: the points an experiment file's ``get_sweep()`` returns.

An experiment file declares its sweep next to its config::

    from jaxcnn import sweep_grid

    def get_sweep():
        return sweep_grid.product(
            sweep_grid.axis("optimizer.learning_rate", [0.1, 0.05]),
            sweep_grid.axis("batch_size", [64, 128]),
        )

A sweep is a list of *points*; a point is a dict of overrides (dotted config field → value).
``python -m jaxcnn.sweep`` trains every point (:mod:`jaxcnn.sweep_runner` does the work) in
its own sub-workdir, named here by :func:`point_name`.

Pure functions over plain values: experiment files import this module, so importing it must
not load JAX or TensorFlow or touch the environment (tested).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxcnn.errors import UserError

Overrides = dict[str, Any]

_MAX_NAME_LENGTH = 120


def axis(key: str, values: Iterable[Any]) -> list[Overrides]:
    """One hyper-parameter taking each of ``values``: ``[{key: v} for v in values]``."""
    return [{key: value} for value in values]


def _merge(parts: Sequence[Mapping[str, Any]]) -> Overrides:
    merged: Overrides = {}
    for part in parts:
        for key, value in part.items():
            if key in merged:
                raise UserError(f"sweep sets {key!r} twice in one point")
            merged[key] = value
    return merged


def product(*sweeps: Sequence[Overrides]) -> list[Overrides]:
    """Every combination of one point from each sweep (the last one varies fastest)."""
    return [_merge(parts) for parts in itertools.product(*sweeps)]


def zipped(*sweeps: Sequence[Overrides]) -> list[Overrides]:
    """The i-th points of all sweeps together; the sweeps must have the same length."""
    lengths = {len(sweep) for sweep in sweeps}
    if len(lengths) > 1:
        raise UserError(f"zipped sweeps differ in length: {sorted(lengths)}")
    return [_merge(parts) for parts in zip(*sweeps, strict=True)]


def format_value(value: Any) -> str:
    """``value`` as a ``--config.FIELD=`` argument that parses back to it."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # config fields hold tuples
        value = tuple(value)
    return repr(value)


def point_name(overrides: Mapping[str, Any]) -> str:
    """A directory name for a point: ``key=value`` pairs joined by commas, made file-safe."""
    if not overrides:
        return "base"
    text = ",".join(f"{key}={format_value(value)}" for key, value in overrides.items())
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("_.")
    if len(name) > _MAX_NAME_LENGTH:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_NAME_LENGTH - 9]}-{digest}"
    return name
