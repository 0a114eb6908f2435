"""Shared layers: GeM, BN neck, classifier, gradient reversal, modality head, purifier gates."""

import pytest
import torch

from vireid.models.layers import (
    BNNeck,
    ChannelGate,
    GeM,
    GradReverse,
    InformationPurifier,
    ModalityHead,
    classifier,
    gem,
    grad_reverse,
)


def test_gem_matches_the_formula_and_limits():
    x = torch.tensor([[[[1.0, 2.0], [3.0, -4.0]]]])
    expected = ((1 + 8 + 27 + 1e-18) / 4) ** (1 / 3)  # -4 is clamped to 1e-6
    assert torch.allclose(gem(x), torch.tensor([[expected]]))
    assert torch.allclose(gem(x, p=1.0), torch.tensor([[(1 + 2 + 3 + 1e-6) / 4]]))
    with pytest.raises(ValueError, match="shape"):
        gem(torch.ones(2, 3))


def test_gem_learnable_p_gets_a_gradient_fixed_p_does_not():
    learn = GeM(3.0, learnable=True)
    learn(torch.rand(2, 4, 3, 3) + 0.1).sum().backward()
    assert learn.p.grad is not None
    fixed = GeM(3.0)
    assert not any(True for _ in fixed.parameters())
    with pytest.raises(ValueError, match="p must be > 0"):
        GeM(0)


def test_bn_neck_frozen_bias():
    neck = BNNeck(8)
    assert torch.all(neck.weight == 1) and torch.all(neck.bias == 0) and not neck.bias.requires_grad
    assert BNNeck(8, freeze_bias=False).bias.requires_grad


def test_classifier_has_no_bias():
    assert classifier(16, 5).bias is None
    with pytest.raises(ValueError, match="num_classes"):
        classifier(16, 0)


def test_gradient_reversal_scales_and_flips():
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    x.grad = None
    layer = GradReverse(2.0)
    assert torch.equal(layer(x), x)
    (layer(x) * 3).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -6.0))


def test_modality_head_shapes():
    head = ModalityHead(32, hidden=10)
    assert head(torch.randn(4, 32)).shape == (4, 2)
    assert [type(m).__name__ for m in head][:4] == ["Linear", "BatchNorm1d", "ReLU", "Dropout"]


def test_gates_pixel_vs_se():
    x = torch.randn(2, 32, 3, 2)
    assert ChannelGate(32, 16, pooled=False)(x).shape == (2, 32, 3, 2)
    se = ChannelGate(32, 16, pooled=True)
    assert se(x).shape == (2, 32, 1, 1)
    # SE gate = sigmoid(W2 relu(W1 mean(x))) by hand
    w1, w2 = se.fc1.weight[:, :, 0, 0], se.fc2.weight[:, :, 0, 0]
    by_hand = torch.sigmoid(torch.relu(x.mean((2, 3)) @ w1.t()) @ w2.t())
    assert torch.allclose(se(x)[:, :, 0, 0], by_hand, atol=1e-6)
    assert ChannelGate(24, 16).fc1.weight.shape == (1, 24, 1, 1)  # floor(24 / 16) hidden units
    with pytest.raises(ValueError, match="no hidden units"):
        ChannelGate(8, 16)


@pytest.mark.parametrize("pooled", [False, True])
def test_purifier_alternating_integration(pooled):
    torch.manual_seed(0)
    ip = InformationPurifier(32, 16, pooled_gates=pooled, in_affine=not pooled)
    x = torch.randn(4, 32, 3, 2)
    out = ip(x)
    # Eq. 12 as coded: m_r * (m_e * F) + m_e * (m_r * IN(F)) = m_r * m_e * (F + IN(F))
    assert torch.allclose(out["out"], out["m_r"] * out["m_e"] * (x + out["x_in"]), atol=1e-6)
    if pooled:  # plain IN (paper Eq. 7): zero mean, unit variance per sample and channel
        assert torch.allclose(out["x_in"].mean((2, 3)), torch.zeros(4, 32), atol=1e-5)
        assert ip.norm.weight is None
