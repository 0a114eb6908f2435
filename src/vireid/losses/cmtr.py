"""CMTR's modality-aware enhancement loss, L_MAE = L_MAC + L_MAID (Liang et al.; survey seed 002, section 2).

Both parts act on the BN-neck feature f (the test feature) after the
"modality removal" r = f - phi_m(e_m), where e_m is the learned modality
embedding of the image's modality and phi_m a learned mapping of it (the
network computes r, :func:`vireid.models.cmtr.remove_modality`, so that
every parameter is used inside its forward):

    L_MAC  = sum_{q,k} log(1 + exp(D(f_qk^m - phi_m(e_m), c_q^m))),
             c_q^m = 1/K sum_k (f_qk^m - phi_m(e_m))                     (centre of identity q in modality m)
    L_MAID = sum_{q,k} CE(softmax(FC_id(f_qk^m - phi_m(e_m))), t_qk)

vireid's readings where the survey is silent (each documented again in
``configs/cmtr_sysu.yaml``):

* the sums are averaged over the batch's B images (as L_ID and L_WRT are), so
  lambda does not change meaning with the batch size;
* D is the Euclidean distance sqrt(max(|a - b|^2, 1e-12)) (the clamp keeps the
  gradient finite when an identity has one image in a modality);
* FC_id is the ID classifier of L_ID itself (the survey writes FC_id, the
  name of that classifier), applied to the modality-removed feature.

Which centre: the equation's c_q^m is the identity's centre *in modality m*.
Then phi_m(e_m), the same vector for every image of modality m, cancels in
r - c_q^m, and L_MAC does not depend on phi or e_m at all (zero gradient
there; only the ViT and the BN neck learn from it): the "modality-aware"
term is a plain per-modality centre loss. The survey's prose ("narrow the gap
between the different modalities of one identity, using what the ME learned",
seed 002:111) asks for a centre over *both* modalities of the identity, where
the removal does not cancel and phi_m and e_m learn to take the modality
offset out: ``centre="identity"``, the recipe's default since issue 21;
``centre="modality"`` keeps the equation's literal centre (the default before).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reid import HALF_DTYPES, id_loss

CENTRES = ("modality", "identity")


def group_centres(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each row's group mean: (B, D) rows and (B,) integer group keys -> (B, D), row i = mean of its group."""
    _, index = torch.unique(groups, return_inverse=True)
    onehot = F.one_hot(index).to(x.dtype)  # (B, G)
    means = (onehot.t() @ x) / onehot.sum(dim=0)[:, None]
    return means[index]


def modality_aware_centre(removed: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor,
                          centre: str = "modality") -> torch.Tensor:
    """L_MAC = mean_i log(1 + exp(|r_i - c_i|)): ``removed`` (B, D) = f - phi_m(e_m), ``labels``/``modality`` (B,).

    ``centre``: "modality" -- c_i is the mean removed feature of image i's
    identity *in its modality* (the equation's c_q^m, where phi_m(e_m)
    cancels); "identity" -- of its identity over both modalities (the prose's
    reading, the recipe's default: phi_m and e_m get a gradient). Computed in
    (at least) float32. -> scalar.
    """
    if centre not in CENTRES:
        raise ValueError(f"centre must be one of {', '.join(CENTRES)}, got {centre!r}")
    if removed.dim() != 2 or labels.shape != removed.shape[:1] or modality.shape != removed.shape[:1]:
        raise ValueError(f"L_MAC needs removed (B, D), labels (B,) and modality (B,), got {tuple(removed.shape)}, "
                         f"{tuple(labels.shape)} and {tuple(modality.shape)}")
    if removed.dtype in HALF_DTYPES:
        removed = removed.float()
    with torch.autocast(device_type=removed.device.type, enabled=False):
        groups = labels.long() * 2 + modality.long() if centre == "modality" else labels.long()
        sq = (removed - group_centres(removed, groups)).pow(2).sum(dim=1)
        return F.softplus(sq.clamp_min(1e-12).sqrt()).mean()


def modality_aware_id(logits_removed: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0):
    """L_MAID = mean_i CE(FC_id(r_i), y_i): ``logits_removed`` (B, C) of the removed features, ``labels`` (B,)."""
    return id_loss(logits_removed, labels, label_smoothing)
