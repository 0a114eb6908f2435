"""KL divergences between rows of logits (or of affinity scores).

Two forms exist for IDKL: the released code's symmetric, batch-averaged KL
(used for TGSA, CSA and MDR alike) and the paper's one-directional KL summed
over samples (Eq. 16, 19, 20).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_batchmean(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(q) || softmax(p)) summed over columns, averaged over the R rows.

    Argument order follows ``F.kl_div``: the first argument is the one in the
    log-input slot. Shapes (R, M) -> scalar.
    """
    if p_logits.shape != q_logits.shape or p_logits.dim() != 2:
        raise ValueError(f"kl_batchmean needs two (R, M) tensors of equal shape, got "
                         f"{tuple(p_logits.shape)} and {tuple(q_logits.shape)}")
    return F.kl_div(F.log_softmax(p_logits, dim=1), F.log_softmax(q_logits, dim=1),
                    reduction="batchmean", log_target=True)


def sym_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric KL, ``kl_batchmean(a, b) + kl_batchmean(b, a)`` (IDKL code form)."""
    return kl_batchmean(a, b) + kl_batchmean(b, a)


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Paper form KL(P || Q) per row with P = softmax(p), Q = softmax(q); summed or averaged over rows.

    The paper writes KL(A, B) for the divergence of distribution A from B
    (Eq. 16, 19, 20) and sums it over samples; ``reduction="mean"`` averages.
    """
    if p_logits.shape != q_logits.shape or p_logits.dim() != 2:
        raise ValueError(f"kl_rows needs two (R, M) tensors of equal shape, got "
                         f"{tuple(p_logits.shape)} and {tuple(q_logits.shape)}")
    log_p, log_q = F.log_softmax(p_logits, dim=1), F.log_softmax(q_logits, dim=1)
    per_row = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.mean()
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def regroup_by_identity(logits: torch.Tensor, run: int) -> torch.Tensor:
    """(P*m, C) rows in identity runs of ``m`` -> (m, P*C): block p goes to columns p*C..p*C+C-1."""
    n, c = logits.shape
    if run < 1 or n % run:
        raise ValueError(f"cannot cut {n} rows into identity runs of {run}")
    p = n // run
    return logits.reshape(p, run, c).permute(1, 0, 2).reshape(run, p * c)


def sm_kl(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The released code's regrouped "class-matrix" symmetric KL (not in the paper).

    ``logits1``/``logits2``: (P*K, C), one modality, identity-major runs of K.
    ``labels``: label vector of the whole batch; K = count(labels[0]) // 2.
    Softmax runs over all P*C columns of the regrouped (K, P*C) matrices.
    """
    run = int((labels == labels[0]).sum()) // 2
    return sym_kl(regroup_by_identity(logits1, run), regroup_by_identity(logits2, run))
