"""CM-LSP-GE: the stripe distance and the local shortest path by hand and against the literal double loop,
the batch-hard triplet on it, the stripe ID loss, BN-GE, the network's shapes and gradients, config errors."""

import math

import pytest
import torch

from vireid.app.runs import resolve_config_path
from vireid.config import load_config
from vireid.losses.cmlsp import (
    batch_hard_triplet_from_dist,
    local_distance,
    local_triplet,
    range_normalise,
    shortest_path,
    stripe_distances,
    stripe_id_loss,
    stripe_triplet,
)
from vireid.methods import build_recipe
from vireid.models.cmlsp import BNGlobalEnhancement, CMLSPNet


def naive_shortest_path(d):
    """The survey's four-case recurrence, cell by cell, for one (h, h) matrix."""
    h = d.shape[0]
    s = [[None] * h for _ in range(h)]
    for i in range(h):
        for j in range(h):
            if i == 0 and j == 0:
                s[i][j] = d[0, 0]
            elif i == 0:
                s[i][j] = s[i][j - 1] + d[i, j]
            elif j == 0:
                s[i][j] = s[i - 1][j] + d[i, j]
            else:
                s[i][j] = torch.minimum(s[i][j - 1], s[i - 1][j]) + d[i, j]
    return s[h - 1][h - 1]


def test_shortest_path_on_a_3x3_matrix_by_hand():
    # S row 1: 1 3 6; row 2: 5 min(5,3)+1=4 min(4,6)+5=9; row 3: 6 min(6,4)+1=5 min(5,9)+1=6.
    # The one cheapest path: (1,1) (1,2) (2,2) (3,2) (3,3) = 1 + 2 + 1 + 1 + 1.
    d = torch.tensor([[1.0, 2.0, 3.0], [4.0, 1.0, 5.0], [1.0, 1.0, 1.0]], requires_grad=True)
    s = shortest_path(d)
    assert s.item() == 6.0
    s.backward()
    on_path = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(d.grad, on_path)


