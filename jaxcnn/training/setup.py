"""The parts of a run, built from its config before anything trains: ``build_setup(config)``.

It checks the config, then makes each part in the order they depend on each other:
parallelism (which devices, jit or pmap), the dataset's description, the model (its
convolution implementation resolved for those devices, its BatchNorm axis set for pmap), the
schedule and optimizer, and the pure train and eval step functions. The training loop, the
evaluation and prediction commands, the benchmarks and the tests all start from a ``Setup``,
so they share one wiring.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcnn import data, models
from jaxcnn.config import check_config
from jaxcnn.errors import UserError, unknown_choice
from jaxcnn.models.conv import resolve_impl
from jaxcnn.training.optim import check_names, count_trainable, make_optimizer, make_schedule
from jaxcnn.training.parallel import JitParallel, PmapParallel, make_parallel
from jaxcnn.training.state import TrainState, init_train_state
from jaxcnn.training.step import (
    check_tta,
    ema_decay_schedule,
    make_eval_step,
    make_train_step,
    steps_per_dispatch,
)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def build_model(
    config: ml_collections.ConfigDict,
    num_classes: int,
    parallel: JitParallel | PmapParallel | None = None,
    conv_impl: str = "auto",
) -> nn.Module:
    """The model of ``config.model`` (name, dtype, other constructor fields) for the devices of
    ``parallel`` (default: one jit program over all devices): under jit its oneDNN
    convolutions run on each device's shard of the batch, under pmap BatchNorm averages its
    statistics over the mapped axis."""
    if config.dtype not in DTYPES:
        raise unknown_choice("model.dtype", config.dtype, DTYPES)
    fields = {k: v for k, v in config.items() if k not in ("name", "dtype")}
    parallel = parallel or JitParallel()
    return models.create(
        config.name,
        num_classes,
        dtype=DTYPES[config.dtype],
        conv_impl=resolve_impl(conv_impl),
        norm_axis_name=parallel.axis_name,
        mesh=parallel.mesh if isinstance(parallel, JitParallel) else None,
        **fields,
    )


def training_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> tuple[int, int]:
    """(steps per epoch, total training steps) for the global batch size."""
    steps_per_epoch = max(1, num_train_examples // config.batch_size)
    if config.num_train_steps > 0:
        return steps_per_epoch, config.num_train_steps
    return steps_per_epoch, max(1, math.ceil(config.num_epochs * steps_per_epoch))


def eval_splits(dataset: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """One dataset config per split of ``dataset.eval_split`` (comma-separated; '' = the
    preset's), in order: the first is the one results.json reports."""
    configs = []
    for split in dataset.eval_split.split(",") if dataset.eval_split else [""]:
        config = ml_collections.ConfigDict(dataset.to_dict())
        config.eval_split = split.strip()
        configs.append(config)
    return configs


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run is made of, before any state exists."""

    config: ml_collections.ConfigDict
    parallel: JitParallel | PmapParallel
    eval_datasets: list[ml_collections.ConfigDict]  # the first is the reported one
    info: data.DatasetInfo
    model: nn.Module
    steps_per_epoch: int
    total_steps: int
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    steps_per_dispatch: int  # at most, between reports

    @property
    def dataset(self) -> ml_collections.ConfigDict:
        """The dataset config of the train split (and of the reported eval split)."""
        return self.eval_datasets[0]

    @property
    def use_ema(self) -> bool:
        return self.config.ema.decay > 0

    def every_steps(self, name: str) -> int:
        """The interval ``name`` (``eval``, ``checkpoint``) in steps: ``{name}_every_epochs``
        converted when it is set, else ``{name}_every_steps``; 0 = off."""
        epochs = self.config[f"{name}_every_epochs"]
        if epochs:
            return max(1, int(round(epochs * self.steps_per_epoch)))
        return self.config[f"{name}_every_steps"]

    @functools.cached_property
    def abstract_state(self) -> TrainState:
        """Shapes and dtypes of one copy of the train state, without computing it."""
        return jax.eval_shape(self.init_fn())

    @property
    def num_params(self) -> int:
        return sum(x.size for x in jax.tree.leaves(self.abstract_state.params))

    @property
    def state_bytes(self) -> int:
        """Size of one copy of the train state (what a checkpoint holds)."""
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.abstract_state))

    def init_fn(
        self, data_init_params: Mapping[str, Any] | None = None
    ) -> Callable[[], TrainState]:
        """A function (to run under ``parallel.init`` or ``jax.eval_shape``) that makes the
        initial train state, with ``data_init_params`` fitted to training data if given."""
        return functools.partial(
            init_train_state,
            self.model,
            self.tx,
            self.info.image_shape,
            self.config.seed,
            data_init_params=data_init_params,
            ema=self.use_ema,
        )

    def train_step(self) -> Callable:
        """The pure train step ``(state, batch) -> (state, metrics)`` the config describes."""
        config = self.config
        return make_train_step(
            self.model,
            self.tx,
            self.schedule,
            label_smoothing=config.label_smoothing,
            aux_loss_weight=config.aux_loss_weight,
            axis_name=self.parallel.axis_name,
            accum_steps=config.optimizer.accum_steps,
            ema_decay_at=(
                ema_decay_schedule(config.ema.decay, config.ema.warmup, self.total_steps)
                if self.use_ema
                else None
            ),
            ema_every=config.ema.every_steps,
            ema_lookahead=config.ema.lookahead,
        )

    def eval_step(self, confusion: bool = False) -> Callable:
        """The pure eval step ``(variables, batch) -> metric sums`` (with the config's TTA; with
        ``confusion``, the confusion matrix too)."""
        return make_eval_step(
            self.model,
            axis_name=self.parallel.axis_name,
            tta=self.config.eval_tta,
            confusion=confusion,
        )


def build_setup(config: ml_collections.ConfigDict, info: data.DatasetInfo | None = None) -> Setup:
    """Check ``config`` and build its parts; ``info`` describes generated data instead of
    opening ``config.dataset`` (benchmarks, tests). Cheap checks (names, sizes) come before
    the dataset is opened, so a typo fails in a second."""
    check_config(config)
    parallel = make_parallel(config.parallelism, shard_params=config.shard_params)
    check_names(config)
    models.get_entry(config.model.name)
    conv_impl = resolve_impl(config.conv_impl)  # builds its kernel now
    parallel.check_batch_size("batch_size", config.batch_size)
    parallel.check_batch_size("eval_batch_size", config.eval_batch_size)
    per_dispatch = steps_per_dispatch(config.steps_per_dispatch)
    ema_decay_schedule(config.ema.decay, config.ema.warmup, 1)  # checks the warm-up's name
    check_tta(config.eval_tta)
    per_device = config.batch_size // parallel.num_devices
    if per_device % config.optimizer.accum_steps:
        raise UserError(
            f"optimizer.accum_steps={config.optimizer.accum_steps} does not divide each "
            f"device's batch of {per_device}; use a batch_size that does"
        )
    eval_datasets = eval_splits(config.dataset)
    info = info or data.dataset_info(eval_datasets[0])
    model = build_model(config.model, info.num_classes, parallel, conv_impl)
    steps_per_epoch, total_steps = training_steps(config, info.num_train_examples)
    schedule = make_schedule(
        config.schedule,
        peak=config.optimizer.learning_rate,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )
    setup = Setup(
        config=config,
        parallel=parallel,
        eval_datasets=eval_datasets,
        info=info,
        model=model,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        schedule=schedule,
        tx=make_optimizer(config, schedule, steps_per_epoch),
        steps_per_dispatch=per_dispatch,
    )
    if config.trainable:  # a pattern that matches no parameter fails now, not after training
        count_trainable(setup.abstract_state.params, config.trainable)
    return setup
