"""Modality confuser and discriminator losses, L_C and L_D (Eq. 2-4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .reid import id_loss


def confuser_targets(modality: torch.Tensor) -> torch.Tensor:
    """The released code's pseudo modality labels for the shared-branch confuser.

    q_i = t[floor(i/2)], target_i = q[(i+1) mod B]. With the sampler layout
    (t = 1,0,1,0,...) half of each modality keeps its label and half gets the
    other one, so plain CE (no gradient reversal) pushes the confuser to 50/50.
    Needs an even batch whose first half alternates modalities.
    """
    b = modality.numel()
    if b % 2:
        raise ValueError(f"confuser_targets needs an even batch, got {b}")
    q = modality[: b // 2].repeat_interleave(2)
    return torch.roll(q, shifts=-1)


def modality_loss(logits: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Sum over the K modality heads of CE(logits_j, targets) (Eq. 4: L_C = sum_j L_Cj, L_D = sum_j L_Dj).

    ``logits``: one (B, 2) tensor or a sequence of K of them. For the paper's
    confuser the gradient reversal sits in the model, before the heads.
    """
    if isinstance(logits, torch.Tensor):
        logits = [logits]
    if len(logits) == 0:
        raise ValueError("modality_loss needs at least one head's logits")
    return sum(id_loss(z, targets) for z in logits)
