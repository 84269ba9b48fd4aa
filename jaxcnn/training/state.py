"""The train state: one plain pytree that jit, pmap and orbax all see the same way."""

from __future__ import annotations

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
    resumed run draws the same dropout masks as an uninterrupted one.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array


def init_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, int, int],
    seed: int,
) -> TrainState:
    """Initialise parameters, BatchNorm statistics and optimizer state (call under jit)."""
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(
        {"params": init_key, "dropout": init_key}, jnp.zeros((1, *image_shape)), train=False
    )
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=train_key,
    )
