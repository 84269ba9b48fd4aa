"""Find models by name: ``create('resnet20', num_classes=10)``, ``list_models()``.

Every registered model is a Flax Linen module with the same constructor contract:
``num_classes``, ``dtype`` (computation), ``param_dtype`` (parameters) and ``layers`` (how its
convolutions and BatchNorms compute, ``layers.Layers``), plus family-specific fields; its
``__call__(x, train=False)`` takes NHWC images and returns logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxcnn.errors import UserError, unknown_choice
from jaxcnn.models.conv import resolve_impl
from jaxcnn.models.layers import Layers


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """How to build one named model and the input it was designed for."""

    name: str
    module: type[nn.Module]
    family: str
    input_shape: tuple[int, int, int]  # default (height, width, channels)
    num_classes: int  # default head size (the reference implementation's)
    defaults: dict[str, Any]  # constructor fields fixed by this variant


_MODELS: dict[str, ModelEntry] = {}


def register(
    name: str,
    module: type[nn.Module],
    *,
    family: str,
    input_shape: tuple[int, int, int],
    num_classes: int = 1000,
    **defaults: Any,
) -> None:
    """Register ``module`` under ``name`` with variant fields ``defaults``."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = ModelEntry(name, module, family, input_shape, num_classes, defaults)


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally only those of one family."""
    return sorted(n for n, s in _MODELS.items() if family is None or s.family == family)


def get_entry(name: str) -> ModelEntry:
    """The registration of ``name``; a :class:`UserError` naming the choices if unknown."""
    try:
        return _MODELS[name]
    except KeyError:
        raise unknown_choice("model", name, _MODELS) from None


def create(
    name: str,
    num_classes: int | None = None,
    *,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    conv_impl: str = "auto",
    norm_axis_name: str | None = None,
    mesh: Mesh | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
      name: a name from :func:`list_models`.
      num_classes: size of the classifier head; the reference head size if None.
      dtype: computation dtype (e.g. ``jnp.bfloat16`` for mixed precision).
      param_dtype: parameter dtype (keep float32 for training).
      conv_impl: how its convolutions compute (``conv.IMPL_CHOICES``); ``"auto"`` picks the
        fastest for this process's platform (``conv.resolve_impl``).
      norm_axis_name: the ``pmap`` axis BatchNorm averages its statistics over (None: none).
      mesh: the ``jit`` program's mesh, over all of whose axes the batch is split, for oneDNN
        to convolve each device's shard (``Layers.mesh``; None: whole batches).
      **overrides: other constructor fields of the module (e.g. ``dropout_rate``).
    """
    entry = get_entry(name)
    fields = {f.name for f in dataclasses.fields(entry.module) if f.init} - {"parent", "name"}
    unknown = set(overrides) - fields
    if unknown:
        raise UserError(
            f"model {name!r} has no field {sorted(unknown)[0]!r}; valid fields: "
            + ", ".join(sorted(fields - {"num_classes", "dtype", "param_dtype", "layers"}))
        )
    kwargs = {**entry.defaults, **overrides}
    if "layers" in fields:
        kwargs["layers"] = Layers(resolve_impl(conv_impl), norm_axis_name, mesh=mesh)
    return entry.module(
        num_classes=entry.num_classes if num_classes is None else num_classes,
        dtype=dtype,
        param_dtype=param_dtype,
        **kwargs,
    )
