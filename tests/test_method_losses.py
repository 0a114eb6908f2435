"""WRT, ADP/ESD, hetero-center triplet and VSD against their equations on tiny hand-sized cases
(plain Python math for the references, no vireid helpers)."""

import math

import pytest
import torch

from vireid.losses import adp_loss, hetero_center_triplet, vsd_loss, weighted_distances, wrt_loss

# 1-D features: distances are |a - b|
FEAT = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def soft_distances(points, labels, alpha=1.0, eps=1e-6):
    """d_p, d_n per anchor by the formula: softmax(alpha d) over positives (self included, d = 1e-6),
    softmax(-alpha d) over negatives, each with eps in the denominator."""
    out = []
    for _i, (a, la) in enumerate(zip(points, labels)):
        d = [max(abs(a - b), 1e-6) for b in points]
        pos = [j for j, lb in enumerate(labels) if lb == la]
        neg = [j for j, lb in enumerate(labels) if lb != la]
        mp, mn = max(alpha * d[j] for j in pos), max(-alpha * d[j] for j in neg)
        zp = sum(math.exp(alpha * d[j] - mp) for j in pos) + eps
        zn = sum(math.exp(-alpha * d[j] - mn) for j in neg) + eps
        d_p = sum(math.exp(alpha * d[j] - mp) / zp * d[j] for j in pos)
        d_n = sum(math.exp(-alpha * d[j] - mn) / zn * d[j] for j in neg)
        out.append((d_p, d_n))
    return out


def softplus(v):
    return math.log1p(math.exp(v))


POINTS, LAB = [0.0, 1.0, 3.0, 6.0], [0, 0, 1, 1]


def test_weighted_distances_by_hand():
    d_p, d_n = weighted_distances(FEAT, LABELS)
    # anchor 0: positives at 0 and 1 -> e/(1+e); negatives at 3 and 6 -> (3e^-3 + 6e^-6)/(e^-3 + e^-6)
    assert d_p[0].item() == pytest.approx(math.e / (1 + math.e), abs=1e-5)
    assert d_n[0].item() == pytest.approx((3 * math.exp(-3) + 6 * math.exp(-6)) / (math.exp(-3) + math.exp(-6)),
                                          abs=1e-5)
    ref = soft_distances(POINTS, LAB)
    torch.testing.assert_close(d_p, torch.tensor([r[0] for r in ref]))
    torch.testing.assert_close(d_n, torch.tensor([r[1] for r in ref]))


def test_wrt_by_hand_and_no_margin():
    expected = sum(softplus(p - n) for p, n in soft_distances(POINTS, LAB)) / 4
    assert wrt_loss(FEAT, LABELS).item() == pytest.approx(expected, rel=1e-5)
    # identical classes far apart: loss -> log(1 + exp(-large)) ~ 0, never negative
    far = torch.tensor([[0.0], [0.0], [50.0], [50.0]])
    assert 0 <= wrt_loss(far, LABELS).item() < 1e-6


def test_esd_by_hand_both_signs():
    # anchor 2's positive (3 away) is farther than its nearest negative (2 away): a violated triplet
    ref = soft_distances(POINTS, LAB, alpha=1.0)
    assert any(p > n for p, n in ref) and any(p < n for p, n in ref)
    expected = 0.0
    for p, n in ref:
        s = min((p - n) ** 2, 88.0)
        expected += softplus(s) if p > n else softplus(-s)
    assert adp_loss(FEAT, LABELS).item() == pytest.approx(expected / 4, rel=1e-5)


def test_adp_alpha_gamma_and_plain_form():
    ref = soft_distances(POINTS, LAB, alpha=2.0)
    expected = sum(softplus(0.5 * (p - n)) for p, n in ref) / 4
    assert adp_loss(FEAT, LABELS, alpha=2.0, gamma=0.5, square=False).item() == pytest.approx(expected, rel=1e-5)
    huge = torch.tensor([[0.0], [100.0], [1.0], [101.0]])  # squared term clamped at 88: finite
    assert math.isfinite(adp_loss(huge, LABELS).item())


def test_weighted_losses_have_gradients_and_reject_one_identity():
    feat = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    (wrt_loss(feat, labels) + adp_loss(feat, labels)).backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least two identities"):
        wrt_loss(torch.randn(3, 2), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="feat \\(B, D\\) and labels \\(B,\\)"):
        adp_loss(torch.randn(3), torch.tensor([0, 1, 1]))


