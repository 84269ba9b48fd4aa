"""torchvision state_dict names → jaxcnn variables, one function per family.

Each function walks the jaxcnn model in the order it computes and names, for every variable,
the torchvision tensor that fills it (``core.Conversion`` checks shapes and that every tensor
is used once). The torchvision names come from its ``nn.Sequential`` indices (``features.4``)
and attribute names (``layer1.0.conv1``); ``fields`` are the jaxcnn model's constructor fields.
"""

from __future__ import annotations

from typing import Any

from jaxcnn.convert.core import (
    Conversion,
    dense_kernel_after_flatten,
    heads_bias,
    heads_kernel,
    heads_out_kernel,
    vector,
)
from jaxcnn.models import efficientnet as efficientnet_model
from jaxcnn.models import googlenet as googlenet_model
from jaxcnn.models import mobilenet as mobilenet_model
from jaxcnn.models import vgg as vgg_model

Fields = dict[str, Any]


def resnet(c: Conversion, fields: Fields) -> None:
    """torchvision's ``ResNet`` (also timm's plain ``resnet18`` … ``resnet152``, which use the
    same names): ``conv1``/``bn1`` stem, ``layerS.B.convI``/``bnI`` blocks with a
    ``downsample`` (conv, BN) projection, ``fc`` head."""
    c.conv("conv1", "stem_conv")
    c.batch_norm("bn1", "stem_bn")
    convs = 3 if fields["bottleneck"] else 2
    for s in range(len(fields["stage_sizes"])):
        for b in range(c.count(f"stage{s + 1}_block")):
            source, target = f"layer{s + 1}.{b}", f"stage{s + 1}_block{b + 1}"
            for i in range(1, convs + 1):
                c.conv(f"{source}.conv{i}", f"{target}/conv{i}")
                c.batch_norm(f"{source}.bn{i}", f"{target}/bn{i}")
            if c.has(f"{target}/proj_conv"):
                c.conv(f"{source}.downsample.0", f"{target}/proj_conv")
                c.batch_norm(f"{source}.downsample.1", f"{target}/proj_bn")
    c.dense("fc", "head")


def vgg(c: Conversion, fields: Fields) -> None:
    """``features.I``: conv (with bias), [BatchNorm], ReLU per layer and a max pool per block;
    ``classifier.0/3/6``: the dense layers, the first on the 7×7×512 pooled map."""
    index = 0
    for b, block in enumerate(vgg_model.CONFIGS[fields["depth"]]):
        for i in range(len(block)):
            target = f"block{b + 1}_conv{i + 1}"
            c.conv(f"features.{index}", target, bias=True)
            index += 1
            if fields["batch_norm"]:
                c.batch_norm(f"features.{index}", f"{target}_bn")
                index += 1
            index += 1  # ReLU
        index += 1  # max pool
    c.dense("classifier.0", "fc1", dense_kernel_after_flatten(7, 7))
    c.dense("classifier.3", "fc2")
    c.dense("classifier.6", "head")


def alexnet(c: Conversion, fields: Fields) -> None:
    """``features.0/3/6/8/10``: the five convolutions; ``classifier.1/4/6``: the dense layers,
    the first on the 6×6×256 pooled map."""
    for i, index in enumerate((0, 3, 6, 8, 10)):
        c.conv(f"features.{index}", f"conv{i + 1}", bias=True)
    c.dense("classifier.1", "fc1", dense_kernel_after_flatten(6, 6))
    c.dense("classifier.4", "fc2")
    c.dense("classifier.6", "head")


def _basic_conv(c: Conversion, source: str, target: str) -> None:
    """torchvision's ``BasicConv2d`` (``.conv``, ``.bn``) → jaxcnn's ``ConvBN``."""
    c.conv_bn(f"{source}.conv", f"{source}.bn", target)


