"""MSCLNet's losses (ECCV 2022; survey seed 002, section 7, eqs. of 3.2-3.4), each a pure function.

Modality synergy (trains the extractors theta_v, theta_r):

    L_div = -KL(f^v || f^r) = -(1/N) sum_i sum_k p_ik^v log(p_ik^v / p_ik^r),  p_i = softmax(f^_i)
    L_t   = CE(visible logits) + CE(infrared logits)

Modality complement (trains the synergy encoder theta_s only):

    L_local  = (1/N) sum_i sum_{j=1..n} [cos(b_j^v, b_j^s) + sqrt(2 - 2 cos(b_j^v, b_j^s))]
    L_global = (1/N) sum_i |C^s_{y_i} - C^r_{y_i}|^2

Cascaded aggregation (camera sub-classes s inside identities y):

    L_sub   = (1/N) sum_i |f_i - C_{s_i}|^2
    L_intra = (1/N) sum_i sum_{j in sub-classes of y_i} |C_{s_j} - C_{y_i}|^2
    L_inter = -(1 / C(N, 2)) sum_i sum_{j != i} |C_{y_i} - C_{y_j}|^2

Centres are batch means. The survey writes KL over "the normalised
features" without saying how they become distributions; here a softmax over
each row (vireid's reading). L_inter sums over ordered pairs of samples but
divides by the number of unordered ones, as written.

Which parameters each loss reaches is the recipe's business (detached inputs);
these functions differentiate through every input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def divergence(visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
    """visible, infrared (N, D), row i a pair -> -(1/N) sum_i KL(softmax(v_i) || softmax(r_i)), a scalar <= 0."""
    if visible.dim() != 2 or visible.shape != infrared.shape:
        raise ValueError(f"divergence needs two (N, D) tensors of one shape, got {tuple(visible.shape)} and "
                         f"{tuple(infrared.shape)}")
    log_p, log_q = F.log_softmax(visible, dim=1), F.log_softmax(infrared, dim=1)
    return -(log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def modality_ce(logits: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """logits (B, K), labels (B,), modality (B,) -> CE over the visible rows + CE over the infrared rows.

    Each CE is the mean over its modality's rows; a modality absent from the batch adds 0.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1] or modality.shape != labels.shape:
        raise ValueError(f"modality_ce needs logits (B, K), labels (B,), modality (B,), got "
                         f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(modality.shape)}")
    total = logits.new_zeros(())
    for value in torch.unique(modality):
        rows = modality == value
        total = total + F.cross_entropy(logits[rows], labels[rows], label_smoothing=label_smoothing)
    return total


