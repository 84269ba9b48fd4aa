"""A model's stages, found from the model itself, and their outputs on given images.

Every module call of a forward pass is intercepted (``nn.intercept_methods``, as
``models.stats.layer_table`` does). Calls that take and return an NHWC feature map (4-D, the
batch first, more than one position) are kept in the order they finish; consecutive ones of the
same spatial size form a stage, and the stage's output is the last call of the shallowest module
among them (a residual block rather than the convolution inside it, the block after the last
one rather than the expansion of the block that downsamples next). So a stage ends where the
spatial size changes, whatever the family: LeNet's ``c1`` and ``c3``, a ResNet's last block at
each resolution, ViT's patch embedding. Nothing is written per model.

The layer for class activation maps (:func:`cam_layer`) is the last stage's output; in a model
that goes on with a token sequence on the patch grid (ViT) it is the last such sequence whose
patch tokens the classifier still reads (found with a gradient probe, see there).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Collection, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModuleCall:
    """One module call of a forward pass: ``index`` counts calls in the order they start (the
    same in every pass at the same input shape), ``path`` is the module's place in the model."""

    index: int
    path: tuple[str, ...]
    kind: str  # the module's class name
    is_conv: bool
    input_shape: tuple[int, ...] | None  # of the first argument, if an array
    output_shape: tuple[int, ...] | None  # if the output is one array

    @property
    def name(self) -> str:
        return "/".join(self.path) or "model"

    @property
    def spatial(self) -> tuple[int, int]:
        """(height, width) of a feature map's output."""
        assert self.output_shape is not None and len(self.output_shape) == 4
        return self.output_shape[1], self.output_shape[2]


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, jax.Array | jax.ShapeDtypeStruct) else None


