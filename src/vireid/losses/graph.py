"""Feature-graph terms of IDKL: TGSA distillation (Eq. 15-17) and the graph part of MDR (Eq. 20).

An affinity row of sample i is a softmax over Euclidean distances to the
other samples, with a positive sign, exp(+D), as printed in Eq. 15.

- ``tgsa_reference``: what the released code computes ("soft_dt").
- ``tgsa_triplet``: the paper's three-matrix alignment L_tgsa^(a;b) of Eq. 16.
"""

from __future__ import annotations

import torch

from .kl import kl_rows, sym_kl
from .reid import pairwise_sq_dist


def pairwise_dist(x: torch.Tensor, y: torch.Tensor | None = None, sq_clamp_min: float = 1e-6) -> torch.Tensor:
    """Euclidean distances sqrt(max(squared distance, ``sq_clamp_min``)), (n, D), (m, D) -> (n, m)."""
    return pairwise_sq_dist(x, y).clamp(min=sq_clamp_min).sqrt()


def offdiag_pairwise_dist(feat: torch.Tensor, sq_clamp_min: float = 1e-6) -> torch.Tensor:
    """Distance rows without self-pairs: (n, D) -> (n, n-1), row i lists d(i, j) for j != i in order."""
    n = feat.shape[0]
    if n < 2:
        raise ValueError(f"offdiag_pairwise_dist needs at least 2 rows, got {n}")
    dist = pairwise_dist(feat, sq_clamp_min=sq_clamp_min)
    keep = ~torch.eye(n, dtype=torch.bool, device=feat.device)
    return dist[keep].reshape(n, n - 1)


def mixed_halves(f_v: torch.Tensor, f_i: torch.Tensor) -> torch.Tensor:
    """First n/2 visible rows followed by the first n/2 infrared rows (the code's mixed set)."""
    n = f_v.shape[0]
    if n % 2:
        raise ValueError(f"the mixed visible/infrared set needs an even number of samples per modality, got {n}")
    return torch.cat([f_v[: n // 2], f_i[: n // 2]])


def tgsa_reference(sh_v, sh_i, sp_v, sp_i, mixed: bool = True) -> dict[str, torch.Tensor]:
    """The code's graph terms on pre-BN pooled features of each modality, (n, D) each.

    Returns the symmetric batch-mean KLs between distance rows:
    ``inter_v`` = symKL(H_V, S_V), ``inter_i`` = symKL(H_I, S_I) (shared vs
    specific: the TGSA distillation, Eq. 17), ``intra1`` = symKL(H_V, H_I) and,
    if ``mixed``, ``intra2`` = symKL(H_V, H_X), ``intra3`` = symKL(H_X, H_I)
    with X the mixed half/half set (graph part of MDR, Eq. 20 as coded).
    """
    h_v, h_i = offdiag_pairwise_dist(sh_v), offdiag_pairwise_dist(sh_i)
    out = {
        "inter_v": sym_kl(h_v, offdiag_pairwise_dist(sp_v)),
        "inter_i": sym_kl(h_i, offdiag_pairwise_dist(sp_i)),
        "intra1": sym_kl(h_v, h_i),
    }
    if mixed:
        h_x = offdiag_pairwise_dist(mixed_halves(sh_v, sh_i))
        out["intra2"] = sym_kl(h_v, h_x)
        out["intra3"] = sym_kl(h_x, h_i)
    return out


def tgsa_triplet(f_a: torch.Tensor, f_b: torch.Tensor, reduction: str = "sum",
                 sq_clamp_min: float = 1e-12) -> torch.Tensor:
    """Paper Eq. 16: L_tgsa^(a;b) = sum_i KL(A(a;a), A(b;b)) + KL(A(a;a), A(a;b)) + KL(A(a;b), A(b;b)).

    ``f_a``, ``f_b``: (n, D), row r of both is the same sample (Eq. 17) or the
    same identity (Eq. 20). A(x;y) row i = softmax_k exp(D(x_i, y_k)) over all
    n columns, self-pairs included (Eq. 15). KL(P, Q) = sum P log(P/Q).
    The squared distance is clamped at ``sq_clamp_min`` only to keep the
    gradient of sqrt finite at self-pairs.
    """
    if f_a.shape != f_b.shape:
        raise ValueError(f"tgsa_triplet needs two (n, D) tensors of equal shape, got "
                         f"{tuple(f_a.shape)} and {tuple(f_b.shape)}")
    c = sq_clamp_min
    a_aa, a_bb = pairwise_dist(f_a, sq_clamp_min=c), pairwise_dist(f_b, sq_clamp_min=c)
    a_ab = pairwise_dist(f_a, f_b, c)
    return (kl_rows(a_aa, a_bb, reduction) + kl_rows(a_aa, a_ab, reduction)
            + kl_rows(a_ab, a_bb, reduction))
