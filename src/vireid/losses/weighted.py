"""Soft-weighted triplet losses: AGW's WRT and CAJ's ADP / enhanced squared difference (ESD).

Both use every positive and every negative of an anchor, weighted by a
softmax of the distances (far positives and near negatives weigh most):

    d_p(i) = sum_{j in P_i} w_ij d_ij,  w_ij = exp(a d_ij) / (sum_{k in P_i} exp(a d_ik) + eps)
    d_n(i) = sum_{k in N_i} v_ik d_ik,  v_ik = exp(-a d_ik) / (sum_{l in N_i} exp(-a d_il) + eps)

P_i includes the anchor itself (distance ~0), as in the reference; d is the
Euclidean distance sqrt(max(|x_i - x_j|^2, 1e-12)) of the (unnormalised)
features; eps = 1e-6 as in the reference code.

* WRT (AGW, Ye et al. TPAMI 2021, Eq. in seed 002): a = 1,
  L = mean_i log(1 + exp(d_p - d_n)); no margin.
* ADP with ``square=False``: L = mean_i log(1 + exp(gamma (d_p - d_n))).
* ESD (CAJ, Ye et al. ICCV 2021, ``--method adp --square 1``):
  s = min(gamma (d_p - d_n)^2, 88), y = -1 where d_p > d_n (violated) else +1,
  L = mean_i log(1 + exp(-y s)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reid import pairwise_sq_dist


def _check(feat: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
    if feat.dim() != 2 or labels.shape != feat.shape[:1]:
        raise ValueError(f"{name} needs feat (B, D) and labels (B,), got {tuple(feat.shape)} and "
                         f"{tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]
    if bool(same.all(dim=1).any()):
        raise ValueError(f"{name} needs a negative for every anchor: at least two identities in the batch, "
                         f"got labels {sorted(set(labels.tolist()))}")
    return same


def masked_softmax_weights(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Row softmax of ``values`` restricted to ``mask`` (zero elsewhere), with ``eps`` in the denominator."""
    shifted = values.masked_fill(~mask, float("-inf"))
    top = shifted.amax(dim=1, keepdim=True)
    e = torch.exp(shifted - top) * mask
    return e / (e.sum(dim=1, keepdim=True) + eps)


def weighted_distances(feat: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, eps: float = 1e-6,
                       name: str = "weighted triplet") -> tuple[torch.Tensor, torch.Tensor]:
    """(d_p, d_n), each (B,): the softmax-weighted positive and negative distances of every anchor."""
    same = _check(feat, labels, name)
    dist = pairwise_sq_dist(feat).clamp(min=1e-12).sqrt()
    w_p = masked_softmax_weights(alpha * dist, same, eps)
    w_n = masked_softmax_weights(-alpha * dist, ~same, eps)
    return (w_p * dist).sum(dim=1), (w_n * dist).sum(dim=1)


def wrt_loss(feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AGW's weighted regularisation triplet: mean_i softplus(d_p(i) - d_n(i)). ``feat`` (B, D), ``labels`` (B,)."""
    d_p, d_n = weighted_distances(feat, labels, name="wrt_loss")
    return F.softplus(d_p - d_n).mean()


def adp_loss(feat: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, gamma: float = 1.0,
             square: bool = True, clamp: float = 88.0) -> torch.Tensor:
    """CAJ's ADP triplet; ``square=True`` is the enhanced squared difference CAJ trains with.

    alpha scales the distances inside the softmax weights; gamma scales the
    difference; the squared term is clamped at ``clamp`` (88, so exp stays finite in fp32).
    """
    d_p, d_n = weighted_distances(feat, labels, alpha, name="adp_loss")
    diff = d_p - d_n
    if not square:
        return F.softplus(gamma * diff).mean()
    s = (gamma * diff.pow(2)).clamp(max=clamp)
    y = torch.where(diff > 0, -1.0, 1.0).to(s.dtype)  # -1: violated (positive farther than negative)
    return F.softplus(-y * s).mean()
