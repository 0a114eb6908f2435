"""Hetero-center triplet loss (HcTri; Liu, Tan, Zhou, IEEE TMM 2021; MBFVRD Eq. 12-14).

For each identity i in the batch, the centre of its visible features c_v^i
and of its infrared features c_t^i. Each of the 2P centres is an anchor; its
one positive is the same identity's centre of the other modality, its
negatives the centres of every other identity in both modalities:

    L = mean over anchors c of max(0, m + |c - c+| - min_{c-} |c - c-|),  m = 0.3

Distances are sqrt(max(squared distance, 1e-12)). The HcTri code averages
over the 2P anchors (the MBFVRD paper writes a sum); we average. Unlike the
reference, which cuts the batch into contiguous chunks and so depends on the
sampler's layout, centres are formed by grouping on (label, modality); the
centres are ordered as the reference's chunks are for its layout (identities
in order of first appearance, visible centres then infrared ones). Distances
are computed at >= float32 precision, also under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.records import INFRARED, VISIBLE
from .reid import HALF_DTYPES, hardest_pairs, pairwise_sq_dist


def modality_centers(feat: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor):
    """(centres (2P, D): P visible then P infrared, ids (P,)): per identity and modality mean features.

    Identities are in order of first appearance in ``labels``. Computed in (at least) float32, also
    under autocast.

    Every identity in the batch must appear in both modalities.
    """
    if feat.dim() != 2 or labels.shape != feat.shape[:1] or modality.shape != feat.shape[:1]:
        raise ValueError(f"hetero-center triplet needs feat (B, D), labels (B,) and modality (B,), got "
                         f"{tuple(feat.shape)}, {tuple(labels.shape)} and {tuple(modality.shape)}")
    ids = first_seen(labels)
    if feat.dtype in HALF_DTYPES:  # centres of features of norm ~100 lose precision in half (see pairwise_sq_dist)
        feat = feat.float()
    with torch.autocast(device_type=feat.device.type, enabled=False):
        return _centres(feat, labels, modality, ids), ids


def _centres(feat: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    centres = []
    for value in (VISIBLE, INFRARED):
        rows = modality == value
        onehot = (labels[rows][None, :] == ids[:, None]).to(feat.dtype)  # (P, n)
        counts = onehot.sum(dim=1, keepdim=True)
        if bool((counts == 0).any()):
            missing = ids[(counts[:, 0] == 0)].tolist()
            raise ValueError(f"hetero-center triplet needs every identity in both modalities; identities "
                             f"{missing} have no {'visible' if value == VISIBLE else 'infrared'} sample")
        centres.append(onehot @ feat[rows] / counts)
    return torch.cat(centres)


def first_seen(labels: torch.Tensor) -> torch.Tensor:
    """The distinct values of ``labels`` in order of first appearance."""
    ids, inverse = torch.unique(labels, return_inverse=True)
    first = torch.full((ids.numel(),), labels.numel(), dtype=torch.long, device=labels.device)
    first = first.scatter_reduce(0, inverse, torch.arange(labels.numel(), device=labels.device), reduce="amin")
    return ids[first.argsort()]


def hetero_center_parts(feat: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
                        margin: float = 0.3) -> dict[str, torch.Tensor]:
    """Loss and intermediates: ``loss``, ``dist_ap``/``dist_an`` (2P,) per centre, ``ids`` (P,).

    Positive = max distance to a centre of the same identity (in effect its
    other-modality centre), negative = min distance to another identity's
    centre in either modality, as the reference's batch-hard mining on centres.
    """
    centres, ids = modality_centers(feat, labels, modality)
    p = ids.numel()
    if p < 2:
        raise ValueError(f"hetero-center triplet needs at least two identities, got {p}")
    dist = pairwise_sq_dist(centres).clamp(min=1e-12).sqrt()
    owner = torch.arange(p, device=feat.device).repeat(2)
    positive, negative = hardest_pairs(dist, owner, "hetero-center triplet")
    return {"loss": F.relu(margin + positive - negative).mean(), "dist_ap": positive, "dist_an": negative,
            "ids": ids}


def hetero_center_triplet(feat: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
                          margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet among the 2P identity-modality centres (see the module docstring)."""
    return hetero_center_parts(feat, labels, modality, margin)["loss"]
