"""IDKL loss terms: the paper variant against the paper's equations worked by hand on tiny
tensors (plain Python math, no vireid helpers), plus the layout checks and weight switches.

The released-code variant is pinned by the golden vectors (test_idkl_golden.py).
"""

import math

import pytest
import torch

from vireid import losses as L
from vireid.losses.idkl import PAPER, REFERENCE_SMALL_BATCH, IDKLLossSettings
from vireid.schema import parse_section

# two identities, K = 1 per modality, sampler layout I, V, I, V
LABELS = torch.tensor([0, 0, 1, 1])
MODALITY = torch.tensor([1, 0, 1, 0])


def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def kl(p_logits, q_logits):
    """KL(softmax p || softmax q) of one row."""
    p, q = softmax(p_logits), softmax(q_logits)
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def entropy(row):
    return -sum(p * math.log(p) for p in softmax(row))


def softplus(v):
    return math.log1p(math.exp(v))


def rows(t):
    return t.tolist()


def affinity_logits(fa, fb):
    """D(f_a^i, f_b^k) for all i, k (Eq. 15 before the softmax)."""
    return [[math.dist(a, b) for b in fb] for a in fa]


def tgsa_by_hand(fa, fb):
    """Eq. 16 summed over samples."""
    aa, bb, ab = affinity_logits(fa, fa), affinity_logits(fb, fb), affinity_logits(fa, fb)
    return sum(kl(aa[i], bb[i]) + kl(aa[i], ab[i]) + kl(ab[i], bb[i]) for i in range(len(fa)))


def test_kl_rows_is_forward_kl_summed_over_rows():
    p, q = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]), torch.tensor([[0.3, 0.1, 0.2], [2.0, 2.0, -2.0]])
    by_hand = kl(rows(p)[0], rows(q)[0]) + kl(rows(p)[1], rows(q)[1])
    assert L.kl_rows(p, q).item() == pytest.approx(by_hand, rel=1e-6)
    assert L.kl_rows(p, q, "mean").item() == pytest.approx(by_hand / 2, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        L.kl_rows(p, q, "batchmean")


def test_tgsa_triplet_eq16_by_hand():
    fa = torch.tensor([[0.0, 0.0], [1.0, 0.5], [2.0, -1.0]], dtype=torch.float64)
    fb = torch.tensor([[0.5, 0.0], [1.0, 1.5], [-1.0, 0.0]], dtype=torch.float64)
    assert L.tgsa_triplet(fa, fb).item() == pytest.approx(tgsa_by_hand(rows(fa), rows(fb)), rel=1e-5)
    # identical features give identical A(a;a), A(b;b), A(a;b): nothing to align
    assert L.tgsa_triplet(fa, fa).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_margin_softplus_eq10_by_hand():
    zf = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]], dtype=torch.float64)
    zp = torch.tensor([[3.0, -1.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    by_hand = sum(softplus(entropy(p) - entropy(f)) for f, p in zip(rows(zf), rows(zp))) / 2
    assert L.entropy_margin(zf, zp, penalty="softplus").item() == pytest.approx(by_hand, rel=1e-6)
    code = sum(math.exp(max(entropy(p) - entropy(f), 0)) - 1 for f, p in zip(rows(zf), rows(zp))) / 2
    assert L.entropy_margin(zf, zp).item() == pytest.approx(code, rel=1e-6)


def test_modal_centroid_softplus_eq11_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    modality = torch.tensor([1, 0, 1, 0, 1, 0])
    f1 = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 3.0], [0.0, 0.0], [1.0, -1.0], [4.0, 0.0]])
    f2 = f1 * 0.5

    def gap(f):
        out = []
        for u in (0, 1):
            v = [r for r, y, m in zip(rows(f), labels.tolist(), modality.tolist()) if y == u and m == 0]
            i = [r for r, y, m in zip(rows(f), labels.tolist(), modality.tolist()) if y == u and m == 1]
            cv = [sum(c) / len(v) for c in zip(*v)]
            ci = [sum(c) / len(i) for c in zip(*i)]
            out.append(math.sqrt(sum((a - b + 1e-6) ** 2 for a, b in zip(cv, ci))))
        return out

    by_hand = sum(softplus(d2 - d1) for d1, d2 in zip(gap(f1), gap(f2))) / 2
    assert L.modal_centroid(f1, f2, labels, modality, penalty="softplus").item() == pytest.approx(by_hand, rel=1e-6)
    with pytest.raises(ValueError, match="both modalities"):
        L.modal_centroid(f1[:2], f2[:2], torch.tensor([0, 1]), torch.tensor([1, 0]))


