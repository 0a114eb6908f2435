"""The ReID loss L_reid of the paper (Eq. 5): identity cross-entropy + batch-hard triplet."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def id_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of (B, C) logits against (B,) class ids, mean over rows."""
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


HALF_DTYPES = (torch.float16, torch.bfloat16)


def pairwise_sq_dist(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """|x_i|^2 + |y_j|^2 - 2 x_i.y_j for (n, D) and (m, D) -> (n, m) (may be slightly < 0).

    Always at least float32, also under fp16/bf16 autocast: half inputs are
    cast to float32 and autocast is switched off for the product. The metric
    losses see un-normalised pooled features of norm ~100: their squared
    norms (~1e4) sit next to fp16's maximum 65504 (a norm of 256 overflows,
    and inf - inf is NaN), and bf16's spacing at 1e4 is 64, so a squared
    distance of 400 comes out wrong by tens of percent. The reference code
    computes these distances in fp32. float64 inputs stay float64.
    """
    y = x if y is None else y
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float() if x.dtype in HALF_DTYPES else x
        y = y.float() if y.dtype in HALF_DTYPES else y
        xx = x.pow(2).sum(dim=1, keepdim=True)
        yy = y.pow(2).sum(dim=1, keepdim=True)
        return torch.addmm(xx + yy.t(), x, y.t(), beta=1, alpha=-2)


def hardest_pairs(dist: torch.Tensor, labels: torch.Tensor,
                  who: str = "batch-hard triplet") -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-hard mining on a (B, B) distance: per anchor, the largest distance to its own identity (itself
    included) and the smallest to any other identity -> (d_ap (B,), d_an (B,)).

    The one mining step of every batch-hard triplet (L2 on features here, the
    CM-LSP shortest-path distance in ``losses.cmlsp``); ``who`` names the
    loss in the errors.
    """
    if dist.dim() != 2 or dist.shape[0] != dist.shape[1] or labels.shape != dist.shape[:1]:
        raise ValueError(f"{who} needs dist (B, B) and labels (B,), got {tuple(dist.shape)} "
                         f"and {tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]
    if bool(same.all()):
        raise ValueError(f"{who} needs at least two identities in the batch")
    return dist.masked_fill(~same, float("-inf")).amax(dim=1), dist.masked_fill(same, float("inf")).amin(dim=1)


def triplet_hard(feat: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
                 sq_clamp_min: float = 1e-12, return_dists: bool = False):
    """Batch-hard triplet loss over the whole batch (both modalities mined together).

    Distances sqrt(max(squared distance, ``sq_clamp_min``)) over the full B x B
    matrix; hardest positive = max over same label (the anchor itself
    included), hardest negative = min over other labels; loss = mean of
    max(d_ap - d_an + margin, 0). ``feat`` (B, D), ``labels`` (B,).
    """
    if feat.dim() != 2 or labels.shape != feat.shape[:1]:
        raise ValueError(f"triplet_hard needs feat (B, D) and labels (B,), got {tuple(feat.shape)} "
                         f"and {tuple(labels.shape)}")
    d_ap, d_an = hardest_pairs(pairwise_sq_dist(feat).clamp(min=sq_clamp_min).sqrt(), labels, "triplet_hard")
    loss = F.relu(d_ap - d_an + margin).mean()
    return (loss, d_ap, d_an) if return_dists else loss