def local_complement(visible_parts: torch.Tensor, synergy_parts: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """visible_parts, synergy_parts (N, n, D) -> (1/N) sum_i sum_j [cos + sqrt(2 - 2 cos)] (a scalar).

    Per part the term is c + sqrt(2 - 2c): 1 at c = +-1 and largest (1.5) at
    c = 1/2. The sqrt's argument is clamped at ``eps`` so the gradient stays
    finite at c = 1.
    """
    if visible_parts.dim() != 3 or visible_parts.shape != synergy_parts.shape:
        raise ValueError(f"local_complement needs two (N, n, D) tensors of one shape, got "
                         f"{tuple(visible_parts.shape)} and {tuple(synergy_parts.shape)}")
    cos = F.cosine_similarity(visible_parts, synergy_parts, dim=2)
    return (cos + (2 - 2 * cos).clamp(min=eps).sqrt()).sum(dim=1).mean()


def group_means(feat: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """feat (N, D), group (N,) in [0, groups) with every group present -> (groups, D) means."""
    onehot = F.one_hot(group, groups).to(feat.dtype)  # (N, G)
    return onehot.t() @ feat / onehot.sum(dim=0)[:, None]


def class_centres(feat: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centres (U, D), ids (U,) sorted, inverse (N,)): the mean feature of each label in the batch."""
    if feat.dim() != 2 or labels.shape != feat.shape[:1]:
        raise ValueError(f"class centres need feat (N, D) and labels (N,), got {tuple(feat.shape)} and "
                         f"{tuple(labels.shape)}")
    ids, inverse = torch.unique(labels, return_inverse=True)
    return group_means(feat, inverse, ids.numel()), ids, inverse


def global_complement(synergy: torch.Tensor, synergy_labels: torch.Tensor, infrared: torch.Tensor,
                      infrared_labels: torch.Tensor) -> torch.Tensor:
    """synergy (N, D) with labels (N,); infrared (M, D) with labels (M,) -> (1/N) sum_i |C^s_{y_i} - C^r_{y_i}|^2.

    Every synergy label must have an infrared sample.
    """
    c_s, ids_s, inverse = class_centres(synergy, synergy_labels)
    c_r, ids_r, _ = class_centres(infrared, infrared_labels)
    pos = torch.searchsorted(ids_r, ids_s).clamp(max=ids_r.numel() - 1)
    missing = ids_s[ids_r[pos] != ids_s]
    if missing.numel():
        raise ValueError(f"global_complement: identities {missing.tolist()} have synergy features but no "
                         "infrared sample in the batch")
    return (c_s - c_r[pos])[inverse].pow(2).sum(dim=1).mean()


def _subclasses(labels: torch.Tensor, camids: torch.Tensor):
    """(keys (S, 2) = (label, camera) sorted, inverse (N,)): the camera sub-classes of the batch."""
    if labels.dim() != 1 or camids.shape != labels.shape:
        raise ValueError(f"sub-classes need labels (N,) and camids (N,), got {tuple(labels.shape)} and "
                         f"{tuple(camids.shape)}")
    return torch.unique(torch.stack([labels.long(), camids.long()], dim=1), dim=0, return_inverse=True)


def subclass_aggregation(feat: torch.Tensor, labels: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    """feat (N, D), labels (N,), camids (N,) -> (1/N) sum_i |f_i - C_{s_i}|^2, s_i = (y_i, camera_i)."""
    keys, inverse = _subclasses(labels, camids)
    centres = group_means(feat, inverse, keys.shape[0])
    return (feat - centres[inverse]).pow(2).sum(dim=1).mean()


def intra_aggregation(feat: torch.Tensor, labels: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    """feat (N, D), labels (N,), camids (N,) -> (1/N) sum_i sum_{s of y_i} |C_s - C_{y_i}|^2.

    C_y is the mean of the identity's samples (not of its sub-class centres).
    """
    keys, sub_inverse = _subclasses(labels, camids)
    sub_centres = group_means(feat, sub_inverse, keys.shape[0])
    centres, ids, inverse = class_centres(feat, labels)
    owner = torch.searchsorted(ids, keys[:, 0].to(ids.dtype).contiguous())  # each sub-class's identity
    per_sub = (sub_centres - centres[owner]).pow(2).sum(dim=1)
    per_identity = per_sub.new_zeros(ids.numel()).index_add(0, owner, per_sub)
    return per_identity[inverse].mean()


def inter_aggregation(feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """feat (N, D), labels (N,) -> -(1 / C(N, 2)) sum_i sum_{j != i} |C_{y_i} - C_{y_j}|^2 (a scalar <= 0).

    Computed on the U identity centres: sum_{i != j} = sum_{u, v} n_u n_v |C_u - C_v|^2.
    """
    n = labels.numel()
    if n < 2:
        raise ValueError(f"inter_aggregation needs at least 2 samples, got {n}")
    centres, ids, inverse = class_centres(feat, labels)
    counts = torch.bincount(inverse, minlength=ids.numel()).to(feat.dtype)
    dist = (centres[:, None, :] - centres[None, :, :]).pow(2).sum(dim=2)
    return -(counts @ dist @ counts) / (n * (n - 1) / 2)