def _tiny_outputs(seed=0, c=3, d=2, k_heads=1):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    out = {"feat_sh": r(4, d), "feat_sp": r(4, d), "logits_sh": r(4, c), "logits_sp": r(4, c),
           "ent_logits": r(4, c), "ent_logits_p": r(4, c), "pool_in": r(4, d), "pool_in_p": r(4, d),
           "feat_sp_raw": r(4, d), "logits_sp_raw": r(4, c),
           "d_sp_logits": [r(4, 2) for _ in range(k_heads)], "d_sh_logits": [r(4, 2) for _ in range(k_heads)]}
    return out


def ce(z, y):
    return -math.log(softmax(z)[y])


def triplet_by_hand(f, labels, margin):
    total = 0.0
    for i, a in enumerate(f):
        pos = max(math.dist(a, b) for b, y in zip(f, labels) if y == labels[i])
        neg = min(math.dist(a, b) for b, y in zip(f, labels) if y != labels[i])
        total += max(pos - neg + margin, 0.0)
    return total / len(f)


def test_paper_total_loss_eq21_by_hand():
    """L = L_b + 0.1 L_ip + 0.6 L_tgsa + 0.8 L_csa + L_mdr with every term written out (K = 2 heads)."""
    out = _tiny_outputs(k_heads=2)
    s = IDKLLossSettings(**PAPER)
    total, metrics = L.idkl_total_loss(out, LABELS, MODALITY, s)
    y, t = LABELS.tolist(), MODALITY.tolist()
    R = {k: rows(v) if torch.is_tensor(v) else [rows(x) for x in v] for k, v in out.items()}
    mean_ce = lambda z, tgt: sum(ce(a, b) for a, b in zip(z, tgt)) / len(tgt)  # noqa: E731
    vis, ir = [1, 3], [0, 2]
    l_b = (mean_ce(R["logits_sh"], y) + triplet_by_hand(R["feat_sh"], y, 1.3)                    # L_reid(f_sh)
           + sum(mean_ce(z, t) for z in R["d_sh_logits"])                                         # L_C, true labels
           + mean_ce(R["logits_sp_raw"], y) + triplet_by_hand(R["feat_sp_raw"], y, 1.3)          # L_reid(f_sp)
           + sum(mean_ce(z, t) for z in R["d_sp_logits"]))                                        # L_D
    l_e = sum(softplus(entropy(p) - entropy(f)) for f, p in zip(R["ent_logits"], R["ent_logits_p"])) / 4
    gaps = []
    for f in (R["pool_in"], R["pool_in_p"]):
        gaps.append([math.sqrt(sum((a - b + 1e-6) ** 2 for a, b in zip(f[v], f[i]))) for v, i in zip(vis, ir)])
    l_r = sum(softplus(d2 - d1) for d1, d2 in zip(*gaps)) / 2
    l_ip = l_e + l_r + mean_ce(R["logits_sp"], y) + triplet_by_hand(R["feat_sp"], y, 1.3)       # Eq. 13
    pick = lambda m, idx: [m[j] for j in idx]  # noqa: E731
    l_tgsa = (tgsa_by_hand(pick(R["feat_sp"], vis), pick(R["feat_sh"], vis))
              + tgsa_by_hand(pick(R["feat_sp"], ir), pick(R["feat_sh"], ir)))                   # Eq. 17
    l_csa = sum(kl(R["logits_sh"][v], R["logits_sp"][v]) + kl(R["logits_sh"][i], R["logits_sp"][i])
                for v, i in zip(vis, ir))                                                         # Eq. 19
    l_mdr = (tgsa_by_hand(pick(R["feat_sh"], vis), pick(R["feat_sh"], ir))
             + sum(kl(R["logits_sh"][v], R["logits_sh"][i]) for v, i in zip(vis, ir)))          # Eq. 20
    expected = l_b + 0.1 * l_ip + 0.6 * l_tgsa + 0.8 * l_csa + l_mdr
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["tgsa"].item() == pytest.approx(l_tgsa, rel=1e-5)
    assert metrics["csa"].item() == pytest.approx(l_csa, rel=1e-6)
    assert "sm_kl" not in metrics and "soft_dt" not in metrics