def googlenet(c: Conversion, fields: Fields) -> None:
    """``conv1``–``conv3``, ``inceptionK.branch1`` / ``branch2.0-1`` / ``branch3.0-1`` /
    ``branch4.1`` (after its pool), the auxiliary heads ``aux1``/``aux2`` where the file has
    them (``conv``, ``fc1`` on a 4×4×128 map, ``fc2``), and ``fc``."""
    for name in ("conv1", "conv2", "conv3"):
        _basic_conv(c, name, name)
    for key in googlenet_model.INCEPTION:
        source, target = f"inception{key}", f"inception{key}"
        _basic_conv(c, f"{source}.branch1", f"{target}/branch1")
        _basic_conv(c, f"{source}.branch2.0", f"{target}/branch2_reduce")
        _basic_conv(c, f"{source}.branch2.1", f"{target}/branch2_3x3")
        _basic_conv(c, f"{source}.branch3.0", f"{target}/branch3_reduce")
        _basic_conv(c, f"{source}.branch3.1", f"{target}/branch3_3x3")
        _basic_conv(c, f"{source}.branch4.1", f"{target}/branch4_proj")
        aux = {"4a": "aux1", "4d": "aux2"}.get(key)
        if aux and fields["aux_logits"]:
            _basic_conv(c, f"{aux}.conv", f"{aux}_head/conv")
            c.dense(f"{aux}.fc1", f"{aux}_head/fc1", dense_kernel_after_flatten(4, 4))
            c.dense(f"{aux}.fc2", f"{aux}_head/fc2")
    c.dense("fc", "head")


def mobilenet_v2(c: Conversion, fields: Fields) -> None:
    """``features.0``: stem (conv, BN); ``features.1-17.conv``: inverted residuals, whose
    expansion (absent in the first, t = 1) and depthwise units are ``(conv, BN)`` pairs and
    whose projection is a bare conv and BN; ``features.18``: the last 1×1 unit;
    ``classifier.1``: the head."""
    c.conv_bn("features.0.0", "features.0.1", "stem")
    index = 1
    for s in range(len(mobilenet_model.STAGES)):
        for b in range(c.count(f"stage{s + 1}_block")):
            source, target = f"features.{index}.conv", f"stage{s + 1}_block{b + 1}"
            j = 0
            if c.has(f"{target}/expand/conv"):
                c.conv_bn(f"{source}.0.0", f"{source}.0.1", f"{target}/expand")
                j = 1
            c.conv_bn(f"{source}.{j}.0", f"{source}.{j}.1", f"{target}/depthwise")
            c.conv_bn(f"{source}.{j + 1}", f"{source}.{j + 2}", f"{target}/project")
            index += 1
    c.conv_bn(f"features.{index}.0", f"features.{index}.1", "head_conv")
    c.dense("classifier.1", "head")


def efficientnet(c: Conversion, fields: Fields) -> None:
    """``features.0``: stem; ``features.S.B.block``: MBConv as a sequence of expansion (absent
    when the expansion is 1), depthwise, squeeze-and-excitation (``fc1``, ``fc2``: 1×1 convs
    with bias) and projection; ``features.8``: the last 1×1 unit; ``classifier.1``: head."""
    c.conv_bn("features.0.0", "features.0.1", "stem")
    for s in range(len(efficientnet_model.STAGES)):
        for b in range(c.count(f"stage{s + 1}_block")):
            source, target = f"features.{s + 1}.{b}.block", f"stage{s + 1}_block{b + 1}"
            j = 0
            if c.has(f"{target}/expand/conv"):
                c.conv_bn(f"{source}.0.0", f"{source}.0.1", f"{target}/expand")
                j = 1
            c.conv_bn(f"{source}.{j}.0", f"{source}.{j}.1", f"{target}/depthwise")
            c.conv(f"{source}.{j + 1}.fc1", f"{target}/se_reduce", bias=True)
            c.conv(f"{source}.{j + 1}.fc2", f"{target}/se_expand", bias=True)
            c.conv_bn(f"{source}.{j + 2}.0", f"{source}.{j + 2}.1", f"{target}/project")
    last = len(efficientnet_model.STAGES) + 1
    c.conv_bn(f"features.{last}.0", f"features.{last}.1", "head_conv")
    c.dense("classifier.1", "head")


