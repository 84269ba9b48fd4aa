"""timm state_dict names (as in its ``.safetensors`` hub files) → jaxcnn variables.

timm's plain ResNets use torchvision's names (``from_torchvision.resnet``). Its EfficientNet
and MobileNetV2 come from one builder (``conv_stem``/``bn1``, ``blocks.S.B``, ``conv_head``/
``bn2``, ``classifier``), its ConvNeXt and ViT have their own names; the functions below map
those, in the order the jaxcnn model computes.
"""

from __future__ import annotations

from typing import Any

from jaxcnn.convert.core import Conversion, vector
from jaxcnn.convert.from_torchvision import attention
from jaxcnn.models import efficientnet as efficientnet_model
from jaxcnn.models import mobilenet

Fields = dict[str, Any]


def _mobile_blocks(c: Conversion, stages: int, se: bool) -> None:
    """timm's ``blocks.S.B``: a depthwise-separable block where jaxcnn's has no expansion
    (``conv_dw``/``bn1``, [``se``], ``conv_pw``/``bn2``), else an inverted residual
    (``conv_pw``/``bn1`` expansion, ``conv_dw``/``bn2``, [``se``], ``conv_pwl``/``bn3``)."""
    for s in range(stages):
        for b in range(c.count(f"stage{s + 1}_block")):
            source, target = f"blocks.{s}.{b}", f"stage{s + 1}_block{b + 1}"
            if c.has(f"{target}/expand/conv"):
                c.conv_bn(f"{source}.conv_pw", f"{source}.bn1", f"{target}/expand")
                c.conv_bn(f"{source}.conv_dw", f"{source}.bn2", f"{target}/depthwise")
                project, project_bn = "conv_pwl", "bn3"
            else:
                c.conv_bn(f"{source}.conv_dw", f"{source}.bn1", f"{target}/depthwise")
                project, project_bn = "conv_pw", "bn2"
            if se:
                c.conv(f"{source}.se.conv_reduce", f"{target}/se_reduce", bias=True)
                c.conv(f"{source}.se.conv_expand", f"{target}/se_expand", bias=True)
            c.conv_bn(f"{source}.{project}", f"{source}.{project_bn}", f"{target}/project")


def _mobile(c: Conversion, stages: int, se: bool) -> None:
    c.conv_bn("conv_stem", "bn1", "stem")
    _mobile_blocks(c, stages, se)
    c.conv_bn("conv_head", "bn2", "head_conv")
    c.dense("classifier", "head")


def efficientnet(c: Conversion, fields: Fields) -> None:
    """timm's ``efficientnet_b0`` … ``b7`` (not the ``tf_`` ports: see ``jaxcnn.convert``)."""
    _mobile(c, len(efficientnet_model.STAGES), se=True)


def mobilenet_v2(c: Conversion, fields: Fields) -> None:
    """timm's ``mobilenetv2_050`` / ``_100`` / ``_140`` (``width_mult`` 0.5, 1.0, 1.4)."""
    _mobile(c, len(mobilenet.STAGES), se=False)


def convnext(c: Conversion, fields: Fields) -> None:
    """``stem.0/1``; ``stages.S.downsample.0/1`` (LayerNorm, conv; none in stage 0);
    ``stages.S.blocks.B`` (``conv_dw``, ``norm``, ``mlp.fc1``/``fc2``, ``gamma``);
    ``head.norm``, ``head.fc``."""
    c.conv("stem.0", "stem", bias=True)
    c.layer_norm("stem.1", "stem_norm")
    for s in range(len(fields["depths"])):
        if s > 0:
            c.layer_norm(f"stages.{s}.downsample.0", f"downsample{s}_norm")
            c.conv(f"stages.{s}.downsample.1", f"downsample{s}", bias=True)
        for b in range(c.count(f"stage{s + 1}_block")):
            source, target = f"stages.{s}.blocks.{b}", f"stage{s + 1}_block{b + 1}"
            c.conv(f"{source}.conv_dw", f"{target}/dwconv", bias=True)
            c.layer_norm(f"{source}.norm", f"{target}/norm")
            c.dense(f"{source}.mlp.fc1", f"{target}/fc1")
            c.dense(f"{source}.mlp.fc2", f"{target}/fc2")
            c.put(f"params/{target}/layer_scale", f"{source}.gamma", vector)
    c.layer_norm("head.norm", "head_norm")
    c.dense("head.fc", "head")


def vit(c: Conversion, fields: Fields) -> None:
    """``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.I`` (``norm1``,
    ``attn.qkv`` packed (3·D, D), ``attn.proj``, ``norm2``, ``mlp.fc1``/``fc2``), ``norm``,
    ``head``."""
    c.conv("patch_embed.proj", "patch_embed", bias=True)
    c.put("params/class_token", "cls_token")
    c.put("params/pos_embedding", "pos_embed")
    for i in range(c.count("block")):
        source, target = f"blocks.{i}", f"block{i + 1}"
        c.layer_norm(f"{source}.norm1", f"{target}/ln1")
        attention(
            c,
            f"{source}.attn.qkv.",
            f"{source}.attn.proj",
            f"{target}/attention",
            fields["num_heads"],
        )
        c.layer_norm(f"{source}.norm2", f"{target}/ln2")
        c.dense(f"{source}.mlp.fc1", f"{target}/mlp1")
        c.dense(f"{source}.mlp.fc2", f"{target}/mlp2")
    c.layer_norm("norm", "final_norm")
    c.dense("head", "head")