def test_shortest_path_matches_the_cell_by_cell_recurrence_over_a_batch():
    torch.manual_seed(0)
    d = torch.rand(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    fast = shortest_path(d)
    assert fast.shape == (3, 4)
    slow = torch.stack([torch.stack([naive_shortest_path(d[a, b]) for b in range(4)]) for a in range(3)])
    torch.testing.assert_close(fast, slow)
    (g_fast,) = torch.autograd.grad(fast.sum(), d)
    (g_slow,) = torch.autograd.grad(slow.sum(), d)
    torch.testing.assert_close(g_fast, g_slow)
    assert shortest_path(torch.tensor([[2.5]])).item() == 2.5  # h = 1: the one stripe distance
    with pytest.raises(ValueError, match=r"\(\.\.\., h, h\)"):
        shortest_path(torch.rand(2, 3))


def test_stripe_distance_by_hand():
    # a = [0, 1, 2] -> (a - 1) / 2 = [-0.5, 0, 0.5]; b = [4, 0, 2] -> (b - 2) / 4 = [0.5, -0.5, 0]
    # L1 = 1 + 0.5 + 0.5 = 2 ("sum"), 2 / 3 ("mean")
    a, b = torch.tensor([[[0.0, 1.0, 2.0]]]), torch.tensor([[[4.0, 0.0, 2.0]]])
    assert stripe_distances(a, b, "sum").shape == (1, 1, 1, 1)
    torch.testing.assert_close(stripe_distances(a, b, "sum").flatten(), torch.tensor([2.0]))
    torch.testing.assert_close(stripe_distances(a, b, "mean").flatten(), torch.tensor([2.0 / 3]))
    torch.testing.assert_close(range_normalise(3 * a + 7), range_normalise(a))  # shift and scale invariant
    with pytest.raises(ValueError, match="reduce must be one of"):
        stripe_distances(a, b, "max")


def test_stripe_distances_index_layout():
    torch.manual_seed(1)
    a, b = torch.randn(2, 3, 4), torch.randn(5, 3, 4)
    d = stripe_distances(a, b, "sum")
    assert d.shape == (2, 5, 3, 3)
    expected = (range_normalise(a[1, 2]) - range_normalise(b[4, 0])).abs().sum()
    torch.testing.assert_close(d[1, 4, 2, 0], expected)
    local = torch.randn(4, 3, 6)
    dist = local_distance(local)
    assert dist.shape == (4, 4)  # an image's distance to itself is > 0: a path has no diagonal step
    torch.testing.assert_close(dist, dist.t())  # the recurrence is symmetric under transposing d


def test_batch_hard_triplet_from_distances_by_hand():
    dist = torch.tensor([[0.0, 0.5, 0.4, 0.9],
                         [0.5, 0.0, 1.2, 0.2],
                         [0.4, 1.2, 0.0, 0.3],
                         [0.9, 0.2, 0.3, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: pos 0.5, neg 0.4 -> 0.4; 1: pos 0.5, neg 0.2 -> 0.6; 2: pos 0.3, neg 0.4 -> 0.2; 3: 0.3, 0.2 -> 0.4
    torch.testing.assert_close(batch_hard_triplet_from_dist(dist, labels, 0.3), torch.tensor(1.6 / 4))
    with pytest.raises(ValueError, match="two identities"):
        batch_hard_triplet_from_dist(dist, torch.zeros(4, dtype=torch.long), 0.3)


def test_local_triplet_equals_its_definition():
    torch.manual_seed(2)
    local = torch.randn(6, 3, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    expected = []
    for a in range(6):
        d = [naive_shortest_path(stripe_distances(local[a:a + 1], local[b:b + 1])[0, 0]) for b in range(6)]
        pos = max(d[b] for b in range(6) if labels[b] == labels[a])
        neg = min(d[b] for b in range(6) if labels[b] != labels[a])
        expected.append(torch.relu(0.3 + pos - neg))
    torch.testing.assert_close(local_triplet(local, labels, 0.3), torch.stack(expected).mean())


def test_printed_stripe_triplet_by_hand():
    """L_PA as printed (seed 002:418): per-stripe L2 batch-hard triplets on range-normalised stripes, j = 2..H."""
    u = {"a": [-0.5, 0.0, 0.5], "b": [0.5, 0.0, -0.5], "c": [0.0, -0.5, 0.5], "d": [0.5, -0.5, 0.0]}
    # mean 0, range 1: range normalisation returns each as it is, whatever scale and offset it comes with.
    # |a-b| = sqrt 2, |a-c| = |b-d| = |c-d| = sqrt .5, |a-d| = |b-c| = sqrt 1.5
    labels = torch.tensor([0, 0, 1, 1])

    def stripe(*names):
        return [[(2.0 + i) * x + 7.0 * i for x in u[n]] for i, n in enumerate(names)]

    first = [[100.0, 0.0, 1.0], [-100.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]  # not in the sum (j >= 2)
    second = stripe("a", "c", "b", "d")  # anchors: 0, 0.3, 0, 0.3 (positives sqrt .5, nearest negatives)
    third = stripe("a", "b", "c", "d")  # anchors: 0.3 + sqrt 2 - sqrt .5 twice, then 0.3 twice
    local = torch.tensor([first, second, third], dtype=torch.float64).transpose(0, 1).requires_grad_(True)
    loss = stripe_triplet(local, labels, 0.3, reduce="sum")
    expected = 0.6 / 4 + (1.2 + 2 * (math.sqrt(2) - math.sqrt(0.5))) / 4
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert float(local.grad[:, 0].abs().sum()) == 0.0  # stripe 1 gets no gradient
    assert torch.isfinite(local.grad).all() and float(local.grad[:, 2].abs().sum()) > 0
    # "mean" divides the distances by sqrt(D): relu(m + (dp - dn) / sqrt 3) = relu(m sqrt 3 + dp - dn) / sqrt 3
    torch.testing.assert_close(stripe_triplet(local, labels, 0.3),
                               stripe_triplet(local, labels, 0.3 * math.sqrt(3), reduce="sum") / math.sqrt(3))
    # scale-free: a stripe feature 1000 times larger gives the same loss (the raw L2 form rewarded scale)
    torch.testing.assert_close(stripe_triplet(local * 1000, labels, 0.3), stripe_triplet(local, labels, 0.3))
    with pytest.raises(ValueError, match="needs h >= 2 stripes, got 1"):
        stripe_triplet(local[:, :1], labels)


def test_recipe_uses_the_printed_form_by_default_and_keeps_the_shortest_path_switch():
    batch = (torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.zeros(8),
             torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    for form, expected in (("stripes", lambda local, pids: stripe_triplet(local, pids, 0.3, "mean")),
                           ("shortest_path", lambda local, pids: local_triplet(local, pids, 0.3, "mean"))):
        torch.manual_seed(0)
        recipe = build_recipe(_cfg(f"loss.local_triplet_form={form}"), num_classes=3)
        assert recipe.settings.loss.local_triplet_form == form
        torch.manual_seed(1)
        terms = recipe.training_step(recipe.model, batch)
        torch.manual_seed(1)
        local = recipe.model(batch[0], batch[3])["local"]
        torch.testing.assert_close(terms["local_triplet"], expected(local, batch[1]))
    assert build_recipe(_cfg(), num_classes=3).settings.loss.local_triplet_form == "stripes"
    with pytest.raises(ValueError, match="needs model.stripes >= 2, got 1"):
        build_recipe(_cfg("model.stripes=1"), num_classes=3)
    build_recipe(_cfg("model.stripes=1", "loss.local_triplet_form=shortest_path"), num_classes=3)


def test_stripe_id_loss_sums_the_stripes():
    torch.manual_seed(3)
    logits, labels = torch.randn(4, 3, 5), torch.tensor([0, 1, 4, 2])
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(stripe_id_loss(logits, labels), sum(ce(logits[:, i], labels) for i in range(3)))


def test_bn_ge_gates_each_channel_by_its_normalised_bn_output():
    torch.manual_seed(4)
    ge = BNGlobalEnhancement(4)
    with torch.no_grad():
        ge.bn.weight.copy_(torch.tensor([1.0, 3.0, -2.0, 2.0]))
    w = ge.channel_weights()
    torch.testing.assert_close(w, torch.tensor([0.5, 1.5, 1.0, 1.0]))  # C |gamma| / sum |gamma|, mean 1
    g = torch.randn(6, 4, requires_grad=True)
    e = ge(g)
    torch.testing.assert_close(e, g * torch.sigmoid(w * ge.bn(g)))
    e.sum().backward()
    assert ge.bn.weight.grad.abs().sum() > 0 and g.grad.abs().sum() > 0


def test_network_shapes_gradients_and_test_features():
    torch.manual_seed(0)
    net = CMLSPNet(num_classes=5, depth=18, non_local=(0, 1, 1, 0), stripes=2, local_dim=16)
    images, modality = torch.randn(4, 3, 32, 16), torch.tensor([0, 1, 0, 1])
    out = net(images, modality)
    assert out["global"].shape == out["enhanced_bn"].shape == (4, 512)
    assert out["local"].shape == (4, 2, 16) and out["logits_local"].shape == (4, 2, 5)
    assert bool((out["local"] < 0).any())  # BN output, no ReLU: a stripe feature cannot die to all zeros
    assert out["logits"].shape == out["logits_enhanced"].shape == (4, 5)

    def reached(loss, prefix):
        net.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return any(p.grad is not None and p.grad.abs().sum() > 0
                   for n, p in net.named_parameters() if n.startswith(prefix))

    lsp = local_triplet(out["local"], torch.tensor([0, 0, 1, 1]), margin=10.0)  # margin: every anchor active
    assert reached(lsp, "stripes.reduce.") and reached(lsp, "backbone.stems.0.")
    assert not reached(lsp, "enhance.") and not reached(lsp, "classifier")
    assert reached(out["logits_enhanced"].logsumexp(1).sum(), "enhance.")
    assert not reached(out["logits"].logsumexp(1).sum(), "enhance.")
    net.eval()
    feat = net(images, modality)
    assert feat.shape == (4, 1024)
    torch.testing.assert_close(feat[:, 512:].norm(dim=1), torch.ones(4))
    net.test_feature = "global"
    assert net(images, modality).shape == (4, 512)
    net.train()
    with pytest.raises(ValueError, match="fewer than the 6 stripes"):
        CMLSPNet(num_classes=5, depth=18, non_local=None, stripes=6)(images, modality)


def _cfg(*overrides):
    return load_config(resolve_config_path("cmlsp_sysu"),
                       ["model.depth=18", "model.non_local=[0,0,0,0]", "model.stripes=2", "model.local_dim=16",
                        *overrides])


def test_step_terms_and_switches():
    recipe = build_recipe(_cfg(), num_classes=3)
    batch = (torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), torch.zeros(8),
             torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]))
    terms = recipe.training_step(recipe.model, batch)
    assert set(terms) == {"loss", "id", "id_enhanced", "hetero_center", "id_local", "local_triplet"}
    torch.testing.assert_close(terms["loss"], sum(v for k, v in terms.items() if k != "loss"))
    recipe = build_recipe(_cfg("loss.local_triplet=0.0", "loss.id_enhanced=0.0"), num_classes=3)
    assert set(recipe.training_step(recipe.model, batch)) == {"loss", "id", "hetero_center", "id_local"}


@pytest.mark.parametrize("override, message", [
    ("model.stripes=0", "model.stripes must be an integer >= 1"),
    ("model.test_feature=local", "model.test_feature must be one of cat, global, enhanced"),
    ("loss.local_reduce=max", "loss.local_reduce must be one of mean, sum"),
    ("loss.local_margin=-0.1", "loss.local_margin must be a number >= 0"),
    ("loss.local_triplet_form=path", "loss.local_triplet_form must be one of stripes, shortest_path"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        build_recipe(_cfg(override), num_classes=3)
