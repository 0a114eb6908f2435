"""DAN's recipe terms: the hard-label CE switch, the discriminator's weight vs the reversal, the DANN ramp."""

import math
from types import SimpleNamespace

import pytest
import torch

from vireid.losses import id_loss
from vireid.methods import build_recipe
from vireid.methods.dan import dann_ramp

NUM_TARGET = 8


def recipe(**settings):
    torch.manual_seed(0)
    cfg = {"method": "dan", "model": {"depth": 18, "non_local": [0, 0, 0, 0], "two_stream": False},
           "loss": {"id": 0.0, "triplet": 0.0},
           "recipe": {"num_target": NUM_TARGET, "m": 2, "start_epoch": 0, "disc_hidden": 8, "disc_dropout": 0.0,
                      "lambda2": 0.0, "lambda3": 0.0, **settings}}
    r = build_recipe(cfg, 3)
    r.model.pseudo_labels.copy_(torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    r.epoch = 0
    r.trainer = SimpleNamespace(cfg=SimpleNamespace(epochs=10), epoch=0, step_in_epoch=0, batches=[None] * 4)
    return r


def batches():
    g = torch.Generator().manual_seed(1)
    mod = torch.tensor([0, 0, 1, 1])
    source = (torch.randn(4, 3, 32, 16, generator=g), torch.tensor([0, 1, 0, 1]), torch.zeros(4), mod)
    target = (torch.randn(4, 3, 32, 16, generator=g), torch.tensor([0, 3, 5, 6]), torch.zeros(4), mod)
    return source, target


def grads(r):
    """(discriminator grad, backbone grad) of one training step's loss."""
    terms = r.training_step(r.model, batches())
    r.model.zero_grad()
    terms["loss"].backward()
    disc = torch.cat([p.grad.reshape(-1) for p in r.model.discriminator.parameters()])
    conv = r.model.net.backbone.layers.layer4[-1].conv2.weight.grad.reshape(-1)
    return terms, disc, conv


def test_hard_label_term_is_cross_entropy_on_the_pseudo_labels_and_switchable():
    off = recipe(lambda1=0.0, lambda_hard=0.0)
    assert "hard" not in off.training_step(off.model, batches()) and not off.adapts
    r = recipe(lambda1=0.0, lambda_hard=0.5)
    assert r.adapts
    source, target = batches()
    terms = r.training_step(r.model, (source, target))
    out = r.model(torch.cat([source[0], target[0]]), torch.cat([source[3], target[3]]))
    expected = 0.5 * id_loss(out["logits"][4:], r.model.pseudo_labels[target[1]])
    assert torch.allclose(terms["hard"], expected, atol=1e-5)
    assert torch.allclose(terms["loss"], terms["hard"])


def test_discriminator_weight_is_separate_from_the_reversal_coefficient():
    base_terms, base_disc, base_conv = grads(recipe(lambda1=1.0, disc_weight=1.0))
    _, half_disc, half_conv = grads(recipe(lambda1=0.5, disc_weight=1.0))
    _, twice_disc, twice_conv = grads(recipe(lambda1=1.0, disc_weight=2.0))
    assert float(base_conv.abs().sum()) > 0 and float(base_disc.abs().sum()) > 0
    # lambda1 scales only what reaches the feature extractor
    assert torch.allclose(half_disc, base_disc, atol=1e-7)
    assert torch.allclose(half_conv, 0.5 * base_conv, atol=1e-7, rtol=1e-4)
    # disc_weight scales only the discriminator's own update
    assert torch.allclose(twice_disc, 2 * base_disc, atol=1e-7, rtol=1e-4)
    assert torch.allclose(twice_conv, base_conv, atol=1e-7, rtol=1e-4)
    assert float(base_terms["grl"]) == 1.0


def test_reversal_reverses_the_discriminator_gradient():
    r = recipe(lambda1=1.0)
    source, target = batches()
    r.training_step(r.model, (source, target))  # sets the coefficient
    out = r.model(torch.cat([source[0], target[0]]), torch.cat([source[3], target[3]]))
    feat = out["pooled"]
    from vireid.losses.dan import domain_adversarial_loss

    plain = r.model.discriminator(feat).squeeze(1)
    (g_plain,) = torch.autograd.grad(domain_adversarial_loss(plain[:4], plain[4:]), feat, retain_graph=True)
    (g_rev,) = torch.autograd.grad(domain_adversarial_loss(out["domain"][:4], out["domain"][4:]), feat)
    assert torch.allclose(g_rev, -g_plain, atol=1e-6)


def test_dann_ramp_schedules_the_reversal():
    assert dann_ramp(0.0) == 0.0 and abs(dann_ramp(1.0) - (2 / (1 + math.exp(-10)) - 1)) < 1e-12
    assert dann_ramp(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    r = recipe(lambda1=0.4, disc_weight=2.0, grl_ramp=True)
    r.trainer.epoch, r.trainer.step_in_epoch = 5, 0  # half of 10 adaptation epochs
    assert r.reversal_coef() == pytest.approx(0.4 * dann_ramp(0.5) / 2.0)
    r.trainer.epoch = 0
    terms = r.training_step(r.model, batches())
    assert float(terms["grl"]) == 0.0  # no adversarial signal at the very start
    assert recipe(lambda1=0.4, disc_weight=2.0).reversal_coef() == pytest.approx(0.2)


def test_recipe_errors():
    with pytest.raises(ValueError, match="recipe.grl_coef is no longer a setting"):
        recipe(grl_coef=1.0)
    with pytest.raises(ValueError, match="disc_weight must be > 0 when recipe.lambda1 > 0"):
        recipe(lambda1=0.1, disc_weight=0.0)
    with pytest.raises(ValueError, match="grl_ramp must be true or false"):
        recipe(grl_ramp="yes")