# hetero-center: visible id0 {0, 2} -> 1, id1 {10, 12} -> 11; infrared id0 {3, 5} -> 4, id1 {8} -> 8
HC_FEAT = torch.tensor([[0.0], [2.0], [10.0], [12.0], [3.0], [5.0], [8.0]])
HC_LABELS = torch.tensor([0, 0, 1, 1, 0, 0, 1])
HC_MOD = torch.tensor([0, 0, 0, 0, 1, 1, 1])


def test_hetero_center_by_hand():
    # anchors: v0 pos 3 neg min(10, 7); v1 pos 3 neg min(10, 7); t0 pos 3 neg min(7, 4); t1 pos 3 neg min(7, 4)
    # margin 1.5: v0, v1 -> 0; t0, t1 -> 1.5 + 3 - 4 = 0.5 each; mean over 4 anchors = 0.25
    assert hetero_center_triplet(HC_FEAT, HC_LABELS, HC_MOD, margin=1.5).item() == pytest.approx(0.25, abs=1e-5)
    assert hetero_center_triplet(HC_FEAT, HC_LABELS, HC_MOD).item() == pytest.approx(0.0, abs=1e-6)  # m = 0.3
    perm = torch.tensor([6, 2, 0, 5, 3, 1, 4])  # grouping is by (label, modality), not by position
    assert hetero_center_triplet(HC_FEAT[perm], HC_LABELS[perm], HC_MOD[perm], margin=1.5).item() == \
        pytest.approx(0.25, abs=1e-5)


def test_hetero_center_gradient_and_errors():
    feat = HC_FEAT.clone().requires_grad_(True)
    hetero_center_triplet(feat, HC_LABELS, HC_MOD, margin=1.5).backward()
    # L = [(1.5 + (t0 - v0) - (t1 - t0)) + (1.5 + (v1 - t1) - (t1 - t0))] / 4 with t0=4, v0=1, t1=8, v1=11:
    # dL/dv0 = -1/4, dL/dv1 = 1/4, dL/dt0 = 3/4, dL/dt1 = -3/4, split over each centre's members
    expected = torch.tensor([-0.125, -0.125, 0.125, 0.125, 0.375, 0.375, -0.75])[:, None]
    torch.testing.assert_close(feat.grad, expected)
    with pytest.raises(ValueError, match="identities \\[1\\] have no infrared sample"):
        hetero_center_triplet(HC_FEAT[:6], HC_LABELS[:6], HC_MOD[:6])
    with pytest.raises(ValueError, match="at least two identities"):
        hetero_center_triplet(HC_FEAT[[0, 4]], HC_LABELS[[0, 4]], HC_MOD[[0, 4]])


def test_vsd_by_hand_and_teacher_detached():
    obs = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # p = (1/4, 3/4)
    rep = torch.tensor([[0.0, 0.0]], requires_grad=True)  # q = (1/2, 1/2)
    loss = vsd_loss(obs, rep)
    assert loss.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)
    loss.backward()
    assert obs.grad is None and rep.grad.abs().sum() > 0
    assert vsd_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        vsd_loss(obs, rep, temperature=0)


def test_one_batch_hard_mining_serves_every_triplet():
    from vireid.losses.cmlsp import batch_hard_triplet_from_dist
    from vireid.losses.reid import hardest_pairs, pairwise_sq_dist, triplet_hard

    dist = torch.tensor([[0.0, 2.0, 1.0, 5.0], [2.0, 0.0, 3.0, 0.5], [1.0, 3.0, 0.0, 4.0], [5.0, 0.5, 4.0, 0.0]])
    labels = torch.tensor([7, 7, 9, 9])
    d_ap, d_an = hardest_pairs(dist, labels)
    assert d_ap.tolist() == [2.0, 2.0, 4.0, 4.0] and d_an.tolist() == [1.0, 0.5, 1.0, 0.5]
    feat = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    l2 = pairwise_sq_dist(feat).clamp(min=1e-12).sqrt()
    torch.testing.assert_close(triplet_hard(feat, labels), batch_hard_triplet_from_dist(l2, labels, 0.3))
    with pytest.raises(ValueError, match="triplet_hard needs at least two identities"):
        triplet_hard(feat, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"batch-hard triplet needs dist \(B, B\) and labels \(B,\), got \(4, 3\)"):
        hardest_pairs(dist[:, :3], labels[:4])
