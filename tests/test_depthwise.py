"""models/backbones/depthwise.py: the tiled weight gradient is the depthwise convolution's gradient, and the module
falls back to the stock convolution wherever the tiles are not wanted."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vireid.models.backbones import depthwise
from vireid.models.backbones.depthwise import DepthwiseConv2d, _TiledDepthwise, tile_starts


@pytest.mark.parametrize("kernel, starts", [(3, [0]), (5, [0, 2]), (6, [0, 3]), (7, [0, 3, 4])])
def test_tiles_cover_the_kernel(kernel, starts):
    assert tile_starts(kernel) == starts
    covered = {i for s in starts for i in range(s, s + 3)}
    assert covered == set(range(kernel))


@pytest.mark.parametrize("shape, kernel, stride", [((3, 8, 9, 7), 5, 1), ((3, 8, 9, 7), 5, 2), ((2, 4, 8, 4), 5, 2),
                                                    ((2, 6, 5, 6), 7, 1), ((2, 5, 11, 6), 3, 2)])
def test_gradients_equal_the_stock_convolution_in_fp64(shape, kernel, stride):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(shape[1], 1, kernel, kernel, dtype=torch.float64, generator=gen, requires_grad=True)
    stock = F.conv2d(x, w, None, stride, kernel // 2, 1, shape[1])
    upstream = torch.randn(stock.shape, dtype=torch.float64, generator=gen)
    want = torch.autograd.grad(stock, (x, w), upstream)
    tiled = _TiledDepthwise.apply(x, w, stride, kernel // 2)
    got = torch.autograd.grad(tiled, (x, w), upstream)
    assert torch.equal(tiled, stock)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-12)


def test_module_is_a_drop_in_conv2d(monkeypatch):
    """Same parameter names and shapes as the nn.Conv2d it replaces; in fp32 channels_last the same gradient up to
    summation order (the tiles forced on, whatever this CPU is)."""
    monkeypatch.setattr(depthwise, "_tiles_help", lambda: True)
    torch.manual_seed(0)
    plain = nn.Conv2d(24, 24, 5, stride=1, padding=2, groups=24, bias=False)
    tiled = DepthwiseConv2d(24, 5, 1)
    assert tiled.state_dict().keys() == plain.state_dict().keys()
    tiled.load_state_dict(plain.state_dict())
    x = torch.randn(4, 24, 12, 6).to(memory_format=torch.channels_last)
    assert tiled._tiled(x)
    g = torch.randn(4, 24, 12, 6)
    (plain(x) * g).sum().backward()
    (tiled(x) * g).sum().backward()
    torch.testing.assert_close(tiled.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-5)


def test_stock_path_where_the_tiles_are_not_wanted(monkeypatch):
    monkeypatch.setattr(depthwise, "_tiles_help", lambda: True)
    conv = DepthwiseConv2d(8, 5, 1)
    x = torch.randn(2, 8, 6, 4)
    assert conv._tiled(x)
    with torch.no_grad():
        assert not conv._tiled(x)
    assert not DepthwiseConv2d(8, 3, 1)._tiled(x)  # 3x3: oneDNN's own kernel is the fast one
    assert not DepthwiseConv2d(8, 5, 2)._tiled(x)  # strided windows: slower than the stock kernel
    conv.weight.requires_grad_(False)  # frozen (model.frozen_blocks)
    assert not conv._tiled(x)
    conv.weight.requires_grad_(True)
    seen = []
    conv.register_forward_hook(lambda m, i, o: seen.append(m._tiled(i[0])))
    torch.jit.trace(conv, x, check_trace=False)  # an export records the plain convolution
    assert seen == [False]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv._tiled(x)
    assert not conv._tiled(x.double())
    monkeypatch.setattr(depthwise, "_tiles_help", lambda: False)  # a CPU where they were not measured
    assert not conv._tiled(x)


def test_efficientnet_uses_it_for_its_depthwise_convolutions():
    from vireid.models.backbones.efficientnet import EfficientNetLite

    net = EfficientNetLite(parts=("stem", "layer1", "layer2"))
    kinds = {type(m._depthwise_conv) for m in net.modules() if hasattr(m, "_depthwise_conv")}
    assert kinds == {DepthwiseConv2d}
