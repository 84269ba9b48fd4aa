"""Import pretrained weights: a torchvision state_dict or a timm checkpoint → jaxcnn variables.

>>> meta, variables = convert("torchvision", "resnet50", "resnet50-11ad3fa6.pth")
>>> save_variables("resnet50.msgpack", meta, variables)
>>> meta, variables = load_variables("resnet50.msgpack")
>>> model = create_model(meta)          # models.create(meta["model"], **meta["fields"])
>>> logits = model.apply(variables, images)

The user supplies the file; nothing is downloaded. torchvision's ``.pth`` files are read with
``torch.load(weights_only=True)`` (torch from ``pip install -e '.[torch]'``), timm's
``.safetensors`` files with ``safetensors.numpy`` (no torch). Every family has an explicit map
from the source's tensor names to jaxcnn's variables (``from_torchvision.py``, ``from_timm.py``);
every source tensor must be used exactly once and every jaxcnn variable filled with the right
shape, else the conversion stops with one line naming the first tensor that does not fit.

The converted model computes what the reference computes, given the same input tensor (tested
against torchvision and timm to 1e-4 relative): where the reference has constants beyond its
tensors they become constructor fields stored with the variables — GoogLeNet's
``transform_input`` (torchvision turns it on for its pretrained weights), EfficientNet's
BatchNorm ε and momentum (torchvision's B0–B4 and all of timm's use PyTorch's defaults); and
what the file's shapes tell: ``num_classes`` (from the head), ViT's ``image_size`` (from the
position embeddings), VGG's and AlexNet's ``classifier_width``, ``aux_logits`` (GoogLeNet
files that keep the auxiliary heads). Preprocessing is not part of the file:
feed images normalised as the reference expects (torchvision: ImageNet mean and std; timm: its
model card's ``mean``/``std``, e.g. 0.5/0.5 for the augreg ViTs).

What jaxcnn does not import, and why: timm's VGG (its classifier is a 7×7 convolution followed
by global pooling, equal to torchvision's only at 224×224; torchvision's own file converts),
timm's ``tf_efficientnet_*`` (TensorFlow's asymmetric "SAME" padding), ResNet variants with
deep stems or average-pool shortcuts (timm's ``resnet50d`` etc.), wide ResNets (torchvision's
``wide_resnet50_2`` widens only the bottleneck), and ViTs with register tokens, layer scale,
average pooling or position embeddings without the class token (DeiT III, timm's
``no_embed_class``); such files stop with the first tensor that has no place in jaxcnn's model.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxcnn import models
from jaxcnn.convert import from_timm, from_torchvision
from jaxcnn.convert.core import Conversion, read_tensors
from jaxcnn.errors import UserError

__all__ = [
    "SOURCES",
    "convert",
    "create_model",
    "load_variables",
    "save_variables",
    "supported_models",
]

FORMAT = "jaxcnn-variables"
VERSION = 1


def _no_fields(model: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    return {}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one family converts from one source."""

    fill: Callable[[Conversion, dict[str, Any]], None]  # the name map (from_*.py)
    models: tuple[str, ...]  # the jaxcnn models it fills
    head: str  # the classifier weight (its rows are the classes: num_classes)
    fields: Callable[[str, dict[str, np.ndarray]], dict[str, Any]] = _no_fields


