"""A depthwise convolution whose weight gradient on the CPU is assembled from 3x3 tiles.

Why: oneDNN (PyTorch's CPU convolutions) has a fast depthwise kernel for the
weight gradient of 3x3 filters only; a 5x5 depthwise weight gradient runs a
generic grouped-convolution kernel whose weights are blocked 16x16 per group
(oneDNN's verbose log), so most of its arithmetic is on padding.
EfficientNet-Lite0 has 5x5 depthwise convolutions in 9 of its 16 blocks, so
they take a large share of its backward pass on a CPU (measured on a 2-core
AVX-512 Xeon, one thread, batch 32, 1152 channels at 8x4: 17-32 ms for the 5x5
weight gradient depending on the machine's load, 1.5 ms for a 3x3 one, 12-13 ms
for the four 3x3 tiles below; a fully trained EfficientNet step at 64x32 1.14x
faster on a quiet machine, the demo's partly frozen one 1.04x;
benchmarks/README.md, "EfficientNet on the CPU").

The identity used: for a KxK filter, dL/dW[c, i, j] = sum over (b, h, w) of
dL/dY[b, c, h, w] * Xpad[b, c, s*h + i, s*w + j]. The 3x3 block of dW starting
at (a, b) is the weight gradient of a 3x3 depthwise convolution without padding
on the window Xpad[:, :, a:, b:]; overlapping tiles cover any K >= 3 and agree
on their overlap. The input gradient and the forward pass are the stock ones.
The result equals the stock gradient up to fp32 summation order (exact in fp64,
tested).

Used only where it was measured to help: training in fp32 (no autocast) on a CPU
whose PyTorch kernels run at the AVX-512 level, grad enabled, the weight trained,
kernel > 3, stride 1 (with stride 2 the strided windows made the tiles 2x slower
than the stock kernel at 144 channels, 32x16); never while exporting (tracing)
or compiling: those see a plain conv2d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import exporting

TILE = 3
# CPU capability levels (torch.backends.cpu.get_cpu_capability()) where the tiles were measured faster
MEASURED_FASTER_ON = ("AVX512",)


def tile_starts(kernel: int) -> list[int]:
    """Top-left offsets of 3x3 tiles covering 0..kernel-1 (the last one flush with the end)."""
    return sorted({*range(0, kernel - TILE + 1, TILE), kernel - TILE})


def depthwise_weight_grad(grad_out: torch.Tensor, x: torch.Tensor, weight_shape: torch.Size, stride: int,
                          padding: int) -> torch.Tensor:
    """dL/dW (C, 1, K, K) of a depthwise convolution from 3x3 tiles.

    Args:
        grad_out: dL/dY, (B, C, Ho, Wo).
        x: the convolution's input, (B, C, H, W).
        weight_shape: (C, 1, K, K), K >= 3.
        stride, padding: the convolution's (square) stride and zero padding.
    """
    channels, kernel = x.shape[1], weight_shape[-1]
    ho, wo = grad_out.shape[2:]
    padded = F.pad(x, (padding, padding, padding, padding))
    span_h, span_w = stride * (ho - 1) + TILE, stride * (wo - 1) + TILE
    tile_weight = x.new_empty(channels, 1, TILE, TILE)  # only its shape is read
    grad = x.new_empty(weight_shape)
    for top in tile_starts(kernel):
        for left in tile_starts(kernel):
            window = padded[:, :, top:top + span_h, left:left + span_w]
            _, tile, _ = torch.ops.aten.convolution_backward(
                grad_out, window, tile_weight, None, (stride, stride), (0, 0), (1, 1), False, (0, 0), channels,
                (False, True, False))
            grad[:, :, top:top + TILE, left:left + TILE] = tile
    return grad


class _TiledDepthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride: int, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad_out, x, weight, None, (s, s), (p, p), (1, 1), False,
                                                         (0, 0), x.shape[1], (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(grad_out, x, weight.shape, s, p)
        return grad_x, grad_w, None, None


def _tiles_help() -> bool:
    return torch.backends.cpu.get_cpu_capability() in MEASURED_FASTER_ON


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False)`` (same
    parameter names, so checkpoints load unchanged) with the tiled weight gradient on the CPU (see the module)."""

    def __init__(self, channels: int, kernel: int, stride: int = 1):
        super().__init__(channels, channels, kernel, stride=stride, padding=kernel // 2, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._tiled(x):
            return _TiledDepthwise.apply(x, self.weight, self.stride[0], self.padding[0])
        return super().forward(x)

    def _tiled(self, x: torch.Tensor) -> bool:
        return (self.kernel_size[0] > TILE and self.stride[0] == 1 and x.device.type == "cpu"
                and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                and torch.is_grad_enabled() and self.weight.requires_grad and not exporting()
                and not torch.compiler.is_compiling() and _tiles_help())
