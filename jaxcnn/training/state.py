"""The train state: one plain pytree that jit, pmap and orbax all see the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, and nothing that does not.

    ``rng`` is a fixed base key: the randomness of step ``s`` is ``fold_in(rng, s)``, so a
    resumed run draws the same dropout masks as an uninterrupted one. ``ema`` holds the moving
    averages ``{"params", "batch_stats"}`` of the weights (None when the config has none).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array
    ema: Any = None

    def variables(self) -> dict[str, Any]:
        """The trained weights as model variables."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def _replace_leaves(tree: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``tree`` with the leaves that ``new`` gives (a nested dict of the same paths)."""
    out = dict(tree)
    for key, value in new.items():
        if key not in tree:
            raise KeyError(f"no parameter {key!r} to initialise from data")
        out[key] = _replace_leaves(tree[key], value) if isinstance(value, Mapping) else value
    return out


def init_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, int, int],
    seed: int,
    *,
    data_init_params: Mapping[str, Any] | None = None,
    ema: bool = False,
) -> TrainState:
    """Initialise parameters, BatchNorm statistics and optimizer state (call under jit).

    ``data_init_params`` replaces initial parameter values by ones computed from training data
    (a model's ``data_init``); with ``ema`` the averages start as copies of the weights.
    """
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(
        {"params": init_key, "dropout": init_key}, jnp.zeros((1, *image_shape)), train=False
    )
    params = variables["params"]
    if data_init_params:
        params = _replace_leaves(params, jax.tree.map(jnp.asarray, data_init_params))
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        rng=train_key,
        ema={"params": params, "batch_stats": batch_stats} if ema else None,
    )
