"""Optimizers and learning-rate schedules from the config."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcnn.config import path_patterns
from jaxcnn.errors import UserError, unknown_choice

OPTIMIZERS = ("sgd", "adamw", "rmsprop", "lars", "lamb")
SCHEDULES = ("cosine", "linear", "polynomial", "exponential", "constant", "step")


def make_schedule(
    config: ml_collections.ConfigDict, *, peak: float, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """Linear warm-up to ``peak`` (from ``warmup_init_factor * peak``), then cosine, linear or
    polynomial decay to ``end_factor * peak``, exponential decay by ``decay_factor`` every
    ``decay_every_epochs`` (staircase, as TensorFlow's EfficientNet), a constant, or steps at
    given epochs."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup >= total_steps:
        raise UserError(
            f"schedule.warmup_epochs={config.warmup_epochs} covers all {total_steps} training "
            "steps; shorten the warm-up or train longer"
        )
    end = config.end_factor * peak
    if config.name == "cosine":
        main = optax.cosine_decay_schedule(peak, total_steps - warmup, alpha=config.end_factor)
    elif config.name == "linear":
        main = optax.linear_schedule(peak, end, total_steps - warmup)
    elif config.name == "polynomial":
        main = optax.polynomial_schedule(peak, end, config.power, total_steps - warmup)
    elif config.name == "exponential":
        every = config.decay_every_epochs * steps_per_epoch
        if every <= 0 or not 0 < config.decay_factor <= 1:
            raise UserError(
                "schedule.name='exponential' needs decay_every_epochs > 0 and decay_factor in "
                f"(0, 1], not {config.decay_every_epochs} and {config.decay_factor}"
            )
        main = optax.exponential_decay(peak, every, config.decay_factor, staircase=True)
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
    start = config.warmup_init_factor * peak
    return optax.join_schedules([optax.linear_schedule(start, peak, warmup), main], [warmup])


def check_names(config: ml_collections.ConfigDict) -> None:
    """Raise for an unknown optimizer or schedule name or malformed multipliers: checked before
    any data is opened, so a misspelt name gets its answer at once."""
    if config.optimizer.name not in OPTIMIZERS:
        raise unknown_choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
    if config.schedule.name not in SCHEDULES:
        raise unknown_choice("schedule.name", config.schedule.name, SCHEDULES)
    parse_lr_multipliers(config.optimizer.lr_multipliers)


def _kernels_only(params):
    """Weight-decay mask: kernels and embeddings, not biases or normalisation parameters."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def parse_lr_multipliers(text: str) -> list[tuple[re.Pattern, float]]:
    """``"REGEX=FACTOR,REGEX=FACTOR"`` → [(pattern, factor)], in the order given."""
    rules = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        pattern, _, factor = item.rpartition("=")
        try:
            rules.append((re.compile(pattern), float(factor)))
        except (re.error, ValueError):
            pattern = ""
        if not pattern:
            raise UserError(
                f"optimizer.lr_multipliers entry {item!r} is not REGEX=FACTOR "
                "(e.g. 'norm.*/bias=64,whiten/kernel=0')"
            )
    return rules


def param_path(path: tuple[Any, ...]) -> str:
    """'block1/conv/kernel' for a key path of a parameter tree."""
    return "/".join(str(getattr(key, "key", getattr(key, "idx", key))) for key in path)


def multiplier_tree(params: Any, text: str, trainable: str = "") -> Any:
    """Per-parameter factor: 0 for a parameter whose path no regex of ``trainable`` (the config
    field; '' = all train) matches, else that of the first rule of ``text`` whose regex
    matches (re.search) the parameter's path, else 1. Freezing is a factor of 0, so
    ``trainable`` and ``optimizer.lr_multipliers`` are one mechanism."""
    rules = parse_lr_multipliers(text)
    train = path_patterns("trainable", trainable)

    def factor(path: tuple[Any, ...], _: Any) -> float:
        name = param_path(path)
        if train and not any(pattern.search(name) for pattern in train):
            return 0.0
        return next((f for pattern, f in rules if pattern.search(name)), 1.0)

    return jax.tree_util.tree_map_with_path(factor, params)


def count_trainable(params: Any, trainable: str) -> int:
    """How many of ``params``' numbers ``trainable`` leaves to train; a ``UserError`` when it
    matches none (a misspelt path would otherwise train nothing, silently)."""
    factors = multiplier_tree(params, "", trainable)
    pairs = zip(jax.tree.leaves(factors), jax.tree.leaves(params), strict=True)
    count = sum(param.size for factor, param in pairs if factor)
    if trainable and not count:
        paths = [param_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
        shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        raise UserError(
            f"trainable={trainable!r} matches no parameter, so nothing would train; parameter "
            f"paths: {shown}"
        )
    return count


def scale_by_multipliers(text: str, trainable: str = "") -> optax.GradientTransformation:
    """Scale each parameter's update by its factor (:func:`multiplier_tree`); a factor of 0
    makes the update exactly zero, so a frozen parameter keeps its bits."""

    def scaled(f: float, u: jax.Array) -> jax.Array:
        if f == 1.0:
            return u
        return jnp.zeros_like(u) if f == 0.0 else f * u  # 0 * inf would be NaN

    def update(updates, state, params=None):
        factors = multiplier_tree(updates, text, trainable)
        return jax.tree.map(scaled, factors, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


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
    elif opt.name in ("adamw", "lamb"):  # Adam with decoupled decay; LAMB adds trust ratios
        adam = optax.adamw if opt.name == "adamw" else optax.lamb
        chain.append(
            adam(
                schedule,
                b1=opt.b1,
                b2=opt.b2,
                eps=opt.eps,
                weight_decay=opt.weight_decay,
                mask=_kernels_only,
            )
        )
    elif opt.name == "rmsprop":
        # TensorFlow's convention, which EfficientNet's recipe was tuned with: epsilon inside
        # the square root and the mean square starting at 1.
        if opt.weight_decay:
            chain.append(optax.add_decayed_weights(opt.weight_decay, mask=_kernels_only))
        chain.append(
            optax.rmsprop(
                schedule,
                decay=opt.rms_decay,
                eps=opt.eps,
                initial_scale=1.0,
                eps_in_sqrt=True,
                momentum=opt.momentum or None,
                nesterov=opt.nesterov,
            )
        )
    elif opt.name == "lars":
        chain.append(
            optax.lars(
                schedule,
                weight_decay=opt.weight_decay,
                weight_decay_mask=_kernels_only,
                trust_coefficient=opt.trust_coefficient,
                trust_ratio_mask=_kernels_only,
                momentum=opt.momentum,
                nesterov=opt.nesterov,
            )
        )
    else:
        raise unknown_choice("optimizer.name", opt.name, OPTIMIZERS)
    if opt.lr_multipliers or config.trainable:
        chain.append(scale_by_multipliers(opt.lr_multipliers, config.trainable))
    return optax.chain(*chain)
