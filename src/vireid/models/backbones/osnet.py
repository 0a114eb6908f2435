"""OSNet, the omni-scale re-ID backbone (Zhou et al., ICCV 2019), written from the paper.

Why: a ResNet-18 is ~11 M parameters and ~0.6 GMAC at 256x128; OSNet x1.0 is
~2.2 M and ~1 GMAC, x0.25 ~0.2 M parameters, light enough for a CPU demo or an
edge device, and built for re-ID (features at several scales in one block).

Layout (paper Table 1): conv1 7x7/2 + max-pool, conv2 and conv3 (two
omni-scale bottlenecks each, then a 1x1 conv + 2x2 average-pool transition),
conv4 (two bottlenecks), conv5 (1x1 conv). Widths 64/256/384/512 times the
width multiplier. A bottleneck: 1x1 conv to out/4 channels, four streams of
1..4 "lite" 3x3 layers (1x1 conv, then a depthwise 3x3, BN, ReLU), a shared
channel gate (global pool, 1x1 conv to C/16, ReLU, 1x1 conv back, sigmoid)
weighting each stream before they are summed, a 1x1 conv + BN back to ``out``
channels and a residual (1x1 conv + BN projection when the width changes).

Parameter names follow the torchreid release (conv1.conv, conv2.0.conv2a.conv1,
conv2.0.gate.fc1, conv2.2.0.conv, conv5.conv, fc.0, classifier, ...), so its
published ImageNet weights load with
:func:`vireid.models.backbones.weights.load_pretrained`.

Split points match the ResNet's: ``parts`` from ("stem", "layer1", "layer2",
"layer3", "layer4") = (conv1 + max-pool, conv2, conv3, conv4, conv5), so the
two-stream stem of AGW and IDKL's shared trunk / two branches work unchanged.
The output stride is 16 (ResNet's ``last_stride=1`` layout).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_backbone

PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")
WIDTHS = {"x1_0": 1.0, "x0_75": 0.75, "x0_5": 0.5, "x0_25": 0.25}
BASE_CHANNELS = (64, 256, 384, 512)
PART_NAMES = {"stem": "conv1", "layer1": "conv2", "layer2": "conv3", "layer3": "conv4", "layer4": "conv5"}


class ConvLayer(nn.Module):
    """Conv + BN + ReLU (torchreid: ``ConvLayer`` for conv1, ``Conv1x1`` for 1x1 convolutions)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


class LiteConv3x3(nn.Module):
    """Pointwise then depthwise 3x3 conv, BN, ReLU: a 3x3 receptive field at ~1/9 of a full conv's cost."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, groups=cout)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Unified aggregation gate: per-channel weights in (0, 1) from the globally pooled stream."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x):
        w = self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(w)


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck: streams of 1-4 lite 3x3 layers (receptive fields 3, 5, 7, 9)."""

    def __init__(self, cin: int, cout: int, reduction: int = 4):
        super().__init__()
        mid = cout // reduction
        self.conv1 = ConvLayer(cin, mid, 1)
        self.conv2a = LiteConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LiteConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LiteConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LiteConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)  # one gate shared by the four streams
        self.conv3 = ConvLayer(mid, cout, 1, relu=False)
        self.downsample = ConvLayer(cin, cout, 1, relu=False) if cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.conv1(x)
        y = self.gate(self.conv2a(y)) + self.gate(self.conv2b(y)) + self.gate(self.conv2c(y)) + \
            self.gate(self.conv2d(y))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(y) + skip)


def _stage(cin: int, cout: int, blocks: int, reduce: bool) -> nn.Sequential:
    layers = [OSBlock(cin, cout)] + [OSBlock(cout, cout) for _ in range(blocks - 1)]
    if reduce:  # transition: 1x1 conv, then halve the resolution
        layers.append(nn.Sequential(ConvLayer(cout, cout, 1), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


class OSNet(nn.Module):
    """OSNet trunk, or a slice of one (see the module docstring for ``parts``).

    Args:
        width: "x1_0", "x0_75", "x0_5" or "x0_25" (channel multiplier).
        parts: the parts to build, an ordered subset of :data:`PARTS`.
        num_classes: > 0 adds torchreid's head (global average pool, ``fc`` = Linear 512 + BN + ReLU,
            ``classifier``), for ImageNet-style use; re-ID models use the map (0, the default).
        last_stride: accepted for symmetry with the ResNet; must be 1 (OSNet's output stride is 16).
    """

    def __init__(self, width: str = "x1_0", parts: tuple[str, ...] = PARTS, num_classes: int = 0,
                 last_stride: int = 1, blocks: tuple[int, int, int] = (2, 2, 2)):
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"unknown OSNet width {width!r}; expected one of {', '.join(WIDTHS)}")
        if last_stride != 1:
            raise ValueError(f"OSNet's output stride is fixed at 16 (last_stride 1), got last_stride={last_stride}")
        unknown = [p for p in parts if p not in PARTS]
        if unknown or not parts or list(parts) != [p for p in PARTS if p in parts]:
            raise ValueError(f"parts must be an ordered, non-empty subset of {PARTS}, got {parts}")
        self.width, self.parts = width, tuple(parts)
        c = [int(round(ch * WIDTHS[width])) for ch in BASE_CHANNELS]
        builders = {
            "stem": lambda: ConvLayer(3, c[0], 7, stride=2, padding=3),
            "layer1": lambda: _stage(c[0], c[1], blocks[0], reduce=True),
            "layer2": lambda: _stage(c[1], c[2], blocks[1], reduce=True),
            "layer3": lambda: _stage(c[2], c[3], blocks[2], reduce=False),
            "layer4": lambda: ConvLayer(c[3], c[3], 1),
        }
        for part in self.parts:
            setattr(self, PART_NAMES[part], builders[part]())
        if "stem" in self.parts:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stage_channels = (c[1], c[2], c[3], c[3])
        self.out_channels = c[0] if self.parts[-1] == "stem" else self.stage_channels[PARTS.index(self.parts[-1]) - 1]
        self.fc = self.classifier = None
        if num_classes:
            self.fc = nn.Sequential(nn.Linear(self.out_channels, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True))
            self.classifier = nn.Linear(512, num_classes)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def stage(self, part: str) -> nn.Module:
        """The module of ``part`` ("layer1" -> conv2, ...)."""
        return getattr(self, PART_NAMES[part])

    def unbuilt_prefixes(self) -> tuple[str, ...]:
        """Checkpoint key prefixes of the parts this slice does not build (to ignore when loading)."""
        out = tuple(PART_NAMES[p] + "." for p in PARTS if p not in self.parts)
        return out + (() if self.fc is not None else ("fc.", "classifier."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = self.stage(part)(x)
            if part == "stem":
                x = self.maxpool(x)
        if self.fc is None:
            return x
        return self.classifier(self.fc(x.mean(dim=(2, 3))))


def osnet(width: str = "x1_0", **kwargs) -> OSNet:
    return OSNet(width, **kwargs)


@register_backbone(*(f"osnet_{w}" for w in WIDTHS), imagenet={"osnet_x1_0": "osnet_x1_0.imagenet"})
def osnet_trunk(name: str, depth: int = 50, **kwargs) -> OSNet:
    """``backbone: osnet_x1_0`` (x0_75, x0_5, x0_25): the width is in the name; ``depth`` is not used."""
    return osnet(name.removeprefix("osnet_"), **kwargs)
