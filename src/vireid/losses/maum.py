"""MAUM's losses (Liu et al., CVPR 2022; survey seed 002, section 5).

Modality-specific cross-entropy (the survey's L_RGB; L_IR alike): the RGB
classifier sees only the batch's N^R RGB features,

    L_RGB = -1/N^R sum_i log softmax(W^R x_i^R)_{y_i}

Unidirectional metric R -> I: for an RGB feature x with label y, the IR
memory holds N positive proxies u_1..u_N (identity y, one per stored slot)
and M negative proxies v_1..v_M (every other identity in every slot):

    L_{R->I}(x) = log[1 + sum_{j=1}^M sum_{i=1}^N exp(alpha (v_j.x - u_i.x + delta))]

with x, u, v L2-normalised; the loss is the mean over the batch's RGB
features. I -> R swaps the roles. The double sum factorises,

    sum_j sum_i exp(alpha (v_j.x - u_i.x + delta)) = exp(alpha delta) sum_j exp(alpha v_j.x) sum_i exp(-alpha u_i.x),

so L = softplus(alpha delta + LSE_j(alpha v_j.x) + LSE_i(-alpha u_i.x)):
two log-sum-exps and a softplus, finite for any alpha, and N x M times
cheaper than the double sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reid import id_loss


def modality_specific_ce(logits: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
                         value: int) -> torch.Tensor:
    """CE of the rows whose modality is ``value``: logits (B, C), labels (B,), modality (B,) -> scalar.

    Mean over those rows only (the survey's 1/N^R); 0 (still attached to the graph) when there are none.
    """
    rows = modality == value
    if not bool(rows.any()):
        return logits.sum() * 0.0
    return id_loss(logits[rows], labels[rows])


def unidirectional_loss(anchors: torch.Tensor, labels: torch.Tensor, memory: torch.Tensor,
                        alpha: float, delta: float) -> torch.Tensor:
    """Mean over anchors of log(1 + sum_j sum_i exp(alpha (v_j.x - u_i.x + delta))), computed stably.

    anchors (B, D): features of one modality; labels (B,) in [0, C); memory (S, C, D): the other
    modality's stored proxies (slot s, identity c). u = memory[:, y] (S positives), v = memory[:, c != y]
    (S (C - 1) negatives). Anchors and proxies are L2-normalised here; the memory gets no gradient.
    """
    if anchors.dim() != 2 or labels.shape != anchors.shape[:1]:
        raise ValueError(f"unidirectional loss needs anchors (B, D) and labels (B,), got {tuple(anchors.shape)} "
                         f"and {tuple(labels.shape)}")
    if memory.dim() != 3 or memory.shape[2] != anchors.shape[1] or memory.shape[0] < 1:
        raise ValueError(f"unidirectional loss needs a memory (S >= 1, C, D={anchors.shape[1]}), "
                         f"got {tuple(memory.shape)}")
    num_classes = memory.shape[1]
    if num_classes < 2:
        raise ValueError("unidirectional loss needs at least two identities in the memory (no negatives)")
    if anchors.shape[0] == 0:
        return anchors.sum() * 0.0
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min().item()}..{labels.max().item()}")
    x = F.normalize(anchors, dim=1)
    proxies = F.normalize(memory.detach(), dim=2)
    sim = torch.einsum("bd,scd->bsc", x, proxies)  # (B, S, C) cosine similarities
    positive = F.one_hot(labels, num_classes).bool()[:, None, :].expand_as(sim)
    lse_neg = (alpha * sim).masked_fill(positive, float("-inf")).flatten(1).logsumexp(dim=1)
    lse_pos = (-alpha * sim).masked_fill(~positive, float("-inf")).flatten(1).logsumexp(dim=1)
    return F.softplus(alpha * delta + lse_neg + lse_pos).mean()
