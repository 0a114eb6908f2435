"""Split a batch into its visible and infrared rows, checking the pairing.

Several IDKL terms compare row r of the visible rows with row r of the
infrared rows, which only makes sense when both rows show the same identity.
The reference relies on its sampler for that; here it is checked.
"""

from __future__ import annotations

import torch

from ..data.records import INFRARED, VISIBLE


def split_modalities(x: torch.Tensor, modality: torch.Tensor, labels: torch.Tensor | None = None,
                     name: str = "batch") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (x[visible rows], x[infrared rows]), each in batch order.

    Raises ValueError unless both modalities have the same number of rows and,
    when ``labels`` is given, row r of each has the same label.
    """
    modality = modality.reshape(-1)
    if modality.numel() != x.shape[0]:
        raise ValueError(f"{name}: modality has {modality.numel()} entries for {x.shape[0]} rows")
    bad = (modality != VISIBLE) & (modality != INFRARED)
    if bad.any():
        raise ValueError(f"{name}: modality must be 0 (visible) or 1 (infrared), got {modality[bad][0].item()}")
    vis, ir = modality == VISIBLE, modality == INFRARED
    n_v, n_i = int(vis.sum()), int(ir.sum())
    if n_v != n_i or n_v == 0:
        raise ValueError(
            f"{name}: needs equal, non-zero numbers of visible and infrared samples, got {n_v} visible "
            f"and {n_i} infrared (use the cross-modality P x (K+K) sampler)")
    if labels is not None:
        labels = labels.reshape(-1)
        if not torch.equal(labels[vis], labels[ir]):
            raise ValueError(
                f"{name}: visible row r and infrared row r must share an identity; got visible labels "
                f"{labels[vis].tolist()} vs infrared labels {labels[ir].tolist()} (the cross-modality "
                f"sampler's identity-major layout gives this)")
    return x[vis], x[ir]
