"""PyTorch equivalents of the benchmarked jaxcnn models: the same layers, shapes and counts.

Each builder mirrors the jaxcnn module of the same name layer for layer (bias-free
convolutions before BatchNorm, option-A shortcuts in the CIFAR ResNets, torchvision-style
EfficientNet MBConv blocks, pre-LayerNorm ViT encoder blocks), so that the parameter counts
match exactly; ``benchmarks.train_step`` checks that before it compares speeds. The models
run in channels-last memory format, PyTorch's fast layout for convolutions on CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
    )


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers; option-A (zero-padded) or option-B (projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.conv2 = _conv_bn(cout, cout, 3, 1)
        self.stride, self.pad = stride, cout - cin
        project = stride != 1 or cin != cout
        self.projection = _conv_bn(cin, cout, 1, stride) if project and shortcut == "B" else None
        self.zero_pad = project and shortcut == "A"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        if self.projection is not None:
            x = self.projection(x)
        elif self.zero_pad:
            x = x[:, :, :: self.stride, :: self.stride]
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(x + y)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 conv-BN with 4× expansion (ResNet v1.5)."""

    def __init__(self, cin: int, filters: int, stride: int) -> None:
        super().__init__()
        out = 4 * filters
        self.body = nn.Sequential(
            _conv_bn(cin, filters, 1, 1),
            nn.ReLU(),
            _conv_bn(filters, filters, 3, stride),
            nn.ReLU(),
            _conv_bn(filters, out, 1, 1),
        )
        self.projection = _conv_bn(cin, out, 1, stride) if stride != 1 or cin != out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.projection is None else self.projection(x)
        return F.relu(shortcut + self.body(x))


