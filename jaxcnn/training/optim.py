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
COUPLED_DECAY = ("sgd", "rmsprop")  # add the weight decay to the gradient, as PyTorch's SGD
DECAYED_PARAMS = ("kernels", "all")
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
    """Raise for an unknown optimizer or schedule name or malformed per-parameter rules:
    checked before any data is opened, so a misspelt name gets its answer at once."""
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise unknown_choice("optimizer.name", opt.name, OPTIMIZERS)
    if config.schedule.name not in SCHEDULES:
        raise unknown_choice("schedule.name", config.schedule.name, SCHEDULES)
    if opt.weight_decay_params not in DECAYED_PARAMS:
        raise unknown_choice(
            "optimizer.weight_decay_params", opt.weight_decay_params, DECAYED_PARAMS
        )
    parse_path_rules("optimizer.lr_multipliers", opt.lr_multipliers)
    parse_path_rules("optimizer.freeze_after_epochs", opt.freeze_after_epochs)
    decay_rules = parse_path_rules(
        "optimizer.weight_decay_multipliers", opt.weight_decay_multipliers
    )
    if decay_rules and opt.name not in COUPLED_DECAY:
        raise UserError(
            f"optimizer.weight_decay_multipliers needs an optimizer that adds the decay to the "
            f"gradient ({' or '.join(COUPLED_DECAY)}), not {opt.name!r}; "
            "optimizer.weight_decay_params chooses which parameters decay with any optimizer"
        )


def _kernels_only(params):
    """Kernels and embeddings, not biases or normalisation parameters."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _decay_mask(opt: ml_collections.ConfigDict):
    """The parameters weight decay applies to (``optimizer.weight_decay_params``): kernels and
    embeddings only, or all (None: no mask)."""
    return None if opt.weight_decay_params == "all" else _kernels_only


_RULE_FORMS = {
    "optimizer.lr_multipliers": "REGEX=FACTOR (e.g. 'norm.*/bias=64,whiten/kernel=0')",
    "optimizer.weight_decay_multipliers": "REGEX=FACTOR (e.g. 'norm.*/bias=0.015625')",
    "optimizer.freeze_after_epochs": "REGEX=EPOCHS (e.g. 'whiten/bias=3')",
}


def parse_path_rules(field: str, text: str) -> list[tuple[re.Pattern, float]]:
    """A per-parameter field, ``"REGEX=NUMBER,REGEX=NUMBER"`` → [(pattern, number)] in the
    order given (the first pattern that matches a parameter's path applies to it)."""
    rules = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        pattern, _, number = item.rpartition("=")
        try:
            rules.append((re.compile(pattern), float(number)))
        except (re.error, ValueError):
            pattern = ""
        if not pattern or rules[-1][1] < 0:
            raise UserError(f"{field} entry {item!r} is not {_RULE_FORMS[field]}")
    return rules


def _first_match(rules: list[tuple[re.Pattern, float]], path: tuple[Any, ...]) -> float | None:
    name = param_path(path)
    return next((number for pattern, number in rules if pattern.search(name)), None)


def param_path(path: tuple[Any, ...]) -> str:
    """'block1/conv/kernel' for a key path of a parameter tree."""
    return "/".join(str(getattr(key, "key", getattr(key, "idx", key))) for key in path)


def multiplier_tree(params: Any, text: str, trainable: str = "") -> Any:
    """Per-parameter factor: 0 for a parameter whose path no regex of ``trainable`` (the config
    field; '' = all train) matches, else that of the first rule of ``text`` whose regex
    matches (re.search) the parameter's path, else 1. Freezing is a factor of 0, so
    ``trainable`` and ``optimizer.lr_multipliers`` are one mechanism."""
    rules = parse_path_rules("optimizer.lr_multipliers", text)
    train = path_patterns("trainable", trainable)

    def factor(path: tuple[Any, ...], _: Any) -> float:
        if train and not any(pattern.search(param_path(path)) for pattern in train):
            return 0.0
        found = _first_match(rules, path)
        return 1.0 if found is None else found

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


def add_weight_decay(rate: float, mask: Any, multipliers: str) -> optax.GradientTransformation:
    """Add ``rate * factor * param`` to each parameter's gradient (coupled decay, as PyTorch's
    SGD), ``factor`` from ``optimizer.weight_decay_multipliers`` (first match, else 1) and 0
    outside ``mask``. Per-parameter factors express recipes that keep a parameter's decay
    independent of its learning-rate multiplier (airbench: BatchNorm biases learn 64× faster,
    and their decay is divided by 64). Without multipliers it is optax's masked decay, whose
    optimizer state checkpoints already hold."""
    if not multipliers:
        return optax.add_decayed_weights(rate, mask=mask)
    rules = parse_path_rules("optimizer.weight_decay_multipliers", multipliers)

    def update(updates, state, params=None):
        decayed = mask(params) if mask else jax.tree.map(lambda _: True, params)

        def add(path: tuple[Any, ...], u: jax.Array, p: jax.Array, on: bool) -> jax.Array:
            found = _first_match(rules, path)
            factor = rate * (1.0 if found is None else found) if on else 0.0
            return u + factor * p if factor else u

        return jax.tree_util.tree_map_with_path(add, updates, params, decayed), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def freeze_after(rules_text: str, steps_per_epoch: int) -> optax.GradientTransformation:
    """Zero the updates of the parameters that ``optimizer.freeze_after_epochs`` names from
    their epoch on (airbench trains its whitening bias for 3 epochs only); the others pass."""
    rules = parse_path_rules("optimizer.freeze_after_epochs", rules_text)

    def init(params):
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        def gate(path: tuple[Any, ...], u: jax.Array) -> jax.Array:
            epochs = _first_match(rules, path)
            if epochs is None:
                return u
            return jnp.where(state.count < round(epochs * steps_per_epoch), u, jnp.zeros_like(u))

        updates = jax.tree_util.tree_map_with_path(gate, updates)
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule, steps_per_epoch: int = 0
) -> optax.GradientTransformation:
    """The optimizer of ``config.optimizer`` driven by ``schedule``; ``steps_per_epoch``
    places ``optimizer.freeze_after_epochs``."""
    opt = config.optimizer
    mask = _decay_mask(opt)
    chain = []
    if opt.grad_clip_norm:
        chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    if opt.name == "sgd":
        if opt.weight_decay:
            chain.append(add_weight_decay(opt.weight_decay, mask, opt.weight_decay_multipliers))
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
                mask=mask,
            )
        )
    elif opt.name == "rmsprop":
        # TensorFlow's convention, which EfficientNet's recipe was tuned with: epsilon inside
        # the square root and the mean square starting at 1.
        if opt.weight_decay:
            chain.append(add_weight_decay(opt.weight_decay, mask, opt.weight_decay_multipliers))
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
                weight_decay_mask=mask or True,  # optax.lars: True = all
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
    if opt.freeze_after_epochs:
        if steps_per_epoch <= 0:
            raise ValueError("optimizer.freeze_after_epochs needs steps_per_epoch")
        chain.append(freeze_after(opt.freeze_after_epochs, steps_per_epoch))
    return optax.chain(*chain)
