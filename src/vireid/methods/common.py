"""Pieces every re-ID recipe shares: the metric-loss switches, parameter groups, flip-averaged test features.

The metric losses are switched by weight, so "any method + hetero-center
triplet" is a config line (``loss.hetero_center: 1.0``), not code:

    loss:
      wrt: 1.0                 # AGW's weighted regularisation triplet
      adp: 0.0                 # CAJ's ADP / enhanced squared difference triplet
      adp_alpha: 1.0
      adp_gamma: 1.0
      adp_square: true
      triplet: 0.0             # batch-hard triplet
      triplet_margin: 0.3
      hetero_center: 0.0       # hetero-center triplet (HcTri)
      hetero_center_margin: 0.3
      weighted_numerics: textbook  # WRT/ADP softmax weights; "reference" = AGW's softmax_weights quirk

``weighted_numerics: reference`` reproduces the released AGW/CAJ code (shift
by the max over all columns of the masked product, +1e-6 in the normaliser:
at realistic feature scale the negatives' weights vanish, see
:mod:`vireid.losses.weighted`); ``textbook`` is the exact masked softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from vireid.losses import adp_loss, hetero_center_triplet, triplet_hard, wrt_loss
from vireid.losses.weighted import NUMERICS
from vireid.schema import setting


@dataclass(frozen=True)
class MetricLosses:
    """Weights (0 = off) and parameters of the metric losses on a pre-BN feature."""

    wrt: float = setting(0.0, low=0)
    adp: float = setting(0.0, low=0)
    adp_alpha: float = setting(1.0, low=0)
    adp_gamma: float = setting(1.0, low=0)
    adp_square: bool = setting(True)
    triplet: float = setting(0.0, low=0)
    triplet_margin: float = setting(0.3, low=0)
    hetero_center: float = setting(0.0, low=0)
    hetero_center_margin: float = setting(0.3, low=0)
    weighted_numerics: str = setting("textbook", choices=NUMERICS)

    KEYS = ()  # filled below

    def terms(self, feat: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor, suffix: str = "") -> dict:
        """The weighted, switched-on terms, named ``wrt``, ``adp``, ... (+ ``suffix``)."""
        out = {}
        if self.wrt:
            out["wrt"] = self.wrt * wrt_loss(feat, labels, numerics=self.weighted_numerics)
        if self.adp:
            out["adp"] = self.adp * adp_loss(feat, labels, self.adp_alpha, self.adp_gamma, self.adp_square,
                                             numerics=self.weighted_numerics)
        if self.triplet:
            out["triplet"] = self.triplet * triplet_hard(feat, labels, self.triplet_margin)
        if self.hetero_center:
            out["hetero_center"] = self.hetero_center * hetero_center_triplet(feat, labels, modality,
                                                                              self.hetero_center_margin)
        return {k + suffix: v for k, v in out.items()}


MetricLosses.KEYS = tuple(f.name for f in fields(MetricLosses))


def head_and_backbone_groups(model, backbone_lr_mult: float) -> list[dict]:
    """AGW's two learning rates: the backbone at ``backbone_lr_mult`` x lr, everything else at lr."""
    if not isinstance(backbone_lr_mult, (int, float)) or backbone_lr_mult <= 0:
        raise ValueError(f"recipe.backbone_lr_mult must be a number > 0, got {backbone_lr_mult!r}")
    heads = model.head_parameters()
    ids = {id(p) for p in heads}
    backbone = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": backbone, "lr_mult": float(backbone_lr_mult)}, {"params": heads}]


def flip_average(embed, images: torch.Tensor, modality: torch.Tensor, flip: bool) -> torch.Tensor:
    """``embed(images)``, averaged with the horizontally flipped images' feature when ``flip`` (CAJ's test)."""
    feat = embed(images, modality)
    if flip:
        feat = 0.5 * (feat + embed(images.flip(3), modality))
    return feat
