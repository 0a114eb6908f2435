"""Visible-infrared pairs of a training batch, by identity (MSCLNet's synergy module, Hi-CMD's swaps)."""

from __future__ import annotations

import torch

from vireid.data.records import INFRARED, VISIBLE


def pair_by_identity(labels: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible rows, infrared rows) of the batch's visible-infrared pairs, each (P,).

    Within an identity, the k-th visible and the k-th infrared sample (batch
    order) are a pair; an identity with more samples in one modality leaves
    the extra ones unpaired (the P x (K + K) sampler gives equal counts).
    """
    if labels.dim() != 1 or modality.shape != labels.shape:
        raise ValueError(f"pairing needs labels (B,) and modality (B,), got {tuple(labels.shape)} and "
                         f"{tuple(modality.shape)}")
    vis_rows, ir_rows = [], []
    for pid in torch.unique(labels):
        same = labels == pid
        v = (same & (modality == VISIBLE)).nonzero(as_tuple=True)[0]
        r = (same & (modality == INFRARED)).nonzero(as_tuple=True)[0]
        n = min(v.numel(), r.numel())
        vis_rows.append(v[:n])
        ir_rows.append(r[:n])
    vis, ir = torch.cat(vis_rows), torch.cat(ir_rows)
    if vis.numel() == 0:
        raise ValueError("pairing visible with infrared images needs, in every batch, an identity with both a "
                         "visible and an infrared image (use the P x (K visible + K infrared) sampler)")
    return vis, ir
