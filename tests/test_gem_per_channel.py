"""GeM with one learnable p per channel (MBFVRD's Eq. 3, seed 003) and MBFVRD's switch between it and one p per
branch: shapes, values against the scalar GeM channel by channel, gradients, the clamp and the config."""

import pytest
import torch

from vireid.app.runs import resolve_config_path
from vireid.config import load_config
from vireid.methods import build_recipe
from vireid.models.layers import GeM, gem, gem_root_eps
from vireid.models.mbfvrd import MBFVRD


def _per_channel(values, **kw):
    pool = GeM(3.0, learnable=True, channels=len(values), **kw)
    with torch.no_grad():
        pool.p.copy_(torch.tensor(values))
    return pool


@pytest.mark.parametrize("form, scalar", [("clamp", gem), ("root_eps", gem_root_eps)])
def test_each_channel_pools_with_its_own_p_and_gets_its_own_gradient(form, scalar):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 4, 3, dtype=torch.float64) + 0.1
    pool = _per_channel([1.0, 2.0, 4.0], form=form).double()
    out = pool(x)
    assert pool.p.shape == (3,) and out.shape == (2, 3)
    out.sum().backward()
    for k, p in enumerate((1.0, 2.0, 4.0)):
        p_k = torch.tensor(p, dtype=torch.float64, requires_grad=True)
        expected = scalar(x[:, k:k + 1], p_k, pool.eps)
        torch.testing.assert_close(out[:, k:k + 1].detach(), expected.detach())
        expected.sum().backward()
        torch.testing.assert_close(pool.p.grad[k], p_k.grad)  # d/dp_k reaches p_k alone
    assert bool((pool.p.grad != 0).all())
    torch.testing.assert_close(out[:, 0], x[:, 0].mean(dim=(1, 2)))  # p_k = 1: average pooling


def test_per_channel_p_is_clamped_channel_by_channel_and_checked():
    x = torch.rand(2, 2, 3, 3) + 0.1
    pool = _per_channel([-2.0, 3.0], p_min=1.0)
    out = pool(x)
    torch.testing.assert_close(out[:, 0], x[:, 0].mean(dim=(1, 2)))  # clamped to 1
    torch.testing.assert_close(out[:, 1], gem(x[:, 1:], 3.0)[:, 0])
    assert "per channel (2" in repr(pool)
    with pytest.raises(ValueError, match="needs learnable=True"):
        GeM(3.0, channels=4)
    with pytest.raises(ValueError, match="an integer >= 1"):
        GeM(3.0, learnable=True, channels=0)


def _mbfvrd_recipe(*overrides):
    cfg = load_config(resolve_config_path("mbfvrd_sysu"), ["model.depth=18", "model.non_local=[0,0,0,0]",
                                                           *overrides])
    torch.manual_seed(0)
    return build_recipe(cfg, num_classes=3)


def test_mbfvrd_learns_one_p_per_channel_by_default_and_one_per_branch_on_the_switch():
    recipe = _mbfvrd_recipe()
    batch = (torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.zeros(8),
             torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    for pool in (recipe.model.pool1, recipe.model.pool2):
        assert pool.p.shape == (512,)
    recipe.training_step(recipe.model, batch)["loss"].backward()
    for pool in (recipe.model.pool1, recipe.model.pool2):
        assert pool.p.grad.shape == (512,) and torch.isfinite(pool.p.grad).all()
        assert int((pool.p.grad != 0).sum()) > 256  # the channels' exponents move separately
    backbone, _ = recipe.param_groups()
    assert any(p is recipe.model.pool1.p for p in backbone["params"])
    old = _mbfvrd_recipe("model.gem_p_per_channel=false")
    assert old.model.pool1.p.shape == old.model.pool2.p.shape == ()
    with pytest.raises(ValueError, match="gem_p_per_channel: true needs gem_learnable: true"):
        MBFVRD(num_classes=3, depth=18, non_local=None, gem_learnable=False)
    assert MBFVRD(num_classes=3, depth=18, non_local=None, gem_learnable=False, gem_p_per_channel=False).pool1.p == 3
