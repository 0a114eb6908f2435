"""ResNet-18/34/50 written from the paper (He et al. 2016), torchvision-compatible names.

Parameter names match torchvision's ImageNet checkpoints (conv1, bn1,
layer1.0.conv1, ..., layer2.0.downsample.0/1, fc), so :func:`~vireid.models.backbones.weights.load_pretrained` can
read ``resnet50-*.pth`` or a safetensors copy without torchvision. Stride sits
on the 3x3 conv (the "v1.5" layout torchvision uses).

Split points for multi-branch models: build only some ``parts`` of a ResNet,
e.g. a shared stem+layer1+layer2 and several layer3+layer4 branches, each
loadable from the same ImageNet checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_backbone
from .weights import require_resnet_weights

PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")


def check_slice(parts, last_stride: int) -> tuple[str, ...]:
    """``parts`` as a tuple, after checking it is an ordered, non-empty subset of PARTS and last_stride is 1 or 2."""
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts or list(parts) != [p for p in PARTS if p in parts]:
        raise ValueError(f"parts must be an ordered, non-empty subset of {PARTS}, got {parts}")
    return tuple(parts)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + skip)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * 4)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + skip)


class ResNet(nn.Module):
    """ResNet trunk, or a slice of one.

    ``parts`` names what to build, in order, from ("stem", "layer1", ...,
    "layer4"); ``forward`` runs the built parts in order. So
    ``resnet50(parts=("stem", "layer1", "layer2"))`` is a shared trunk and
    ``resnet50(parts=("layer3", "layer4"), last_stride=1)`` one branch on top of
    it, each with torchvision names for its own parameters.
    ``last_stride=1`` keeps layer4 at 1/16 resolution (common in ReID).
    ``num_classes > 0`` adds average pooling and ``fc``; otherwise ``forward``
    returns the last map. Works with channels_last inputs and weights.
    """

    def __init__(self, block, layers, last_stride: int = 2, num_classes: int = 0,
                 parts: tuple[str, ...] = PARTS, zero_init_residual: bool = False):
        super().__init__()
        self.parts = check_slice(parts, last_stride)
        if "stem" in parts:
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = 64
        strides = (1, 2, 2, last_stride)
        for i, name in enumerate(PARTS[1:]):
            layer = self._make_layer(block, 64 * 2 ** i, layers[i], strides[i], build=name in parts)
            if layer is not None:
                setattr(self, name, layer)
        self.stage_channels = tuple(64 * 2 ** i * block.expansion for i in range(4))
        # the channels of the last part built (a slice ending at layer3 gives layer3's, not layer4's)
        self.out_channels = self.stage_channels[PARTS.index(parts[-1]) - 1] if parts[-1] != "stem" else 64
        self.fc = nn.Linear(self.out_channels, num_classes) if num_classes else None
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, width: int, blocks: int, stride: int, build: bool = True):
        cin, self.inplanes = self.inplanes, width * block.expansion
        if not build:
            return None
        downsample = None
        if stride != 1 or cin != self.inplanes:
            downsample = nn.Sequential(conv1x1(cin, self.inplanes, stride), nn.BatchNorm2d(self.inplanes))
        layers = [block(cin, width, stride, downsample)]
        layers += [block(self.inplanes, width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            if zero_init_residual and isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif zero_init_residual and isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def stage(self, part: str) -> nn.Module:
        """The module of ``part`` ("layer1" .. "layer4"), the same call as on an OSNet."""
        return getattr(self, part)

    def unbuilt_prefixes(self) -> tuple[str, ...]:
        """Checkpoint key prefixes of the parts this slice does not build (to ignore when loading)."""
        prefixes = {"stem": ("conv1.", "bn1."), "layer1": ("layer1.",), "layer2": ("layer2.",),
                    "layer3": ("layer3.",), "layer4": ("layer4.",)}
        out = tuple(p for part in PARTS if part not in self.parts for p in prefixes[part])
        return out + (() if self.fc is not None else ("fc.",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "stem" in self.parts:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.parts:
            if name != "stem":
                x = getattr(self, name)(x)
        if self.fc is None:
            return x
        return self.fc(torch.flatten(x.mean(dim=(2, 3)), 1))


def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


DEPTHS = {18: resnet18, 34: resnet34, 50: resnet50}


def build_resnet(depth: int, **kwargs) -> ResNet:
    if depth not in DEPTHS:
        raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(DEPTHS)}")
    return DEPTHS[depth](**kwargs)


@register_backbone("resnet", sized_by_depth=True, require_weights=require_resnet_weights,
                   imagenet={"resnet18": "resnet18.tv_in1k", "resnet34": "resnet34.tv_in1k",
                             "resnet50": "resnet50.tv_in1k"})
def resnet_trunk(name: str, depth: int = 50, **kwargs) -> ResNet:
    """``backbone: resnet``: the size is ``model.depth`` (18, 34, 50)."""
    return build_resnet(depth, **kwargs)