def test_reference_weights_switch_replaces_batch_size():
    out = _tiny_outputs()
    big = IDKLLossSettings(id_sh=0, id_sp=0, tri_sh=0, tri_sp=0, discriminator=0, confuser=0, ip_e=0, ip_r=0,
                           csa=0, mdr_logit=0, mdr_graph_mixed=0)
    small = IDKLLossSettings(**{**big.as_dict(), **REFERENCE_SMALL_BATCH})
    sh_v, sh_i = out["feat_sh"][[1, 3]], out["feat_sh"][[0, 2]]
    sp_v, sp_i = out["feat_sp"][[1, 3]], out["feat_sp"][[0, 2]]
    parts = L.tgsa_reference(sh_v, sh_i, sp_v, sp_i, mixed=False)
    _, m_big = L.idkl_total_loss(out, LABELS, MODALITY, big)
    _, m_small = L.idkl_total_loss(out, LABELS, MODALITY, small)
    assert m_big["soft_dt"].item() == pytest.approx((parts["intra1"] + 0.6 * (parts["inter_v"] + parts["inter_i"])).item())
    assert m_small["soft_dt"].item() == pytest.approx(0.1 * (parts["intra1"] + parts["inter_v"] + parts["inter_i"]).item())


def test_zero_weight_skips_the_term():
    out = _tiny_outputs()
    s = IDKLLossSettings(tgsa=0, mdr_graph=0, mdr_graph_mixed=0, csa=0, mdr_logit=0, ip_e=0, ip_r=0)
    total, metrics = L.idkl_total_loss(out, LABELS, MODALITY, s)
    assert set(metrics) == {"ce", "id_pl", "tri", "unad", "pse", "acc"}
    expected = sum(metrics[k] for k in ("ce", "id_pl", "tri", "unad", "pse"))
    assert torch.allclose(total, expected)


def test_layout_errors_are_clear():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="3 visible and 1 infrared"):
        L.split_modalities(x, torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="share an identity"):
        L.split_modalities(x, MODALITY, torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="0 .visible. or 1"):
        L.split_modalities(x, torch.tensor([0, 1, 2, 1]))
    out = _tiny_outputs()
    with pytest.raises(ValueError, match="alternating"):
        L.idkl_total_loss(out, torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, 0, 0]),
                          IDKLLossSettings(tgsa=0, mdr_graph=0, mdr_graph_mixed=0, csa=0, mdr_logit=0))
    with pytest.raises(ValueError, match="even number"):
        L.tgsa_reference(*(torch.zeros(3, 2),) * 4, mixed=True)


def test_confuser_targets_half_flipped_on_sampler_layout():
    t = torch.tensor([1, 0] * 4)
    target = L.confuser_targets(t)
    assert target.tolist() == [1, 0, 0, 1, 1, 0, 0, 1]
    assert (target == t).float().mean().item() == 0.5
    with pytest.raises(ValueError, match="even batch"):
        L.confuser_targets(torch.tensor([1, 0, 1]))


def test_settings_validation():
    with pytest.raises(ValueError, match="loss.graph must be one of reference, paper, got 'nope'"):
        parse_section(IDKLLossSettings, {"graph": "nope"}, "loss")
    with pytest.raises(ValueError, match=r"unknown loss setting\(s\) lambda9"):
        parse_section(IDKLLossSettings, {"lambda9": 1}, "loss")


def test_triplet_hard_by_hand_and_single_identity_error():
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert L.triplet_hard(f, y, 0.3).item() == pytest.approx(triplet_by_hand(rows(f), y.tolist(), 0.3), rel=1e-5)
    with pytest.raises(ValueError, match="two identities"):
        L.triplet_hard(f, torch.zeros(4, dtype=torch.long))
