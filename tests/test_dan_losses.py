"""DAN's loss terms against hand computation, and pseudo labels on cases with a known answer."""

import math

import pytest
import torch

from vireid.losses.dan import (
    cross_modal_alignment,
    dan_total,
    domain_adversarial_loss,
    hard_pseudo_labels,
    modality_prototypes,
    reliable_neighbours,
    soft_label_loss,
    soft_targets,
)
from vireid.models.layers import grad_reverse

V, I = 0, 1


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_domain_loss_is_eq3():
    s, t = torch.tensor([0.0, 2.0]), torch.tensor([1.0])
    expected = -(math.log(_sig(0.0)) + math.log(_sig(2.0))) / 2 - math.log(1 - _sig(1.0))
    assert torch.isclose(domain_adversarial_loss(s, t), torch.tensor(expected))


def test_domain_loss_behind_gradient_reversal_pushes_features_the_other_way():
    feat = torch.tensor([[1.0], [1.0]], requires_grad=True)
    logits = grad_reverse(feat, 1.0).squeeze(1) * 2.0  # a fixed "discriminator": logit = 2 x
    domain_adversarial_loss(logits[:1], logits[1:]).backward()
    # d loss / d logit_s = sigmoid - 1 < 0, so the discriminator wants x_s up; reversed, the feature goes down.
    assert feat.grad[0, 0] > 0 and feat.grad[1, 0] < 0


def test_domain_loss_needs_both_domains():
    with pytest.raises(ValueError, match="source and target"):
        domain_adversarial_loss(torch.zeros(0), torch.zeros(3))


def test_prototypes_are_per_modality_class_means():
    feats = torch.tensor([[1.0, 0], [3.0, 0], [0, 2.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 0])
    mod = torch.tensor([V, V, V, I])
    protos, present = modality_prototypes(feats, labels, mod, 3)
    assert torch.equal(protos[0, 0], torch.tensor([2.0, 0])) and torch.equal(protos[0, 1], torch.tensor([0, 2.0]))
    assert torch.equal(protos[1, 0], torch.tensor([5.0, 5.0]))
    assert present.tolist() == [[True, True, False], [True, False, False]]
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        modality_prototypes(feats, torch.tensor([0, 0, 3, 0]), mod, 3)


def test_hard_labels_use_cosine_and_the_own_modality_only():
    # Visible prototypes point along x (class 0) and y (class 1); infrared ones the other way round.
    protos = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    present = torch.ones(2, 2, dtype=torch.bool)
    feats = torch.tensor([[10.0, 1.0], [0.1, 0.5], [10.0, 1.0], [0.1, 0.5]])  # scale must not matter (cosine)
    mod = torch.tensor([V, V, I, I])
    assert hard_pseudo_labels(feats, mod, protos, present).tolist() == [0, 1, 1, 0]
    present[0, 0] = False  # class 0 has no visible source image: never a visible label
    assert hard_pseudo_labels(feats, mod, protos, present).tolist() == [1, 1, 1, 0]


def test_hard_labels_recover_clusters_from_noisy_source_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=g) * 3
    src_labels = torch.arange(5).repeat_interleave(6)
    src_mod = torch.tensor([V, I] * 15)
    src = centers[src_labels] + 0.3 * torch.randn(30, 16, generator=g)
    protos, present = modality_prototypes(src, src_labels, src_mod, 5)
    truth = torch.tensor([3, 1, 4, 0, 2, 2, 1])
    tgt = centers[truth] + 0.3 * torch.randn(7, 16, generator=g)
    tgt_mod = torch.tensor([V, I, V, I, V, I, V])
    assert torch.equal(hard_pseudo_labels(tgt, tgt_mod, protos, present), truth)


def test_reliable_neighbours_are_the_m_most_similar_others():
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.3]])
    nb = reliable_neighbours(feats, 2)
    assert sorted(nb[0].tolist()) == [1, 4] and sorted(nb[2].tolist()) == [3, 4]
    assert all(i not in row for i, row in enumerate(nb.tolist()))
    with pytest.raises(ValueError, match="m .reliable neighbours. must be in 1..4"):
        reliable_neighbours(feats, 5)


def test_soft_targets_are_eq8():
    t = soft_targets(torch.tensor([0, 2]), torch.tensor([[1, 3], [0, 1]]), 4, lam=0.6)
    assert torch.allclose(t, torch.tensor([[0.6, 0.2, 0.0, 0.2], [0.2, 0.2, 0.6, 0.0]]))
    with pytest.raises(ValueError, match="lambda must be in"):
        soft_targets(torch.tensor([0]), torch.tensor([[1]]), 2, lam=1.5)


def test_soft_label_loss_is_eq9():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, -1.0]])
    index, nb = torch.tensor([0, 1]), torch.tensor([[1], [2]])
    lsm = torch.log_softmax(logits, 1)
    expected = (-(0.7 * lsm[0, 0] + 0.3 * lsm[0, 1]) - (0.7 * lsm[1, 1] + 0.3 * lsm[1, 2])) / 2
    assert torch.isclose(soft_label_loss(logits, index, nb, 0.7), expected)
    # lambda = 1 is the plain cross-entropy with "every sample its own class".
    assert torch.isclose(soft_label_loss(logits, index, nb, 1.0), torch.nn.functional.cross_entropy(logits, index))


def test_cma_is_eqs_12_to_14():
    feats = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0],  # class 0: vis rows 0-1, ir rows 2-3
                          [5.0, 5.0], [9.0, 9.0]])                          # class 1: visible only -> skipped
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    mod = torch.tensor([V, V, I, I, V, V])
    # mu_v = (1, 0), mu_i = (1, 2): d = 4; var_v = (1, 0), var_i = (0, 1): d = 2.
    assert torch.isclose(cross_modal_alignment(feats, labels, mod, eta=0.5), torch.tensor(4.0 + 0.5 * 2.0))
    none = cross_modal_alignment(feats[4:], labels[4:], mod[4:])
    assert none.item() == 0.0


def test_cma_averages_classes_and_has_gradient():
    feats = torch.tensor([[0.0], [1.0], [0.0], [3.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    mod = torch.tensor([V, I, V, I])
    loss = cross_modal_alignment(feats, labels, mod, eta=1.0)
    assert torch.isclose(loss, torch.tensor((1.0 + 9.0) / 2))
    loss.backward()
    assert torch.allclose(feats.grad.squeeze(), torch.tensor([-1.0, 1.0, -3.0, 3.0]))


def test_total_is_eq15():
    t = dan_total(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), torch.tensor(4.0), torch.tensor(5.0),
                  0.1, 0.2, 0.3)
    assert torch.isclose(t, torch.tensor(1 + 2 + 0.3 + 0.8 + 1.5))
