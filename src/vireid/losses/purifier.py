"""Losses of the Information Purifier: L_e (Eq. 10) and L_r (Eq. 11).

Both compare a masked quantity with an unmasked one. The released code wraps
the difference in exp(relu(.)) - 1 (L_e) or a hinge (L_r); the paper uses
Softplus for both. ``penalty`` selects the wrapper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PENALTIES = ("exp_relu", "hinge", "softplus")


def _penalty(x: torch.Tensor, penalty: str) -> torch.Tensor:
    if penalty == "exp_relu":
        return torch.exp(F.relu(x)) - 1
    if penalty == "hinge":
        return F.relu(x)
    if penalty == "softplus":
        return F.softplus(x)
    raise ValueError(f"unknown penalty {penalty!r}; expected one of {PENALTIES}")


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row entropy -sum softmax * log softmax of (B, C) logits -> (B,)."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def entropy_margin(logits_f: torch.Tensor, logits_fp: torch.Tensor, margin: float = 0.0,
                   penalty: str = "exp_relu") -> torch.Tensor:
    """L_e (Eq. 10): the masked feature F^{d+} should be more certain than F.

    ``logits_f`` = C(GeM(F)), ``logits_fp`` = C(GeM(m_e * F)), both (B, C).
    Returns mean_b penalty(h(logits_fp)_b - h(logits_f)_b + margin);
    code: ``exp_relu``, paper: ``softplus``.
    """
    return _penalty(entropy(logits_fp) - entropy(logits_f) + margin, penalty).mean()


def modal_centroid_dist(feat: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor):
    """Per identity (ascending label order): ||c_visible - c_infrared + 1e-6||_2 of the two modality centroids.

    Returns (distances (U,), unique labels (U,)). Every identity must have
    samples of both modalities.
    """
    uniq, inv = torch.unique(labels, return_inverse=True)
    n_u = uniq.numel()
    cents = []
    for m in (0, 1):
        sel = modality == m
        sums = feat.new_zeros(n_u, feat.shape[1]).index_add_(0, inv[sel], feat[sel])
        counts = torch.bincount(inv[sel], minlength=n_u).to(feat.dtype)
        if (counts == 0).any():
            missing = uniq[counts == 0].tolist()
            raise ValueError(f"modal_centroid needs both modalities for every identity; labels {missing} "
                             f"have no {'visible' if m == 0 else 'infrared'} sample")
        cents.append(sums / counts[:, None])
    return F.pairwise_distance(cents[0], cents[1], p=2, eps=1e-6), uniq


def modal_centroid(f1: torch.Tensor, f2: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
                   margin: float = 0.0, penalty: str = "hinge") -> torch.Tensor:
    """L_r (Eq. 11): the masked IN feature ``f2`` should have a smaller modality gap than ``f1``.

    ``f1`` = GeM(IN(F)), ``f2`` = GeM(m_r * IN(F)), (B, D). Mean over identities
    of penalty(d_f2 - d_f1 + margin), d = visible/infrared centroid distance;
    code: ``hinge``, paper: ``softplus``.
    """
    d1, _ = modal_centroid_dist(f1, labels, modality)
    d2, _ = modal_centroid_dist(f2, labels, modality)
    return _penalty(d2 - d1 + margin, penalty).mean()
