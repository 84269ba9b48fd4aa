"""Optimizers and learning-rate schedules from the config."""

from __future__ import annotations

import jax
import ml_collections
import optax

from jaxcnn.errors import UserError, unknown_choice

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant", "step")


def make_schedule(
    config: ml_collections.ConfigDict, *, peak: float, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """Linear warm-up to ``peak``, then cosine decay, a constant, or steps at given epochs."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup >= total_steps:
        raise UserError(
            f"schedule.warmup_epochs={config.warmup_epochs} covers all {total_steps} training "
            "steps; shorten the warm-up or train longer"
        )
    if config.name == "cosine":
        main = optax.cosine_decay_schedule(peak, total_steps - warmup, alpha=config.end_factor)
    elif config.name == "constant":
        main = optax.constant_schedule(peak)
    elif config.name == "step":
        boundaries = {
            int(round(epoch * steps_per_epoch)) - warmup: config.step_factor
            for epoch in config.step_epochs
        }
        main = optax.piecewise_constant_schedule(peak, boundaries)
    else:
        raise unknown_choice("schedule.name", config.name, SCHEDULES)
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def check_names(config: ml_collections.ConfigDict) -> None:
    """Raise for an unknown optimizer or schedule name: checked before any data is opened, so
    a misspelt name gets its answer at once."""
    if config.optimizer.name not in OPTIMIZERS:
        raise unknown_choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    if config.schedule.name not in SCHEDULES:
        raise unknown_choice("schedule.name", config.schedule.name, SCHEDULES)


def _kernels_only(params):
    """Weight-decay mask: kernels and embeddings, not biases or normalisation parameters."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """The optimizer of ``config.optimizer`` driven by ``schedule``."""
    opt = config.optimizer
    chain = []
    if opt.grad_clip_norm:
        chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.name == "sgd":
        if opt.weight_decay:
            chain.append(optax.add_decayed_weights(opt.weight_decay, mask=_kernels_only))
        chain.append(optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
    elif opt.name == "adamw":
        chain.append(
            optax.adamw(
                schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=_kernels_only
            )
        )
    else:
        raise unknown_choice("optimizer.name", opt.name, OPTIMIZERS)
    return optax.chain(*chain)
