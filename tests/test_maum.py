"""MAUM: the unidirectional loss against its double sum and by hand, the FIFO proxy memories (and that a
checkpoint carries them), which parameters each loss reaches, the warm-up, config errors."""

import io
import math

import pytest
import torch

from vireid.app.runs import resolve_config_path
from vireid.config import load_config
from vireid.losses.maum import modality_specific_ce, unidirectional_loss
from vireid.methods import build_recipe
from vireid.models.maum import MAUMNet, ProxyMemory


def naive_unidirectional(anchors, labels, memory, alpha, delta):
    """The survey's equation written as the literal double sum, one anchor at a time."""
    x = torch.nn.functional.normalize(anchors, dim=1)
    mem = torch.nn.functional.normalize(memory, dim=2)
    losses = []
    for b in range(x.shape[0]):
        positives = [mem[s, labels[b]] for s in range(mem.shape[0])]
        negatives = [mem[s, c] for s in range(mem.shape[0]) for c in range(mem.shape[1]) if c != labels[b]]
        total = sum(torch.exp(alpha * (v @ x[b] - u @ x[b] + delta)) for v in negatives for u in positives)
        losses.append(torch.log(1 + total))
    return torch.stack(losses).mean()


def test_unidirectional_loss_equals_the_double_sum_in_value_and_gradient():
    torch.manual_seed(0)
    anchors = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2, 2])
    memory = torch.randn(2, 3, 5, dtype=torch.float64)
    fast = unidirectional_loss(anchors, labels, memory, alpha=4.0, delta=0.2)
    (g_fast,) = torch.autograd.grad(fast, anchors)
    slow = naive_unidirectional(anchors, labels, memory, 4.0, 0.2)
    (g_slow,) = torch.autograd.grad(slow, anchors)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(g_fast, g_slow)


def test_unidirectional_loss_by_hand():
    # 2-D, one slot, two identities: x = e1, u = e1 (cos 1), v = e2 (cos 0):
    # L = log(1 + exp(alpha (0 - 1 + delta))) = log(1 + exp(2 * (-0.5))) = log(1 + e^-1)
    x = torch.tensor([[3.0, 0.0]], requires_grad=True)
    memory = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])  # normalised inside
    loss = unidirectional_loss(x, torch.tensor([0]), memory, alpha=2.0, delta=0.5)
    torch.testing.assert_close(loss, torch.tensor(math.log(1 + math.exp(-1))))
    # dL/dx at x = 3 e1: with s = sigmoid(-1), dL/d(xhat) = s * alpha * (v - u) = s * 2 * (-1, 1); the
    # normalisation projects out the e1 component and divides by |x| = 3: grad = (0, 2 s / 3).
    loss.backward()
    s = 1 / (1 + math.e)
    torch.testing.assert_close(x.grad, torch.tensor([[0.0, 2 * s / 3]]))


