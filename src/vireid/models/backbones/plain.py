"""The plain CNN as a backbone: six 3x3 convolutions in the five split points of the ResNet.

Why: on a CPU budget of minutes, steps are what a from-scratch model lacks (a ResNet-18 at 64x32 does
~25 training images/s on one core, this ~300), so the plain network is also offered as the trunk of
every method -- IDKL's shared/specific split included -- to compare the methods' losses on equal
footing with the plain baseline (``docs/learning.md``).

Parts: "stem" (3x3 conv/2, 3x3 conv, 2x2 max-pool; ``width`` channels), "layer1" (conv to 2x, max-pool),
"layer2" (conv to 4x, max-pool), "layer3" (conv to 8x), "layer4" (conv 8x to 8x). Output stride 16.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .registry import register_backbone

PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")
NAME = re.compile(r"^plain_w(\d+)$")


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class PlainTrunk(nn.Module):
    """The plain CNN's trunk, or a slice of it (``parts`` as for the ResNet)."""

    def __init__(self, width: int = 32, parts: tuple[str, ...] = PARTS, last_stride: int = 1):
        super().__init__()
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"plain CNN width must be a positive int, got {width!r}")
        if last_stride != 1:
            raise ValueError(f"the plain CNN's output stride is fixed at 16 (last_stride 1), got {last_stride}")
        unknown = [p for p in parts if p not in PARTS]
        if unknown or not parts or list(parts) != [p for p in PARTS if p in parts]:
            raise ValueError(f"parts must be an ordered, non-empty subset of {PARTS}, got {parts}")
        self.parts = tuple(parts)
        w = width
        builders = {
            "stem": lambda: nn.Sequential(conv_bn_relu(3, w, 2), conv_bn_relu(w, w), nn.MaxPool2d(2)),
            "layer1": lambda: nn.Sequential(conv_bn_relu(w, 2 * w), nn.MaxPool2d(2)),
            "layer2": lambda: nn.Sequential(conv_bn_relu(2 * w, 4 * w), nn.MaxPool2d(2)),
            "layer3": lambda: conv_bn_relu(4 * w, 8 * w),
            "layer4": lambda: conv_bn_relu(8 * w, 8 * w),
        }
        for part in self.parts:
            setattr(self, part, builders[part]())
        self.stage_channels = (2 * w, 4 * w, 8 * w, 8 * w)
        self.out_channels = w if self.parts[-1] == "stem" else self.stage_channels[PARTS.index(self.parts[-1]) - 1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stage(self, part: str) -> nn.Module:
        return getattr(self, part)

    def unbuilt_prefixes(self) -> tuple[str, ...]:
        return tuple(p + "." for p in PARTS if p not in self.parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = getattr(self, part)(x)
        return x


def plain_width(name: str) -> int | None:
    """32 for "plain_w32"; None when ``name`` is not a plain-CNN backbone name."""
    match = NAME.match(name)
    return int(match.group(1)) if match else None


@register_backbone("plain_w<width>", pattern=NAME.pattern)
def plain_trunk(name: str, depth: int = 50, **kwargs) -> PlainTrunk:
    """``backbone: plain_w32``: the width is in the name; ``depth`` is not used."""
    return PlainTrunk(plain_width(name), **kwargs)