def trace_calls(model: nn.Module, variables: Any, images: Any) -> list[ModuleCall]:
    """Every module call of ``model``'s eval-mode forward pass on ``images`` (an array or a
    ``jax.ShapeDtypeStruct``), in the order the calls finish; nothing is computed."""
    calls: list[ModuleCall] = []
    counter = itertools.count()

    def record(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        index = next(counter)
        out = next_fun(*args, **kwargs)
        module = context.module
        calls.append(
            ModuleCall(
                index=index,
                path=tuple(module.path),
                kind=type(module).__name__,
                is_conv=isinstance(module, nn.Conv),
                input_shape=_shape(args[0]) if args else None,
                output_shape=_shape(out),
            )
        )
        return out

    def forward(v: Any, x: jax.Array) -> jax.Array:
        with nn.intercept_methods(record):
            return model.apply(v, x, train=False)

    jax.eval_shape(forward, variables, images)
    return calls


def _is_feature_map(shape: tuple[int, ...] | None, batch: int) -> bool:
    return shape is not None and len(shape) == 4 and shape[0] == batch


def feature_map_calls(calls: list[ModuleCall]) -> list[ModuleCall]:
    """The calls (in finishing order) that map an NHWC feature map to another with more than
    one position: convolutions, normalisations, blocks; not attention's 4-D projections of a
    token sequence, nor squeeze-and-excitation's 1×1 maps."""
    batch = next(c.input_shape[0] for c in calls if c.path == () and c.input_shape)
    return [
        c
        for c in calls
        if c.path
        and _is_feature_map(c.input_shape, batch)
        and _is_feature_map(c.output_shape, batch)
        and c.spatial[0] * c.spatial[1] > 1
    ]


def find_stages(calls: list[ModuleCall]) -> list[ModuleCall]:
    """The stage outputs of a traced forward pass, in order: for each run of consecutive
    feature-map calls of one spatial size, the last call of its shallowest module."""
    stages = []
    for _, run in itertools.groupby(feature_map_calls(calls), key=lambda c: c.spatial):
        run = list(run)
        depth = min(len(c.path) for c in run)
        stages.append([c for c in run if len(c.path) == depth][-1])
    return stages


def first_conv(calls: list[ModuleCall]) -> ModuleCall | None:
    """The convolution that runs first (the one that sees the image), if any."""
    convs = [c for c in calls if c.is_conv]
    return min(convs, key=lambda c: c.index) if convs else None


def apply_with_taps(
    model: nn.Module,
    variables: Any,
    images: jax.Array,
    keep: Collection[int] = (),
    add: Mapping[int, jax.Array] | None = None,
    inputs_of: Collection[int] = (),
) -> tuple[jax.Array, dict[int, jax.Array], dict[int, jax.Array]]:
    """Eval-mode logits of ``images``, the outputs of the calls numbered in ``keep`` and the
    first arguments of those in ``inputs_of``. ``add[i]`` is added to call ``i``'s output
    before the model goes on: with zeros it changes nothing, and its gradient is the gradient
    with respect to that output (how Grad-CAM reads the gradient of an inner layer)."""
    add = add or {}
    outputs: dict[int, jax.Array] = {}
    inputs: dict[int, jax.Array] = {}
    counter = itertools.count()

    def tap(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        index = next(counter)
        if index in inputs_of:
            inputs[index] = args[0]
        out = next_fun(*args, **kwargs)
        if index in add:
            out = out + add[index].astype(out.dtype)
        if index in keep:
            outputs[index] = out
        return out

    with nn.intercept_methods(tap):
        logits = model.apply(variables, images, train=False)
    return logits, outputs, inputs


def stage_outputs(
    model: nn.Module, variables: Any, images: jax.Array, stages: list[ModuleCall]
) -> list[jax.Array]:
    """The output of each of ``stages`` (as float32) for ``images``, in one forward pass."""

    @jax.jit
    def run(v: Any, x: jax.Array) -> list[jax.Array]:
        _, outputs, _ = apply_with_taps(model, v, x, keep={s.index for s in stages})
        return [outputs[s.index].astype(jnp.float32) for s in stages]

    return run(variables, images)


@dataclasses.dataclass(frozen=True)
class CamLayer:
    """The layer Grad-CAM reads: a call whose output is an NHWC map, or a token sequence on a
    ``grid`` of patches (after ``skip`` leading tokens, e.g. ViT's class token)."""

    call: ModuleCall
    grid: tuple[int, int]
    skip: int = 0

    @property
    def is_tokens(self) -> bool:
        assert self.call.output_shape is not None
        return len(self.call.output_shape) == 3

    def to_map(self, output: jax.Array) -> jax.Array:
        """The call's output as an NHWC map on the grid."""
        if not self.is_tokens:
            return output
        tokens = output[:, self.skip :]
        return tokens.reshape((tokens.shape[0], *self.grid, tokens.shape[-1]))


def _token_calls(calls: list[ModuleCall], last: ModuleCall) -> list[tuple[ModuleCall, int]]:
    """(call, leading tokens) for the calls after ``last`` (in finishing order) that output a
    token sequence with one token per position of ``last``'s grid, plus at most one more."""
    positions = last.spatial[0] * last.spatial[1]
    after = calls[calls.index(last) + 1 :]
    found = []
    for c in after:
        shape = c.output_shape
        if (
            c.path
            and shape is not None
            and len(shape) == 3
            and shape[0] == last.output_shape[0]
            and shape[1] - positions in (0, 1)
        ):
            found.append((c, shape[1] - positions))
    return found


def cam_layer(model: nn.Module, variables: Any, images: jax.Array) -> CamLayer:
    """The layer for class activation maps of ``model`` (see the module docstring).

    Token sequences come after the last stage only in transformers; there the last sequences
    (the last block's output, its MLP's) feed the classifier through the class token alone,
    so their patch tokens have no gradient. The layer is the last sequence whose patch tokens
    move the classifier's input (a random projection of it: this works with an untrained,
    zero-initialised head too), e.g. ViT's last ``ln1``, the normalised input of the last
    attention.
    """
    calls = trace_calls(model, variables, images)
    stages = find_stages(calls)
    if not stages:
        raise ValueError(f"{type(model).__name__} has no spatial feature maps")
    last = stages[-1]
    tokens = _token_calls(calls, last)
    if not tokens:
        return CamLayer(last, last.spatial)
    head = max(calls, key=lambda c: c.index)  # the last module to start: the classifier

    def projection(deltas: dict[int, jax.Array]) -> jax.Array:
        _, _, inputs = apply_with_taps(model, variables, images, add=deltas, inputs_of={head.index})
        features = inputs[head.index].astype(jnp.float32)
        weights = jax.random.normal(jax.random.key(0), features.shape)
        return jnp.sum(features * weights)

    zeros = {c.index: jnp.zeros(c.output_shape, jnp.float32) for c, _ in tokens}
    probe = jax.jit(jax.grad(projection))(zeros)
    for c, skip in reversed(tokens):
        if bool(jnp.any(probe[c.index][:, skip:] != 0)):
            return CamLayer(c, last.spatial, skip)
    return CamLayer(last, last.spatial)