def test_unidirectional_loss_is_finite_for_a_huge_scale():
    torch.manual_seed(1)
    anchors, memory = torch.randn(4, 8, requires_grad=True), torch.randn(5, 6, 8)
    loss = unidirectional_loss(anchors, torch.tensor([0, 1, 2, 3]), memory, alpha=1e4, delta=0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(anchors.grad).all()


def test_unidirectional_loss_errors():
    x, mem = torch.randn(2, 4), torch.randn(1, 3, 4)
    with pytest.raises(ValueError, match="labels must lie in"):
        unidirectional_loss(x, torch.tensor([0, 3]), mem, 1.0, 0.1)
    with pytest.raises(ValueError, match="memory"):
        unidirectional_loss(x, torch.tensor([0, 1]), torch.randn(1, 3, 5), 1.0, 0.1)
    with pytest.raises(ValueError, match="at least two identities"):
        unidirectional_loss(x, torch.tensor([0, 0]), torch.randn(1, 1, 4), 1.0, 0.1)


def test_modality_specific_ce_averages_over_its_own_rows():
    logits = torch.randn(4, 3)
    labels, modality = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 0, 1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    torch.testing.assert_close(modality_specific_ce(logits, labels, modality, 0), expected)
    assert modality_specific_ce(logits, labels, torch.ones(4, dtype=torch.long), 0).item() == 0.0


def test_proxy_memory_is_a_fifo_of_normalised_detached_copies():
    mem = ProxyMemory(2, num_classes=3, dim=2)
    assert mem.filled().shape == (0, 3, 2)
    w = [torch.full((3, 2), float(i + 1), requires_grad=True) for i in range(3)]
    for i, weight in enumerate(w):
        mem.push(weight)
        assert mem.filled().shape[0] == min(i + 1, 2)
    assert not mem.bank.requires_grad and int(mem.pushed) == 3
    # slot 0 was overwritten by the third push (oldest out); every row is unit length
    torch.testing.assert_close(mem.bank[0], torch.nn.functional.normalize(w[2].detach(), dim=1))
    torch.testing.assert_close(mem.bank.norm(dim=2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="memory size must be an integer >= 1"):
        ProxyMemory(0, 3, 2)


def _tiny_cfg(*overrides):
    return load_config(resolve_config_path("maum_sysu"), ["model.depth=18", *overrides])


def _batch(seed=0):
    torch.manual_seed(seed)
    return (torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.zeros(8),
            torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))


def test_model_shapes_and_specific_logits_route_by_modality():
    torch.manual_seed(0)
    net = MAUMNet(num_classes=5, depth=18, memory_visible=3, memory_infrared=2)
    images, _, _, modality = _batch()
    out = net(images, modality)
    assert out["feat"].shape == out["pooled"].shape == (8, 512) and out["logits"].shape == (8, 5)
    torch.testing.assert_close(out["logits_specific"][:4], net.classifier_visible(out["feat"][:4]))
    torch.testing.assert_close(out["logits_specific"][4:], net.classifier_infrared(out["feat"][4:]))
    assert net.memory_visible.bank.shape == (3, 5, 512) and net.memory_infrared.bank.shape == (2, 5, 512)
    assert {"memory_visible.bank", "memory_infrared.pushed"} <= set(net.state_dict())
    net.eval()
    torch.testing.assert_close(net(images, modality).norm(dim=1), torch.ones(8))


def test_each_loss_reaches_only_the_parameters_the_paper_says():
    recipe = build_recipe(_tiny_cfg("recipe.memory_warmup_epochs=0"), num_classes=2)
    net = recipe.model
    images, pids, _, modality = _batch()
    net.push_proxies()
    out = net(images, modality)

    def grads(loss):
        net.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return {name: p.grad for name, p in net.named_parameters()}

    def reached(g, prefix):
        return any(v is not None and v.abs().sum() > 0 for k, v in g.items() if k.startswith(prefix))

    feat = out["feat"]
    uni = unidirectional_loss(feat[:4], pids[:4], net.memory(1), 16.0, 0.1)
    g = grads(uni)  # the memories are static references: the features move, the proxies do not
    assert reached(g, "backbone.") and not reached(g, "classifier")
    g = grads(modality_specific_ce(out["logits_specific"], pids, modality, 0))  # L_RGB
    assert reached(g, "classifier_visible.") and not reached(g, "classifier_infrared.")
    assert not reached(g, "classifier.")
    g = grads(modality_specific_ce(out["logits_specific"], pids, modality, 1))  # L_IR
    assert reached(g, "classifier_infrared.") and not reached(g, "classifier_visible.")
    g = grads(recipe.training_step(net, (images, pids, torch.zeros(8), modality))["id"])  # shared CE
    assert reached(g, "classifier.") and not reached(g, "classifier_visible.")


def test_memories_start_after_the_warm_up_and_fill_one_slot_per_step():
    recipe = build_recipe(_tiny_cfg("recipe.memory_warmup_epochs=1", "model.memory_visible=2"), num_classes=2)
    recipe.on_epoch_start(0)
    terms = recipe.training_step(recipe.model, _batch())
    assert set(terms) == {"loss", "id", "ce_rgb", "ce_ir"} and int(recipe.model.memory_visible.pushed) == 0
    recipe.on_epoch_start(1)
    for step in range(3):
        terms = recipe.training_step(recipe.model, _batch(step))
    assert set(terms) == {"loss", "id", "ce_rgb", "ce_ir", "uni_r2i", "uni_i2r"}
    torch.testing.assert_close(terms["loss"], sum(v for k, v in terms.items() if k != "loss"))
    assert int(recipe.model.memory_visible.pushed) == 3 and recipe.model.memory(0).shape[0] == 2
    assert recipe.model.memory(1).shape[0] == 3
    torch.testing.assert_close(recipe.model.memory(0)[0],
                               torch.nn.functional.normalize(recipe.model.classifier_visible.weight.detach(), dim=1))


def _sgd_step(recipe, batch):
    opt = torch.optim.SGD(recipe.model.parameters(), lr=0.1)
    opt.zero_grad()
    recipe.training_step(recipe.model, batch)["loss"].backward()
    opt.step()


def test_a_checkpoint_carries_the_memories_and_a_resumed_recipe_continues_with_them():
    cfg = _tiny_cfg("recipe.memory_warmup_epochs=0", "model.memory_visible=3", "model.memory_infrared=2")
    torch.manual_seed(0)
    first = build_recipe(cfg, num_classes=2)
    first.on_epoch_start(0)
    for step in range(2):
        _sgd_step(first, _batch(step))
    buffer = io.BytesIO()
    torch.save({"model": first.model.state_dict()}, buffer)
    buffer.seek(0)
    fresh = build_recipe(cfg, num_classes=2)
    fresh.model.load_state_dict(torch.load(buffer, weights_only=True)["model"])
    fresh.on_epoch_start(0)
    for a, b in ((first.model.memory_visible, fresh.model.memory_visible),
                 (first.model.memory_infrared, fresh.model.memory_infrared)):
        assert torch.equal(a.bank, b.bank) and int(a.pushed) == int(b.pushed) == 2
    first.model.eval(), fresh.model.eval()  # same BN statistics path for both: compare one more push
    first.model.push_proxies(), fresh.model.push_proxies()
    assert torch.equal(first.model.memory_infrared.bank, fresh.model.memory_infrared.bank)
    assert int(fresh.model.memory_infrared.pushed) == 3


@pytest.mark.parametrize("override, message", [
    ("model.memory_visible=0", "model.memory_visible must be an integer >= 1"),
    ("model.neck=ln", "model.neck must be one of bn, none"),
    ("loss.alpha=-1", "loss.alpha must be a number >= 0"),
    ("recipe.memory_warmup_epochs=-1", "recipe.memory_warmup_epochs must be an integer >= 0"),
])
def test_config_errors_name_the_key(override, message):
    cfg = _tiny_cfg(override)
    with pytest.raises(ValueError, match=message):
        build_recipe(cfg, num_classes=3)


def test_a_misspelt_key_is_named():
    cfg = _tiny_cfg()
    cfg["loss"]["unidirectionl"] = 1.0
    with pytest.raises(ValueError, match="unknown loss setting.*unidirectionl"):
        build_recipe(cfg, num_classes=3)
