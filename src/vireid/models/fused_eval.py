"""Eval-only CPU runner for torchvision-style ResNet slices with fused oneDNN convolutions.

Each BN is folded into its convolution, and the ReLU after it, or the residual add and ReLU that end a
block, run inside the convolution as oneDNN post-ops (``torch.ops.mkldnn._convolution_pointwise``, the
kernels torch.compile's CPU backend calls), in channels_last. Why: IDKL's test path spends its time in
these convolutions and in the passes between them; fused, batch 32 runs about 1.3x the rate of
torch.fx's ``optimize_for_inference`` (benchmarks/README.md). Features differ from the eager modules by
rounding (folded BN). A snapshot: the weights are read when the runner is built.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .backbones.resnet import BasicBlock, Bottleneck, ResNet


class _Conv:
    """A convolution with its BN folded in, ready for oneDNN (channels_last weight)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d) or isinstance(conv.padding, str):
            raise TypeError(f"expected Conv2d (numeric padding) + BatchNorm2d, got {type(conv).__name__} + "
                            f"{type(bn).__name__}")
        with torch.no_grad():
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight,
                                        bn.bias)
        self.weight = w.detach().contiguous(memory_format=torch.channels_last)
        self.bias = b.detach()
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)

    def __call__(self, x: torch.Tensor, relu: bool) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args,
                                                       "relu" if relu else "none", [], "")

    def add_relu_into(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """relu(conv(x) + skip), written into ``skip``."""
        return torch.ops.mkldnn._convolution_pointwise_(skip, x, self.weight, self.bias, *self.args, "add", 1.0,
                                                        "relu", [], "")


class FusedResNetEval:
    """``runner(images)`` = the given ResNet slices run in order (eval-mode BN), as fused oneDNN convolutions.

    Raises TypeError at construction for anything else (a head, another block type or backbone)."""

    def __init__(self, *parts: nn.Module):
        self.stem = None
        self.blocks: list[tuple[list[_Conv], _Conv | None]] = []
        for i, part in enumerate(parts):
            if not isinstance(part, ResNet) or part.fc is not None:
                raise TypeError(f"FusedResNetEval runs headless vireid ResNet slices, got {type(part).__name__}")
            if "stem" in part.parts:
                if i or self.blocks:
                    raise TypeError("a ResNet stem can only come first")
                self.stem = (_Conv(part.conv1, part.bn1), part.maxpool)
            for name in part.parts:
                if name != "stem":
                    self.blocks += [self._block(block) for block in getattr(part, name)]

    @staticmethod
    def _block(block: nn.Module) -> tuple[list[_Conv], _Conv | None]:
        if isinstance(block, Bottleneck):
            convs = [_Conv(block.conv1, block.bn1), _Conv(block.conv2, block.bn2), _Conv(block.conv3, block.bn3)]
        elif isinstance(block, BasicBlock):
            convs = [_Conv(block.conv1, block.bn1), _Conv(block.conv2, block.bn2)]
        else:
            raise TypeError(f"unknown ResNet block {type(block).__name__}")
        down = block.downsample
        if down is not None and (not isinstance(down, nn.Sequential) or len(down) != 2):
            raise TypeError(f"expected a (conv, BN) downsample, got {down}")
        return convs, None if down is None else _Conv(down[0], down[1])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            conv, pool = self.stem
            x = pool(conv(images.contiguous(memory_format=torch.channels_last), relu=True))
        else:  # the first block's add writes into its input: never into the caller's tensor
            x = images.clone(memory_format=torch.channels_last)
        for convs, down in self.blocks:
            skip = x if down is None else down(x, relu=False)
            for conv in convs[:-1]:
                x = conv(x, relu=True)
            x = convs[-1].add_relu_into(x, skip)
        return x