class ResNet(nn.Module):
    """CIFAR ResNet-(6n+2) (``cifar_depth``) or ImageNet ResNet (``stage_sizes``)."""

    def __init__(
        self,
        num_classes: int,
        stage_sizes: tuple[int, ...],
        widths: tuple[int, ...],
        *,
        bottleneck: bool = False,
        small_images: bool = False,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        stem = [_conv_bn(3, widths[0], 3, 1)] if small_images else [_conv_bn(3, widths[0], 7, 2)]
        stem.append(nn.ReLU())
        if not small_images:
            stem.append(nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], widths[0]
        for stage, (n, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                if bottleneck:
                    blocks.append(Bottleneck(cin, width, stride))
                    cin = 4 * width
                else:
                    blocks.append(BasicBlock(cin, width, stride, shortcut))
                    cin = width
        self.features = nn.Sequential(*stem, *blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class MBConv(nn.Module):
    """Inverted residual with squeeze-and-excitation and stochastic depth (EfficientNet)."""

    def __init__(
        self, cin: int, cout: int, expansion: int, kernel: int, stride: int, drop_path: float
    ) -> None:
        super().__init__()
        expanded = cin * expansion
        layers: list[nn.Module] = []
        if expanded != cin:
            layers += [_conv_bn(cin, expanded, 1, 1), nn.SiLU()]
        layers += [_conv_bn(expanded, expanded, kernel, stride, groups=expanded), nn.SiLU()]
        self.expand_depthwise = nn.Sequential(*layers)
        self.se_reduce = nn.Conv2d(expanded, max(1, cin // 4), 1)
        self.se_expand = nn.Conv2d(max(1, cin // 4), expanded, 1)
        self.project = _conv_bn(expanded, cout, 1, 1)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand_depthwise(x)
        scale = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        y = self.project(y * scale)
        if not self.residual:
            return y
        if self.training and self.drop_path:
            keep = torch.rand(y.shape[0], 1, 1, 1, device=y.device) >= self.drop_path
            y = y * keep / (1 - self.drop_path)
        return x + y


class EfficientNetB0(nn.Module):
    """EfficientNet-B0 as jaxcnn.models.efficientnet builds it (width and depth 1.0)."""

    STAGES = (
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    )

    def __init__(self, num_classes: int, dropout: float = 0.2, drop_path: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2), nn.SiLU()]
        total = sum(n for *_, n in self.STAGES)
        cin, block_id = 32, 0
        for expansion, kernel, stride, cout, n in self.STAGES:
            for b in range(n):
                rate = drop_path * block_id / total
                layers.append(MBConv(cin, cout, expansion, kernel, stride if b == 0 else 1, rate))
                cin, block_id = cout, block_id + 1
        layers += [_conv_bn(cin, 4 * cin, 1, 1), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x).mean((2, 3))))


class ViT(nn.Module):
    """Vision Transformer: patch embedding, class token, pre-LayerNorm encoder blocks."""

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image_size // patch) ** 2 + 1
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        layer = lambda: nn.TransformerEncoderLayer(  # noqa: E731
            dim, heads, mlp_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.Sequential(*[layer() for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        return self.head(self.norm(self.encoder(x))[:, 0])


class AirBench(nn.Module):
    """airbench94 (jaxcnn/models/airbench.py): 2×2 whitening conv, three conv → max pool →
    BatchNorm (bias only) → GELU → conv → BatchNorm → GELU groups, global max pool, linear."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (64, 256, 256)) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)
        layers, cin = [], 24
        for width in widths:
            layers += [
                nn.Conv2d(cin, width, 3, padding=1, bias=False),
                nn.MaxPool2d(2),
                _BiasNorm(width),
                nn.GELU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                _BiasNorm(width),
                nn.GELU(),
            ]
            cin = width
        self.groups = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        return self.head(torch.amax(x, dim=(2, 3))) / 9


class _BiasNorm(nn.Module):
    """BatchNorm with a learned bias and no scale (momentum 0.6 in jaxcnn's convention)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.bias.view(1, -1, 1, 1)


def _cifar_resnet(depth: int) -> Callable[[int], nn.Module]:
    n = (depth - 2) // 6
    return lambda classes: ResNet(classes, (n, n, n), (16, 32, 64), small_images=True, shortcut="A")


BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "resnet20": _cifar_resnet(20),
    "resnet18_cifar": lambda classes: ResNet(
        classes, (2, 2, 2, 2), (64, 128, 256, 512), small_images=True
    ),
    "resnet50": lambda classes: ResNet(classes, (3, 4, 6, 3), (64, 128, 256, 512), bottleneck=True),
    "efficientnet_b0": lambda classes: EfficientNetB0(classes),
    "vit_s16": lambda classes: ViT(classes, 224, 16, 384, 12, 6, 1536),
    "airbench94": lambda classes: AirBench(classes),
}


def build(name: str, num_classes: int) -> nn.Module:
    """The PyTorch twin of benchmark case ``name`` (a key of :data:`BUILDERS`), channels-last."""
    return BUILDERS[name](num_classes).to(memory_format=torch.channels_last)


def make_train_step(
    model: nn.Module,
    batch_size: int,
    image_shape: tuple[int, int, int],
    num_classes: int,
    dtype: str = "float32",
    phase: Callable[[str], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Callable[[], None]:
    """One SGD-momentum step on a fixed random batch, like the jaxcnn step it is compared to;
    ``dtype='bfloat16'`` runs forward and loss under ``torch.autocast('cpu', torch.bfloat16)``
    (float32 weights and updates, bfloat16 compute: what jaxcnn's ``model.dtype`` does).
    ``phase(name)`` wraps the forward, backward and update (a profiler marks them with it)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    height, width, channels = image_shape
    images = torch.randn(batch_size, channels, height, width).to(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,))
    bfloat16 = dtype == "bfloat16"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with phase("forward"), torch.autocast("cpu", torch.bfloat16, enabled=bfloat16):
            loss = F.cross_entropy(model(images), labels)
        with phase("backward"):
            loss.backward()
        with phase("update"):
            optimizer.step()

    return step


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