def convnext(c: Conversion, fields: Fields) -> None:
    """``features.0``: stem conv and LayerNorm; ``features.2S``: downsampling LayerNorm and
    conv; ``features.2S+1.B``: blocks (``block.0`` depthwise conv, ``block.2`` LayerNorm,
    ``block.3``/``block.5`` linear layers, ``layer_scale`` of shape (C, 1, 1));
    ``classifier.0``/``.2``: LayerNorm and head."""
    for s in range(len(fields["depths"])):
        if s == 0:
            c.conv("features.0.0", "stem", bias=True)
            c.layer_norm("features.0.1", "stem_norm")
        else:
            c.layer_norm(f"features.{2 * s}.0", f"downsample{s}_norm")
            c.conv(f"features.{2 * s}.1", f"downsample{s}", bias=True)
        for b in range(c.count(f"stage{s + 1}_block")):
            source, target = f"features.{2 * s + 1}.{b}", f"stage{s + 1}_block{b + 1}"
            c.conv(f"{source}.block.0", f"{target}/dwconv", bias=True)
            c.layer_norm(f"{source}.block.2", f"{target}/norm")
            c.dense(f"{source}.block.3", f"{target}/fc1")
            c.dense(f"{source}.block.5", f"{target}/fc2")
            c.put(f"params/{target}/layer_scale", f"{source}.layer_scale", vector)
    c.layer_norm("classifier.0", "head_norm")
    c.dense("classifier.2", "head")


def attention(c: Conversion, qkv: str, out: str, target: str, num_heads: int) -> None:
    """Packed query/key/value projections and the output projection ``out`` → Flax's
    ``MultiHeadDotProductAttention`` at ``target``.

    ``qkv`` is what the packed tensors' names start with (``QKVweight`` of shape (3·D, D), rows
    q, k, v; ``QKVbias``): torchvision's ``…self_attention.in_proj_``, timm's ``…attn.qkv.``.
    """
    parts = [f"params/{target}/{name}" for name in ("query", "key", "value")]
    c.put_parts([f"{p}/kernel" for p in parts], f"{qkv}weight", heads_kernel(num_heads))
    c.put_parts([f"{p}/bias" for p in parts], f"{qkv}bias", heads_bias(num_heads))
    c.put(f"params/{target}/out/kernel", f"{out}.weight", heads_out_kernel(num_heads))
    c.put(f"params/{target}/out/bias", f"{out}.bias")


def vit(c: Conversion, fields: Fields) -> None:
    """``conv_proj``, ``class_token``, ``encoder.pos_embedding``,
    ``encoder.layers.encoder_layer_I`` (``ln_1``, ``self_attention`` with a packed
    ``in_proj_weight``, ``ln_2``, ``mlp.0``/``mlp.3``), ``encoder.ln``, ``heads.head``."""
    c.conv("conv_proj", "patch_embed", bias=True)
    c.put("params/class_token", "class_token")
    c.put("params/pos_embedding", "encoder.pos_embedding")
    for i in range(c.count("block")):
        source, target = f"encoder.layers.encoder_layer_{i}", f"block{i + 1}"
        c.layer_norm(f"{source}.ln_1", f"{target}/ln1")
        attn = f"{source}.self_attention"
        attention(
            c, f"{attn}.in_proj_", f"{attn}.out_proj", f"{target}/attention", fields["num_heads"]
        )
        c.layer_norm(f"{source}.ln_2", f"{target}/ln2")
        c.dense(f"{source}.mlp.0", f"{target}/mlp1")
        c.dense(f"{source}.mlp.3", f"{target}/mlp2")
    c.layer_norm("encoder.ln", "final_norm")
    c.dense("heads.head", "head")
