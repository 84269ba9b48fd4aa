"""Size and cost of registered models without running them: parameter counts, forward FLOPs
and a per-layer table, all from abstract tracing (``jax.eval_shape``, ``jax.make_jaxpr``), so
nothing is allocated or compiled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models.registry import create, get_entry


def _input(input_shape: tuple[int, int, int], batch: int = 1) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)


def abstract_variables(model: nn.Module, input_shape: tuple[int, int, int]) -> Any:
    """The shapes and dtypes of ``model``'s variables for ``input_shape`` (nothing allocated)."""
    return jax.eval_shape(model.init, jax.random.key(0), _input(input_shape))


def count_params(variables: Any) -> int:
    """Number of parameters (the ``'params'`` collection; BatchNorm statistics excluded)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables.get("params", {})))


def _subjaxprs(params: dict[str, Any]) -> list[Any]:
    """The jaxprs nested in an equation's parameters (jit, custom_jvp, ... bodies)."""
    found = []
    for value in params.values():
        for item in value if isinstance(value, list | tuple) else (value,):
            if hasattr(item, "eqns"):
                found.append(item)
            elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                found.append(item.jaxpr)
    return found


def jaxpr_flops(jaxpr: Any) -> int:
    """FLOPs of the convolutions and matrix products in ``jaxpr``, 2 per multiply-add.

    Element-wise work (activations, normalisation, pooling, softmax) is not counted; it is a
    small fraction of these models' cost.
    """
    flops = 0
    for eqn in jaxpr.eqns:
        out = eqn.outvars[0].aval.shape
        if eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            flops += 2 * math.prod(out) * math.prod(kernel) // out_features
        elif eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            flops += 2 * math.prod(out) * math.prod(lhs[d] for d in contracting)
        flops += sum(jaxpr_flops(sub) for sub in _subjaxprs(eqn.params))
    return flops


def model_stats(name: str) -> dict[str, Any]:
    """Family, default input shape, parameter count and forward FLOPs (batch 1) of ``name``.

    One abstract trace of ``init_with_output`` gives both: its outputs are the variables'
    shapes, and the forward pass inside it is counted by :func:`jaxpr_flops`. It is traced with
    XLA's convolutions (``conv_impl='xla'``): the count is of the model's arithmetic, whichever
    implementation runs it.
    """
    entry = get_entry(name)
    model = create(name, conv_impl="xla")
    trace = jax.make_jaxpr(model.init_with_output, return_shape=True)
    closed, (_, variables) = trace(jax.random.key(0), _input(entry.input_shape))
    return {
        "name": name,
        "family": entry.family,
        "input_shape": list(entry.input_shape),
        "params": count_params(variables),
        "flops": jaxpr_flops(closed.jaxpr),
    }


def _fingerprint() -> str:
    """Changes whenever the model code or the JAX/Flax versions do."""
    digest = hashlib.sha256(f"{jax.__version__} {flax.__version__}".encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_model_stats(name: str, cache_file: Path | None = None) -> dict[str, Any]:
    """:func:`model_stats`, remembered in a JSON file until the model code changes.

    The file defaults to ``$XDG_CACHE_HOME/jaxcnn/model_stats.json`` (``~/.cache/...``).
    """
    if cache_file is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache_file = root / "jaxcnn" / "model_stats.json"
    fingerprint = _fingerprint()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache.get("fingerprint") != fingerprint:
        cache = {"fingerprint": fingerprint, "models": {}}
    if name not in cache["models"]:
        cache["models"][name] = model_stats(name)
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cache, indent=1))
        except OSError:
            pass  # a read-only home only costs the recomputation next time
    return cache["models"][name]


def layer_table(name: str) -> list[tuple[str, tuple[int, ...], int]]:
    """(module path, output shape, parameters including submodules) for every module of
    model ``name`` at its default input, in call order; the first row is the whole model."""
    entry = get_entry(name)
    model = create(name, conv_impl="xla")
    variables = abstract_variables(model, entry.input_shape)
    calls: list[list[Any]] = []  # [path, output shape], appended when the call starts

    def record(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        row = [context.module.path, None]
        calls.append(row)
        out = next_fun(*args, **kwargs)
        row[1] = jax.tree.leaves(out)[0].shape
        return out

    def forward(v: Any, x: jnp.ndarray) -> jnp.ndarray:
        with nn.intercept_methods(record):
            return model.apply(v, x)

    jax.eval_shape(forward, variables, _input(entry.input_shape))
    rows = []
    for path, shape in calls:
        params = variables.get("params", {})
        for key in path:
            params = params.get(key, {})
        rows.append(("/".join(path) or name, shape, count_params({"params": params})))
    return rows
