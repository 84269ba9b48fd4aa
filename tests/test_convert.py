"""Importing torchvision and timm weights (``jaxcnn.convert``): the converted model's logits equal
the reference's, at the reference input size and at an odd one, and bad input is one line.

Every reference model is built with random weights (nothing is downloaded), BatchNorm
statistics and other constant-initialised tensors are randomised so that a misplaced tensor
shows, and the state_dict is saved as the sources ship it: ``.pth`` (torchvision) or
``.safetensors`` (timm).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import jax
import numpy as np
import pytest

torchvision = pytest.importorskip(
    "torchvision",
    reason="needs the torch extra: pip install -e '.[torch]', then python -m pytest "
    "tests/test_convert.py",
)
import torch  # noqa: E402  (after the skip: torchvision brings torch)
from torchvision import models as tvm  # noqa: E402

from jaxcnn import convert  # noqa: E402
from jaxcnn.convert import __main__ as cli  # noqa: E402
from jaxcnn.errors import UserError  # noqa: E402

TOLERANCE = 1e-4  # max |jaxcnn − reference| / max |reference|, float32
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(autouse=True)
def torch_settings():
    """The same random reference weights in every run (PyTorch's global seed), and one PyTorch
    thread per pytest-xdist worker (two workers share two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` in eval mode with random values wherever its initialisation is a constant, and
    BatchNorm statistics that keep its activations alive, so that a tensor mapped to the wrong
    place, layout or collection, or a missing input transform, changes the logits.

    Constants: norm scales, zero biases, ConvNeXt's 1e-6 layer scale, ViT's zero class token
    and head. BatchNorm: running statistics measured on random images (with the reference
    initialisations and PyTorch's default statistics, activations fade towards zero through a
    deep network, and its logits hardly depend on the input), then each variance scaled by a
    random factor in [0.8, 1.25] and each mean shifted by up to a few tenths of a standard
    deviation (larger factors compound over 50 BatchNorms into activations so large that
    float32 rounding alone nears the tolerance).
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=generator) * (high - low) + low

    def normal(t: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=generator) * std

    with torch.no_grad():
        for name, t in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if not t.is_floating_point() or leaf.startswith("running_"):
                continue
            constant = bool(torch.all(t == t.flatten()[0]))
            if leaf in ("layer_scale", "gamma"):
                t.copy_(uniform(t, 0.2, 1.0))
            elif t.ndim == 1 and leaf == "weight":  # a norm's scale
                t.copy_(uniform(t, 0.5, 1.5))
            elif t.ndim == 1 and leaf == "bias" and constant:
                t.copy_(normal(t, 0.1))
            elif constant:
                t.copy_(normal(t, 0.2))
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        if norms:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # a cumulative average: the statistics of this batch
            model.train()(torch.randn((2, 3, 224, 224), generator=generator))
            for norm in norms:
                norm.momentum = 0.1
                norm.running_var.mul_(uniform(norm.running_var, 0.8, 1.25))
                norm.running_mean.add_(normal(norm.running_mean, 0.1) * norm.running_var.sqrt())
    return model.eval()


def save(model: torch.nn.Module, path) -> str:
    """The state_dict as a torchvision ``.pth`` or a timm ``.safetensors`` (by suffix)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    return str(path)


def relative_difference(meta: dict, variables: dict, reference: torch.nn.Module, size: int):
    """max |jaxcnn − reference| / max |reference| on two random size×size images (NCHW for
    the reference, NHWC for jaxcnn)."""
    x = np.random.RandomState(size).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    model = convert.create_model(meta, conv_impl="xla")
    nhwc = x.transpose(0, 2, 3, 1)
    # XLA's backend optimisations halve the compile time of a one-off forward pass.
    forward = jax.jit(model.apply).lower(variables, nhwc).compile(FAST_COMPILE)
    got = np.asarray(forward(variables, nhwc))
    assert got.shape == expected.shape
    scale = np.abs(expected).max()
    # The logits depend on the image far beyond the tolerance, so a wrong input transform shows.
    assert np.abs(expected[0] - expected[1]).max() > 100 * TOLERANCE * scale
    return float(np.abs(got - expected).max() / scale)


def check(source: str, name: str, reference: torch.nn.Module, path, sizes, **fields) -> dict:
    """Save ``reference`` randomised, convert it as jaxcnn's ``name`` and compare logits at
    each of ``sizes``; returns the meta."""
    meta, variables = convert.convert(source, name, save(randomize(reference), path), **fields)
    for size in sizes:
        assert relative_difference(meta, variables, reference, size) <= TOLERANCE, size
    return meta


def _vit_ti16(image_size: int) -> torch.nn.Module:
    """torchvision's ViT class at jaxcnn's vit_ti16 size (torchvision publishes weights only for
    B and L, whose tensors are named the same)."""
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=image_size,
        patch_size=16,
        num_layers=12,
        num_heads=3,
        hidden_dim=192,
        mlp_dim=768,
    )


def _he_init(model: torch.nn.Module) -> torch.nn.Module:
    """He-normal weights for a network without normalisation layers (AlexNet): PyTorch's
    default initialisation shrinks activations layer by layer until the logits are mostly
    biases and hardly depend on the input."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


def _narrow_classifier(model: torch.nn.Module, first: int, width: int = 64) -> torch.nn.Module:
    """VGG or AlexNet with its two 4096-wide hidden layers ``width`` wide (jaxcnn's
    ``classifier_width``): the same tensor names and layouts without the 100 million
    parameters that would make the test save, load and convert half a gigabyte."""
    classifier = model.classifier
    classifier[first] = torch.nn.Linear(classifier[first].in_features, width)
    classifier[first + 3] = torch.nn.Linear(width, width)
    classifier[6] = torch.nn.Linear(width, classifier[6].out_features)
    return model


# id: (jaxcnn model, reference builder, input sizes, expected meta fields). 224 is the
# reference size of each; 97 is odd (not a multiple of any stride).
TORCHVISION: dict[str, tuple[str, Callable[[], torch.nn.Module], tuple[int, ...], dict]] = {
    "resnet18": ("resnet18", lambda: tvm.resnet18(num_classes=10), (224, 97), {"num_classes": 10}),
    "vgg11_bn": (
        "vgg11_bn",
        lambda: _narrow_classifier(tvm.vgg11_bn(), 0),
        (224, 97),
        {"classifier_width": 64},
    ),
    "vgg11": ("vgg11", lambda: _narrow_classifier(tvm.vgg11(num_classes=10), 0), (97,), {}),
    "alexnet": (
        "alexnet",
        lambda: _he_init(_narrow_classifier(tvm.alexnet(), 1)),
        (224, 97),
        {"classifier_width": 64},
    ),
    "googlenet": (
        "googlenet",
        # As torchvision builds it for its pretrained weights.
        lambda: tvm.googlenet(aux_logits=True, transform_input=True, init_weights=True),
        (224, 97),
        {"transform_input": True, "aux_logits": True},
    ),
    "mobilenet_v2": ("mobilenet_v2", lambda: tvm.mobilenet_v2(), (224, 97), {}),
    "efficientnet_b0": (
        "efficientnet_b0",
        lambda: tvm.efficientnet_b0(),
        (224, 97),
        {"bn_epsilon": 1e-5, "bn_momentum": 0.9},
    ),
    "convnext_tiny": ("convnext_tiny", lambda: tvm.convnext_tiny(), (224, 97), {}),
    # A ViT takes only its own image size, a multiple of its 16-pixel patches (no odd size):
    # the other size is a second model whose position embeddings set image_size.
    "vit_ti16": ("vit_ti16", lambda: _vit_ti16(224), (224,), {"image_size": 224}),
    "vit_ti16_at_112": ("vit_ti16", lambda: _vit_ti16(112), (112,), {"image_size": 112}),
}


@pytest.mark.parametrize("case", list(TORCHVISION))
def test_torchvision_logits_match(case, tmp_path):
    name, build, sizes, fields = TORCHVISION[case]
    meta = check("torchvision", name, build(), tmp_path / f"{case}.pth", sizes)
    assert meta["model"] == name and meta["source"] == "torchvision"
    assert fields.items() <= meta["fields"].items()


# id: (jaxcnn model, timm model, sizes, expected meta fields). One size each: what depends on
# the input size is the architecture, tested at both sizes against torchvision above.
TIMM = {
    "resnet50": ("resnet50", "resnet50", (224,), {}),
    "efficientnet_b0": ("efficientnet_b0", "efficientnet_b0", (97,), {"bn_epsilon": 1e-5}),
    "mobilenetv2_100": ("mobilenet_v2", "mobilenetv2_100", (97,), {}),
    "convnext_tiny": ("convnext_tiny", "convnext_tiny", (97,), {}),
    "vit_small_patch16_224": ("vit_s16", "vit_small_patch16_224", (224,), {"image_size": 224}),
}


def test_googlenet_auxiliary_heads_match_and_are_optional(tmp_path):
    """The auxiliary heads (training only, so not in the logits above) against torchvision's
    on a random 14×14 feature map; a file without them converts to a model without them."""
    from jaxcnn.models.googlenet import InceptionAux

    reference = randomize(tvm.googlenet(aux_logits=True, transform_input=True, init_weights=True))
    meta, variables = convert.convert(
        "torchvision", "googlenet", save(reference, tmp_path / "g.pth")
    )
    for name, channels in (("aux1", 512), ("aux2", 528)):
        x = np.random.RandomState(channels).standard_normal((2, channels, 14, 14))
        x = x.astype(np.float32)
        with torch.no_grad():
            expected = getattr(reference, name)(torch.from_numpy(x)).numpy()
        head = {k: v[f"{name}_head"] for k, v in variables.items()}
        got = InceptionAux(num_classes=1000).apply(head, x.transpose(0, 2, 3, 1), train=False)
        assert np.abs(got - expected).max() / np.abs(expected).max() <= TOLERANCE

    without = tvm.googlenet(aux_logits=False, transform_input=True, init_weights=True)
    meta, variables = convert.convert("torchvision", "googlenet", save(without, tmp_path / "n.pth"))
    assert meta["fields"]["aux_logits"] is False and "aux1_head" not in variables["params"]


@pytest.mark.parametrize("case", list(TIMM))
def test_timm_safetensors_logits_match(case, tmp_path):
    timm = pytest.importorskip("timm", reason="needs the torch extra: pip install -e '.[torch]'")
    name, timm_name, sizes, fields = TIMM[case]
    reference = timm.create_model(timm_name, pretrained=False)
    meta = check("timm", name, reference, tmp_path / "model.safetensors", sizes)
    assert fields.items() <= meta["fields"].items()


def test_command_line_converts_a_width_variant_and_the_file_loads(tmp_path, capsys):
    """The CLI with a constructor field, then ``load_variables``: the same logits."""
    reference = randomize(tvm.mobilenet_v2(width_mult=0.5, num_classes=7))
    source, output = save(reference, tmp_path / "mnv2.pth"), tmp_path / "mnv2.msgpack"
    argv = ["--from", "torchvision", "--model", "mobilenet_v2", "--field", "width_mult=0.5"]
    assert cli.main([*argv, source, "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "width_mult=0.5" in printed
    meta, variables = convert.load_variables(str(output))
    assert meta["model"] == "mobilenet_v2"
    assert meta["fields"] == {"num_classes": 7, "width_mult": 0.5}
    assert set(variables) == {"params", "batch_stats"}
    assert relative_difference(meta, variables, reference, 97) <= TOLERANCE


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_wrong_files_name_the_first_tensor_that_does_not_fit(tmp_path):
    resnet18 = save(tvm.resnet18(), tmp_path / "resnet18.pth")
    resnet34 = save(tvm.resnet34(), tmp_path / "resnet34.pth")
    with pytest.raises(UserError) as error:  # a tensor of another shape
        convert.convert("torchvision", "resnet50", resnet18)
    assert "'layer1.0.conv1.weight' has shape (64, 64, 3, 3)" in _one_line(error)
    assert "stage1_block1/conv1/kernel of shape (1, 1, 64, 64)" in _one_line(error)
    with pytest.raises(UserError) as error:  # a missing tensor
        convert.convert("torchvision", "resnet34", resnet18)
    assert "no tensor 'layer1.2.conv1.weight'" in _one_line(error)
    with pytest.raises(UserError) as error:  # tensors left over
        convert.convert("torchvision", "resnet18", resnet34)
    assert "first 'layer1.2.conv1.weight'" in _one_line(error)
    with pytest.raises(UserError) as error:  # another family's file
        convert.convert("torchvision", "convnext_tiny", resnet18)
    assert "no tensor 'features.0.0.weight'" in _one_line(error)
    with pytest.raises(UserError) as error:
        convert.convert("torchvision", "resnet18", resnet18, width_mult=2)
    assert "no field 'width_mult'" in _one_line(error)


def test_bad_names_and_files_are_one_line(tmp_path, monkeypatch):
    resnet18 = save(tvm.resnet18(), tmp_path / "resnet18.pth")
    cases = {
        ("timm", "resnet9", resnet18): "unknown model 'resnet9'; from timm: convnext_base",
        ("timm", "googlenet", resnet18): "cannot import googlenet from timm (timm has no",
        ("torchvision", "resnet20", resnet18): "cannot import resnet20 from torchvision",
        ("caffe", "resnet18", resnet18): "unknown source 'caffe'; valid choices: timm, torchvision",
        ("torchvision", "resnet18", str(tmp_path / "none.pth")): "not found",
        ("torchvision", "resnet18", __file__): "is not a weights-only PyTorch state_dict",
        ("timm", "resnet18", str(tmp_path / "x.safetensors")): "not found",
    }
    for (source, model, path), expected in cases.items():
        with pytest.raises(UserError) as error:
            convert.convert(source, model, path)
        assert expected in _one_line(error), (source, model, path)
    whole_model = tmp_path / "model.pth"
    torch.save({"model": tvm.resnet18().state_dict(), "epoch": 3}, whole_model)
    with pytest.raises(UserError) as error:
        convert.convert("torchvision", "resnet18", str(whole_model))
    assert "holds a dict with entries model, epoch, not a state_dict" in _one_line(error)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if the extra were not installed
    with pytest.raises(UserError) as error:
        convert.convert("torchvision", "resnet18", resnet18)
    assert "needs torch: pip install -e '.[torch]'" in _one_line(error)
    with pytest.raises(UserError) as error:
        convert.load_variables(resnet18)
    assert "is not a msgpack file of jaxcnn variables" in _one_line(error)


def test_command_line_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    def fails(*argv: str) -> str:
        with pytest.raises(SystemExit) as done:
            cli.main(list(argv))
        assert done.value.code == 2
        return capsys.readouterr().err

    out = str(tmp_path / "out.msgpack")
    err = fails("--from", "torchvision", "--model", "lenet5", "x.pth", "--output", out)
    assert err.count("\n") == 1 and "from torchvision: alexnet, convnext_base," in err
    err = fails("--model", "resnet18", "x.pth", "--output", out)
    assert err == "error: the following arguments are required: --from\n"
    err = fails("--from", "timm", "--model", "resnet18", "x.pth", "--output", out, "--field", "w")
    assert err == "error: argument --field: 'w' is not NAME=VALUE\n"
