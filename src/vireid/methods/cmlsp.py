"""CM-LSP-GE as a recipe: the survey's multi-granularity loss (seed 002, section 6),

    L_total = L_id^g + L_id^eg               ID on the global and the enhanced feature (BN-neck logits)
            + L_Tri^g + L_Tri^eg             hetero-center triplet on the global and enhanced feature (pre-BN)
            + L_id^lv + L_id^lt              ID per stripe, summed over the h stripes, visible + thermal images
            + L_PA^vt                        local triplet, ``loss.local_triplet_form``:
                                             stripes (default): per-stripe L2 batch-hard on the
                                             range-normalised stripes, summed over stripes 2..H, as
                                             printed (seed 002:418);
                                             shortest_path (before issue 21): one batch-hard triplet on
                                             the local shortest-path distance

each term with a weight (all 1, as the survey's sum). The survey's L_Tri^g is
exactly the hetero-center triplet (per identity, the mean visible and mean
thermal feature; the other modality's centre is the positive, the nearest
other centre the negative): vireid's :func:`vireid.losses.hetero_center_triplet`.
The margins and the optimiser are not given by the survey (vireid's choices, in
``configs/cmlsp_sysu.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vireid.losses import hetero_center_triplet, id_loss
from vireid.losses.cmlsp import REDUCTIONS, local_triplet, stripe_id_loss, stripe_triplet
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import flip_average, head_and_backbone_groups
from vireid.models import build_model
from vireid.models.cmlsp import TEST_FEATURES
from vireid.models.trunk import AGW_NON_LOCAL, TwoStreamSettings
from vireid.schema import setting, to_dict

LOCAL_TRIPLET_FORMS = ("stripes", "shortest_path")


@dataclass(frozen=True)
class ModelSettings(TwoStreamSettings):
    non_local: tuple[int, ...] = setting(AGW_NON_LOCAL, doc="non-local blocks per stage (AGW's layout)")
    pool: str = setting("gem", choices=("gem", "avg"))
    gem_p: float = setting(3.0, low=1)
    stripes: int = setting(6, low=1, doc="h, horizontal stripes")
    local_dim: int = setting(256, low=1)
    classifier_std: float | None = setting(0.001, low=0)
    test_feature: str = setting("cat", choices=TEST_FEATURES)
    test_normalize: bool = setting(True)


@dataclass(frozen=True)
class LossSettings:
    id: float = setting(1.0, low=0, doc="L_id^g")
    id_enhanced: float = setting(1.0, low=0, doc="L_id^eg")
    hetero_center: float = setting(1.0, low=0, doc="L_Tri^g and L_Tri^eg")
    hetero_center_margin: float = setting(0.3, low=0, doc="m_g")
    id_local: float = setting(1.0, low=0, doc="L_id^lv + L_id^lt")
    local_triplet: float = setting(1.0, low=0, doc="L_PA^vt")
    local_margin: float = setting(0.3, low=0, doc="m_l")
    local_triplet_form: str = setting("stripes", choices=LOCAL_TRIPLET_FORMS,
                                      doc="stripes: the printed per-stripe L2 L_PA over stripes 2..H; "
                                          "shortest_path: batch-hard on the shortest-path distance")
    local_reduce: str = setting("mean", choices=REDUCTIONS,
                                doc="stripe distances: mean (L1 / D, L2 / sqrt(D)) or sum (the plain norms)")
    label_smoothing: float = setting(0.0, low=0, high=1)


@dataclass(frozen=True)
class RecipeSettings:
    backbone_lr_mult: float = setting(0.1, low=0)


@METHODS.register("cmlsp")
class CMLSPRecipe(Method):
    """``method: cmlsp``; config sections ``model``, ``loss``, ``recipe`` (the dataclasses above), ``eval.flip``."""

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        model, loss = self.settings.model, self.settings.loss
        if loss.local_triplet and loss.local_triplet_form == "stripes" and model.stripes < 2:
            raise ValueError(f"loss.local_triplet_form: stripes sums stripes 2..H and needs model.stripes >= 2, "
                             f"got {model.stripes} (use shortest_path or set loss.local_triplet: 0)")
        self.model = build_model("cmlsp", num_classes=num_classes, **to_dict(model))

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.settings.recipe.backbone_lr_mult)

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch
        out = model(images, modality)
        w = self.settings.loss
        smooth = w.label_smoothing
        terms = {"id": w.id * id_loss(out["logits"], pids, smooth)}
        if w.id_enhanced:
            terms["id_enhanced"] = w.id_enhanced * id_loss(out["logits_enhanced"], pids, smooth)
        if w.hetero_center:
            m = w.hetero_center_margin
            terms["hetero_center"] = w.hetero_center * (hetero_center_triplet(out["global"], pids, modality, m)
                                                        + hetero_center_triplet(out["enhanced"], pids, modality, m))
        if w.id_local:
            terms["id_local"] = w.id_local * stripe_id_loss(out["logits_local"], pids, smooth)
        if w.local_triplet:
            if w.local_triplet_form == "stripes":
                pa = stripe_triplet(out["local"], pids, w.local_margin, w.local_reduce)
            else:
                pa = local_triplet(out["local"], pids, w.local_margin, w.local_reduce)
            terms["local_triplet"] = w.local_triplet * pa
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)
