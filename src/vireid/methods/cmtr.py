"""CMTR as a recipe: L = id * L_ID + L_WRT + lambda * (mac * L_MAC + maid * L_MAID).

* L_ID: cross-entropy of the ID classifier on f = BN(class token);
* L_WRT: AGW's weighted regularisation triplet (``loss.wrt``; any metric loss
  of :class:`vireid.methods.common.MetricLosses` can be switched on beside it)
  on the pre-BN class token, where AGW puts it (the survey does not say);
* L_MAC, L_MAID: the modality-aware centre and ID losses on the
  modality-removed feature f - phi_m(e_m) (:mod:`vireid.losses.cmtr`), weighted
  by ``loss.mae`` (lambda) and each by its own weight (1 and 1 in the survey).

The run needs ViT weights: an empty ``model.pretrained`` is refused before any
data is read (``require_vit_weights``), ``model.pretrained: none`` trains from
random weights on purpose. ``img_size`` of the network (the grid its position
embeddings are stored on) is the run's ``data.height`` x ``data.width``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vireid.losses import id_loss
from vireid.losses.cmtr import CENTRES, modality_aware_centre, modality_aware_id
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses, flip_average, head_and_backbone_groups
from vireid.models import build_model
from vireid.models.backbones.vit import vit_config
from vireid.models.cmtr import PHI
from vireid.schema import DataSettings, parse_section, setting, to_dict


@dataclass(frozen=True)
class ModelSettings:
    backbone: str = setting("vit_base", doc="vit_base, vit_small, vit_tiny or vit_d<dim>_l<depth>_h<heads>")
    patch_size: int = setting(16, low=1)
    patch_stride: int = setting(12, low=1, doc="< patch_size: overlapping patches")
    pretrained: str | None = setting(None, doc="timm-named ImageNet ViT weights file, or none")
    drop_path: float = setting(0.1, low=0, high=0.99)
    phi: str = setting("linear", choices=PHI)
    me_std: float = setting(0.02, low=0)
    classifier_std: float | None = setting(0.001, low=0)
    test_normalize: bool = setting(True)


@dataclass(frozen=True)
class LossSettings(MetricLosses):
    id: float = setting(1.0, low=0, doc="L_ID")
    label_smoothing: float = setting(0.0, low=0, high=1)
    mae: float = setting(1.0, low=0, doc="lambda, the weight of L_MAE")
    mac: float = setting(1.0, low=0, doc="L_MAC's weight inside L_MAE")
    maid: float = setting(1.0, low=0, doc="L_MAID's weight inside L_MAE")
    mac_centre: str = setting("identity", choices=CENTRES,
                              doc="identity: one centre per identity over both modalities (phi_m, e_m learn); "
                                  "modality: the equation's per-modality centre (phi_m(e_m) cancels)")


@dataclass(frozen=True)
class RecipeSettings:
    backbone_lr_mult: float = setting(1.0, low=0)


@METHODS.register("cmtr")
class CMTRRecipe(Method):
    """``method: cmtr``; config sections ``model``, ``loss`` (the dataclasses above + the metric-loss keys),
    ``recipe``, ``eval.flip``."""

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        model = self.settings.model
        vit_config(model.backbone)  # a clear error for a non-ViT name before anything is built
        data = parse_section(DataSettings, cfg.get("data"), "data")  # the position embedding's grid
        self.model = build_model("cmtr", num_classes=num_classes, img_size=(data.height, data.width),
                                 **to_dict(model))

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.settings.recipe.backbone_lr_mult)

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch[:4]
        out = model(images, modality)
        w = self.settings.loss
        terms = {}
        if w.id:
            terms["id"] = w.id * id_loss(out["logits"], pids, w.label_smoothing)
        terms.update(self.settings.loss.terms(out["pooled"], pids, modality))
        if w.mae and w.mac:
            terms["mac"] = w.mae * w.mac * modality_aware_centre(out["removed"], pids, modality, w.mac_centre)
        if w.mae and w.maid:
            terms["maid"] = w.mae * w.maid * modality_aware_id(out["logits_removed"], pids, w.label_smoothing)
        if not terms:
            raise ValueError("every CMTR loss weight is 0; nothing to train")
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)