def _classifier_width(hidden: str) -> Callable[[str, dict[str, np.ndarray]], dict[str, Any]]:
    """``classifier_width`` (VGG, AlexNet: 4096 in the references) from the first hidden
    linear layer, so that files with a narrower classifier convert too."""

    def fields(model: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        if hidden in tensors and tensors[hidden].ndim == 2:
            return {"classifier_width": int(tensors[hidden].shape[0])}
        return {}

    return fields


def _googlenet_fields(model: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    # torchvision's pretrained GoogLeNet transforms its input; its files keep the auxiliary
    # heads (a model built without them saves none).
    return {"transform_input": True, "aux_logits": "aux1.fc2.weight" in tensors}


def _torchvision_efficientnet_fields(model: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    # torchvision's B0–B4 use PyTorch's BatchNorm defaults, its B5–B7 TensorFlow's.
    if model in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7"):
        return {"bn_epsilon": 1e-3, "bn_momentum": 0.99}
    return {"bn_epsilon": 1e-5, "bn_momentum": 0.9}


def _timm_efficientnet_fields(model: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"bn_epsilon": 1e-5, "bn_momentum": 0.9}  # PyTorch's defaults, all sizes


def _vit_fields(position_embedding: str) -> Callable[[str, dict[str, np.ndarray]], dict[str, Any]]:
    """``image_size`` from the number of position embeddings: a class token plus a square grid
    of patches (fine-tuned ViTs come at 224, 384, ...)."""

    def fields(model: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        if position_embedding not in tensors or tensors[position_embedding].ndim != 3:
            return {}
        tokens = tensors[position_embedding].shape[1]
        side = math.isqrt(max(tokens - 1, 0))
        if side * side != tokens - 1:
            raise UserError(
                f"{position_embedding!r} has {tokens} position embeddings, not one for the class "
                "token plus a square grid of patches: jaxcnn's ViT adds one to every token "
                "(files without the class token's, e.g. DeiT III, do not convert)"
            )
        return {"image_size": side * models.get_entry(model).defaults["patch_size"]}

    return fields


_RESNETS = tuple(f"resnet{depth}" for depth in (18, 34, 50, 101, 152))
_EFFICIENTNETS = tuple(models.list_models("EfficientNet"))
_CONVNEXTS = tuple(models.list_models("ConvNeXt"))
_VITS = tuple(models.list_models("ViT"))

RECIPES: dict[str, dict[str, Recipe]] = {
    "torchvision": {
        "ResNet": Recipe(from_torchvision.resnet, _RESNETS, "fc.weight"),
        "VGG": Recipe(
            from_torchvision.vgg,
            tuple(models.list_models("VGG")),
            "classifier.6.weight",
            _classifier_width("classifier.0.weight"),
        ),
        "AlexNet": Recipe(
            from_torchvision.alexnet,
            ("alexnet",),
            "classifier.6.weight",
            _classifier_width("classifier.1.weight"),
        ),
        "GoogLeNet": Recipe(
            from_torchvision.googlenet, ("googlenet",), "fc.weight", _googlenet_fields
        ),
        "MobileNetV2": Recipe(
            from_torchvision.mobilenet_v2, ("mobilenet_v2",), "classifier.1.weight"
        ),
        "EfficientNet": Recipe(
            from_torchvision.efficientnet,
            _EFFICIENTNETS,
            "classifier.1.weight",
            _torchvision_efficientnet_fields,
        ),
        "ConvNeXt": Recipe(from_torchvision.convnext, _CONVNEXTS, "classifier.2.weight"),
        "ViT": Recipe(
            from_torchvision.vit, _VITS, "heads.head.weight", _vit_fields("encoder.pos_embedding")
        ),
    },
    "timm": {
        "ResNet": Recipe(from_torchvision.resnet, _RESNETS, "fc.weight"),
        "MobileNetV2": Recipe(from_timm.mobilenet_v2, ("mobilenet_v2",), "classifier.weight"),
        "EfficientNet": Recipe(
            from_timm.efficientnet, _EFFICIENTNETS, "classifier.weight", _timm_efficientnet_fields
        ),
        "ConvNeXt": Recipe(from_timm.convnext, _CONVNEXTS, "head.fc.weight"),
        "ViT": Recipe(from_timm.vit, _VITS, "head.weight", _vit_fields("pos_embed")),
    },
}
SOURCES = tuple(sorted(RECIPES))

# Why a registered model has no recipe, by family (for the error message).
_WHY_NOT = {
    "ResNet": "only the ImageNet ResNets (resnet18 … resnet152) have such weights",
    "VGG": "timm's VGG computes its classifier as convolutions (import torchvision's file)",
    "AlexNet": "timm has no AlexNet (import torchvision's file)",
    "GoogLeNet": "timm has no GoogLeNet (import torchvision's file)",
}


def supported_models(source: str) -> list[str]:
    """The jaxcnn models that ``source`` (``'torchvision'`` or ``'timm'``) can fill."""
    return sorted(name for recipe in _recipes(source).values() for name in recipe.models)


def _recipes(source: str) -> dict[str, Recipe]:
    if source not in RECIPES:
        raise UserError(f"unknown source {source!r}; valid choices: {', '.join(SOURCES)}")
    return RECIPES[source]


def _recipe(source: str, model: str) -> Recipe:
    """The recipe filling ``model`` from ``source``; one line naming the choices if none."""
    recipes = _recipes(source)
    choices = ", ".join(supported_models(source))
    if model not in models.list_models():
        raise UserError(f"unknown model {model!r}; from {source}: {choices}")
    family = models.get_entry(model).family
    recipe = recipes.get(family)
    if recipe is None or model not in recipe.models:
        why = _WHY_NOT.get(family, f"{source} has no {family} weights")
        raise UserError(
            f"jaxcnn cannot import {model} from {source} ({why}); from {source}: {choices}"
        )
    return recipe


def _json_ready(value: Any) -> Any:
    """Tuples as lists, numpy scalars as Python numbers: what msgpack and JSON can hold."""
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _input_shape(model: str, fields: dict[str, Any]) -> tuple[int, int, int]:
    height, width, channels = models.get_entry(model).input_shape
    if "image_size" in fields:
        height = width = fields["image_size"]
    return height, width, channels


def create_model(meta: dict[str, Any], **kwargs: Any) -> Any:
    """The Flax module that a converted file's variables belong to (``kwargs``: further
    arguments of ``models.create``, e.g. ``conv_impl`` or ``dtype``)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["fields"].items()}
    return models.create(meta["model"], **{**fields, **kwargs})


def _expected_shapes(model: str, fields: dict[str, Any]) -> tuple[Any, dict[str, tuple]]:
    """The module built with ``fields`` and the shape of each of its variables."""
    import flax
    import jax
    import jax.numpy as jnp

    module = create_model({"model": model, "fields": fields}, conv_impl="xla")
    height, width, channels = _input_shape(model, fields)
    try:
        variables = jax.eval_shape(
            lambda: module.init(
                jax.random.PRNGKey(0), jnp.zeros((1, height, width, channels)), train=False
            )
        )
    except (TypeError, ValueError) as error:
        raise UserError(
            f"jaxcnn's {model} cannot be built with fields {fields}: "
            + str(error).strip().splitlines()[0]
        ) from None
    flat = flax.traverse_util.flatten_dict(variables, sep="/")
    return module, {path: tuple(leaf.shape) for path, leaf in flat.items()}


def convert(
    source: str, model: str, path: str, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the checkpoint ``path`` of ``source`` and return ``(meta, variables)`` for jaxcnn's
    ``model``.

    ``fields``: constructor fields of the jaxcnn model where the file is of a variant the name
    alone does not fix (e.g. ``width_mult=0.5``); they override what is read from the file
    (``num_classes``, ViT's ``image_size``, ...). ``meta`` holds ``model`` and ``fields`` (what
    ``create_model`` builds), ``source`` and ``file``; ``variables`` is
    ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` where the model has BatchNorm) of
    float32 numpy arrays, as ``model.init`` would return them.
    """
    recipe = _recipe(source, model)
    tensors = read_tensors(path)
    found = recipe.fields(model, tensors)
    if recipe.head in tensors and tensors[recipe.head].ndim == 2:
        found["num_classes"] = int(tensors[recipe.head].shape[0])
    fields = {**found, **fields}
    module, expected = _expected_shapes(model, fields)
    resolved = {f.name: getattr(module, f.name) for f in dataclasses.fields(module) if f.init}
    conversion = Conversion(
        tensors, expected, what=f"{os.path.basename(path)} ({source})", model=model
    )
    recipe.fill(conversion, resolved)
    import flax

    variables = flax.traverse_util.unflatten_dict(conversion.finish(), sep="/")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": model,
        "fields": {name: _json_ready(value) for name, value in sorted(fields.items())},
        "source": source,
        "file": os.path.basename(path),
    }
    return meta, variables


def save_variables(path: str, meta: dict[str, Any], variables: dict[str, Any]) -> None:
    """Write ``{"meta": meta, **variables}`` as msgpack (flax.serialization) to ``path``,
    atomically (a finished file or none)."""
    import flax.serialization

    if not path.endswith(".msgpack"):
        raise UserError(f"output {path!r} must end in .msgpack")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"output folder {folder!r} does not exist")
    data = flax.serialization.msgpack_serialize({"meta": meta, **variables})
    partial = f"{path}.partial"
    with open(partial, "wb") as file:
        file.write(data)
    os.replace(partial, path)


def load_variables(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, variables)`` of a file written by ``python -m jaxcnn.convert``.

    ``meta["model"]`` and ``meta["fields"]`` build the model (:func:`create_model`);
    ``variables`` (``params``, and ``batch_stats`` where the model has BatchNorm) are numpy
    arrays that ``model.apply`` takes. A missing or foreign file is a one-line ``UserError``.
    """
    import flax.serialization

    if not os.path.isfile(path):
        raise UserError(f"variables file {path!r} not found")
    with open(path, "rb") as file:
        data = file.read()
    try:
        tree = flax.serialization.msgpack_restore(data)
    except Exception as error:  # msgpack raises several unrelated types on foreign bytes
        raise UserError(f"{path!r} is not a msgpack file of jaxcnn variables: {error}") from None
    meta = tree.pop("meta", None) if isinstance(tree, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "params" not in tree:
        raise UserError(
            f"{path!r} is not a jaxcnn variables file (written by python -m jaxcnn.convert)"
        )
    if meta.get("version", 0) > VERSION:
        raise UserError(
            f"{path!r} has format version {meta['version']}; this jaxcnn reads up to {VERSION}"
        )
    return meta, tree
