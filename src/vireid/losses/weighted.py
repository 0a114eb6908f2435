"""Soft-weighted triplet losses: AGW's WRT and CAJ's ADP / enhanced squared difference (ESD).

Both use every positive and every negative of an anchor, weighted by a
softmax of the distances (far positives and near negatives weigh most):

    d_p(i) = sum_{j in P_i} w_ij d_ij,  w_ij = exp(a d_ij) / (sum_{k in P_i} exp(a d_ik) + eps)
    d_n(i) = sum_{k in N_i} v_ik d_ik,  v_ik = exp(-a d_ik) / (sum_{l in N_i} exp(-a d_il) + eps)

P_i includes the anchor itself (distance ~0), as in the reference; d is the
Euclidean distance sqrt(max(|x_i - x_j|^2, 1e-12)) of the (unnormalised)
features, always computed in (at least) float32; eps = 1e-6 as in the
reference code.

* WRT (AGW, Ye et al. TPAMI 2021, Eq. in seed 002): a = 1,
  L = mean_i log(1 + exp(d_p - d_n)); no margin.
* ADP with ``square=False``: L = mean_i log(1 + exp(gamma (d_p - d_n))).
* ESD (CAJ, Ye et al. ICCV 2021, ``--method adp --square 1``):
  s = min(gamma (d_p - d_n)^2, 88), y = -1 where d_p > d_n (violated) else +1,
  L = mean_i log(1 + exp(-y s)).

Two numerics for the softmax weights (``numerics``):

* ``"textbook"``: an exact softmax over the masked entries (shift by the
  largest *masked* value). This is the formula as the papers write it.
* ``"reference"``: what AGW's ``loss.py:softmax_weights`` (and CAJ's copy)
  compute: the shift is ``max_k(v_ik * m_ik)``, the maximum over *all*
  columns of the masked product, so masked-out columns count as 0. For the
  negatives v = -d <= 0, so the shift is 0 and the normaliser is
  ``sum_neg exp(-d) + 1e-6``: once the nearest negatives are farther than
  ~14, that sum is below 1e-6, the negative weights sum to far less than 1
  and d_n collapses towards 0 (reference WRT 28.71 vs textbook 5.06 on
  2048-d features at distances 15-37, golden ``wrt_04``). In ESD the
  collapsed d_n puts |d_p - d_n| above sqrt(88) for every anchor, so the
  loss is exactly 88 with zero gradient. The released-code presets keep this
  (``loss.metric_numerics: reference``) so a run follows the reference's
  gradients; the clean form is the default everywhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reid import pairwise_sq_dist

NUMERICS = ("textbook", "reference")


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


def reference_softmax_weights(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """AGW's ``softmax_weights``: shift by max over ALL columns of ``values * mask`` (see the module docstring).

    ``exp(v - M) m / (sum exp(v - M) m + eps)`` with ``M = max_k v_k m_k``;
    the shift is not detached (its gradient cancels except through ``eps``).
    """
    m = mask.to(values.dtype)
    top = (values * m).amax(dim=1, keepdim=True)
    e = torch.exp(values - top) * m
    return e / (e.sum(dim=1, keepdim=True) + eps)


def _weights_fn(numerics: str):
    if numerics == "textbook":
        return masked_softmax_weights
    if numerics == "reference":
        return reference_softmax_weights
    raise ValueError(f"weighted-triplet numerics must be one of {', '.join(NUMERICS)}, got {numerics!r}")


def weighted_parts(feat: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, eps: float = 1e-6,
                   numerics: str = "textbook", name: str = "weighted triplet") -> dict[str, torch.Tensor]:
    """Every intermediate of the soft-weighted triplet: ``dist`` (B, B), ``weights_ap``/``weights_an``
    (B, B), ``dist_ap``/``dist_an`` (B,). ``feat`` (B, D) is used at >= float32 precision."""
    weights = _weights_fn(numerics)
    same = _check(feat, labels, name)
    dist = pairwise_sq_dist(feat).clamp(min=1e-12).sqrt()
    pos, neg = same.to(dist.dtype), (~same).to(dist.dtype)
    if numerics == "reference":  # the reference multiplies by the float masks before the softmax
        w_p = weights(alpha * dist * pos, same, eps)
        w_n = weights(-alpha * dist * neg, ~same, eps)
    else:
        w_p = weights(alpha * dist, same, eps)
        w_n = weights(-alpha * dist, ~same, eps)
    return {"dist": dist, "weights_ap": w_p, "weights_an": w_n,
            "dist_ap": (dist * pos * w_p).sum(dim=1), "dist_an": (dist * neg * w_n).sum(dim=1)}


def weighted_distances(feat: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, eps: float = 1e-6,
                       name: str = "weighted triplet", numerics: str = "textbook") -> tuple[torch.Tensor, torch.Tensor]:
    """(d_p, d_n), each (B,): the softmax-weighted positive and negative distances of every anchor."""
    parts = weighted_parts(feat, labels, alpha, eps, numerics, name)
    return parts["dist_ap"], parts["dist_an"]


def wrt_loss(feat: torch.Tensor, labels: torch.Tensor, numerics: str = "textbook") -> torch.Tensor:
    """AGW's weighted regularisation triplet: mean_i softplus(d_p(i) - d_n(i)). ``feat`` (B, D), ``labels`` (B,).

    ``numerics="reference"`` reproduces the released code's softmax (see the module docstring).
    """
    d_p, d_n = weighted_distances(feat, labels, name="wrt_loss", numerics=numerics)
    return F.softplus(d_p - d_n).mean()


def esd_terms(d_p: torch.Tensor, d_n: torch.Tensor, gamma: float = 1.0,
              clamp: float = 88.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, y) of the enhanced squared difference: s = min(gamma (d_p - d_n)^2, clamp), y = -1 where d_p > d_n.

    The clamp passes no gradient where it is active (torch's clamp), as in the reference.
    """
    diff = d_p - d_n
    s = (gamma * diff.pow(2)).clamp(max=clamp)
    y = torch.where(diff > 0, -1.0, 1.0).to(s.dtype)  # -1: violated (positive farther than negative)
    return s, y


def adp_loss(feat: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, gamma: float = 1.0,
             square: bool = True, clamp: float = 88.0, numerics: str = "textbook") -> torch.Tensor:
    """CAJ's ADP triplet; ``square=True`` is the enhanced squared difference CAJ trains with.

    alpha scales the distances inside the softmax weights; gamma scales the
    difference; the squared term is clamped at ``clamp`` (88, so exp stays
    finite in fp32). ``numerics="reference"``: the released code's softmax.
    """
    d_p, d_n = weighted_distances(feat, labels, alpha, name="adp_loss", numerics=numerics)
    if not square:
        return F.softplus(gamma * (d_p - d_n)).mean()
    s, y = esd_terms(d_p, d_n, gamma, clamp)
    return F.softplus(-y * s).mean()
