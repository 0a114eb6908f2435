"""The shared re-ID network: non-local block against its equation, per-sample stem routing, outputs, gradients."""

import pytest
import torch

from vireid.models import MODELS
from vireid.models.reid_net import Backbone, NonLocal, ReIDNet


def test_non_local_matches_its_equation():
    torch.manual_seed(0)
    block = NonLocal(8, width="half").eval()
    torch.nn.init.normal_(block.out[1].weight)  # not zero, so the non-local term shows
    torch.nn.init.normal_(block.out[1].bias)
    x = torch.randn(2, 8, 3, 2)
    n = 6

    def conv(c, t):  # 1x1 conv by hand
        return torch.einsum("oi,bihw->bohw", c.weight[:, :, 0, 0], t) + c.bias[None, :, None, None]

    th, ph, g = (conv(c, x).flatten(2) for c in (block.theta, block.phi, block.g))  # (B, c, N)
    y = torch.zeros_like(g)
    for i in range(n):
        for j in range(n):
            f_ij = (th[:, :, i] * ph[:, :, j]).sum(1) / n  # dot product / N, no softmax
            y[:, :, i] += f_ij[:, None] * g[:, :, j]
    expected = x + block.out(y.reshape(2, block.inner, 3, 2))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_non_local_width_quirk_and_identity_at_init():
    assert NonLocal(512).inner == 1 and NonLocal(512, "half").inner == 256 and NonLocal(512, 7).inner == 7
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(NonLocal(4)(x), x)  # zero-initialised output BN
    with pytest.raises(ValueError, match="'agw', 'half' or a positive int"):
        NonLocal(4, "third")


def test_two_stream_routes_each_sample_to_its_stem():
    torch.manual_seed(0)
    net = Backbone(depth=18, two_stream=True).eval()
    x = torch.randn(4, 3, 32, 16)
    mixed = torch.tensor([1, 0, 0, 1])
    out = net.stem(x, mixed)
    torch.testing.assert_close(out[[1, 2]], net.stems[0](x[[1, 2]]))
    torch.testing.assert_close(out[[0, 3]], net.stems[1](x[[0, 3]]))
    assert not torch.allclose(net.stems[0](x), net.stems[1](x))  # two separately initialised stems
    with pytest.raises(ValueError, match="per-sample modality tensor of shape \\(4,\\)"):
        net(x)
    with pytest.raises(ValueError, match="modality values must be 0"):
        net(x, torch.tensor([0, 1, 2, 0]))


def test_non_local_placement_follows_agw_and_rejects_too_many():
    net = Backbone(depth=18, non_local=(0, 2, 1, 0))
    assert sorted(net.non_local) == ["layer2", "layer3"]
    assert len(net.non_local["layer2"]) == 2 and net.non_local["layer3"][0].theta.in_channels == 256
    with pytest.raises(ValueError, match="3 blocks after layer3, which has only 2"):
        Backbone(depth=18, non_local=(0, 2, 3, 0))
    with pytest.raises(ValueError, match="4 non-negative counts"):
        Backbone(depth=18, non_local=(1, 2))


def test_non_local_blocks_run_after_the_last_blocks_of_a_stage():
    torch.manual_seed(0)
    net = Backbone(depth=18, two_stream=False, non_local=(0, 0, 1, 0)).eval()
    calls = []
    net.non_local["layer3"][0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    net.layers.layer3[1].register_forward_hook(lambda m, i, o: calls.append("block1"))
    net(torch.randn(1, 3, 32, 16))
    assert calls == ["block1", torch.Size([1, 256, 2, 1])]


def test_reidnet_train_and_eval_outputs_and_gradients():
    torch.manual_seed(0)
    net = MODELS.get("baseline")(num_classes=5, depth=18, non_local=(0, 1, 1, 0))
    x, modality = torch.randn(4, 3, 32, 16), torch.tensor([0, 0, 1, 1])
    out = net(x, modality)
    assert out["pooled"].shape == out["bn"].shape == (4, 512) and out["logits"].shape == (4, 5)
    assert out["map"].shape == (4, 512, 2, 1)  # last stride 1: 1/16
    (out["logits"].logsumexp(1).sum() + out["pooled"].sum()).backward()
    for name, p in net.named_parameters():
        if p.requires_grad and not name.startswith("backbone.non_local"):  # zero-init BN blocks the NL branch
            assert p.grad is not None, name
    assert not net.bn_neck.bias.requires_grad and net.classifier.bias is None
    net.eval()
    feat = net(x, modality)
    assert feat.shape == (4, 512)
    torch.testing.assert_close(feat.norm(dim=1), torch.ones(4))


def test_reidnet_options_and_head_parameters():
    net = ReIDNet(3, depth=18, two_stream=False, non_local=None, pool="avg", test_feature="pooled",
                  test_normalize=False).eval()
    x = torch.randn(2, 3, 32, 16)
    torch.testing.assert_close(net(x), net.backbone(x).mean(dim=(2, 3)))
    heads = {id(p) for p in net.head_parameters()}
    assert id(net.classifier.weight) in heads and id(net.backbone.stems[0].conv1.weight) not in heads
    with pytest.raises(ValueError, match="test_feature must be one of"):
        ReIDNet(3, depth=18, non_local=None, test_feature="logits")
    with pytest.raises(ValueError, match="pool must be 'gem' or 'avg'"):
        ReIDNet(3, depth=18, non_local=None, pool="max")
