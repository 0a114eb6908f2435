"""NFormer's losses (Wang et al., CVPR 2022): label-smoothed CE + batch-hard triplet + centre loss, per stage.

Both stages use the same mix (the released code's ``make_loss_with_center`` and
``make_nformer_loss_with_center``; the paper trains the NFormer "with the
same loss functions" as the extractor):

    L = CE_ls(logits, y; eps = 0.1) + L_tri(f, y; margin 0.3) + 0.0005 L_C(f, y)

on the extractor's reduced pre-BN feature (stage 1) or the transformer's
output (stage 2); CE on the BN-neck logits. CE and the triplet are
:func:`vireid.losses.id_loss` and :func:`vireid.losses.triplet_hard`; the centre
loss and its centres' update are here.

The class centres are not trained by the model's optimiser: the code gives
them their own SGD (lr 0.5) and divides their gradient by the loss weight
first, so they move by 0.5 x dL_C/dc whatever the weight. :func:`centre_step`
is that SGD step as a pure function; the centres live in model buffers.
"""

from __future__ import annotations

import torch


def _check(feat: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> None:
    if feat.dim() != 2 or labels.shape != feat.shape[:1] or centres.dim() != 2 or centres.shape[1] != feat.shape[1]:
        raise ValueError(f"the centre loss needs feat (B, D), labels (B,) and centres (C, D), got "
                         f"{tuple(feat.shape)}, {tuple(labels.shape)} and {tuple(centres.shape)}")


def centre_loss(feat: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """L_C = (1/B) sum_i |f_i - c_{y_i}|^2: feat (B, D), labels (B,) in [0, C), centres (C, D) -> scalar.

    The released code's CenterLoss (Wen et al. 2016 without their factor 1/2). Gradients reach ``feat``
    only: the centres are moved by :func:`centre_step`. Computed in float32 at least.
    """
    _check(feat, labels, centres)
    diff = feat.float() - centres.detach().float()[labels]
    return diff.pow(2).sum(dim=1).mean()


@torch.no_grad()
def centre_step(centres: torch.Tensor, feat: torch.Tensor, labels: torch.Tensor, rate: float = 0.5) -> torch.Tensor:
    """The centres after one SGD step of size ``rate`` on L_C: c_j - rate * (2/B) sum_{i: y_i = j} (c_j - f_i).

    centres (C, D), feat (B, D) (detached here), labels (B,) -> new (C, D) tensor; classes absent from the
    batch do not move. Equals the code's ``optimizer_center`` step (SGD, lr 0.5, on the unweighted loss).
    """
    _check(feat, labels, centres)
    grad = torch.zeros_like(centres, dtype=torch.float32)
    grad.index_add_(0, labels, (centres.float()[labels] - feat.detach().float()) * (2.0 / len(labels)))
    return (centres.float() - rate * grad).to(centres.dtype)
