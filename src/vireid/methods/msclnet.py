"""MSCLNet as a recipe: AGW* (AGW + random erasing), modality synergy, modality complement, cascaded aggregation.

Loss (the paper's eq. 17 as summarised in shared/reference/methods-reference.md (g); survey seed 002, 3.2-3.4):

    L = lambda_div L_div + lambda_t L_t                  synergy: trains the extractors only
      + lambda_local L_local + lambda_global L_global    complement: trains the synergy encoder only
      + L_sub                                            on the synergy feature f^s (seed 002, 3.4)
      + L_intra + L_inter                                cascaded aggregation on the extractor feature
      (+ wrt L_WRT, off by default: eq. 17 has no triplet term)

with lambda = 0.5 / 1.25 / 0.8 / 1.5. The paper trains the two parts with
separate objectives ("theta_s = argmin L_Com(theta_s)"); vireid does it in one
optimiser step by routing gradients instead of keeping two optimisers:

* the synergy encoder reads detached extractor maps, and the complement
  losses' targets (visible stripes, infrared pooled features) are detached,
  so L_local and L_global reach theta_s only;
* L_div is computed with the instance norms' affine parameters detached and
  L_t, L_sub/L_intra/L_inter use extractor outputs only, so they reach the
  extractor only.

The test feature is the extractor's, so a term can change what is evaluated
only by reaching the extractor. ``loss.synergy_routing`` picks how L_sub does:

* ``through_encoder`` (default since issue 21): L_sub is written on f^s
  (seed 002:512), so it reads the synergy feature (the mean of the synergy
  parts, L2-normalised with ``ca_normalize``) of the encoder run on the
  *undetached* maps; its gradient trains theta_s and, through theta_s, the
  extractor. The complement losses still train theta_s only (they read the
  encoder's output on detached maps), but what they teach theta_s changes the
  gradient L_sub sends to the extractor: every term can change the evaluated
  feature, as the paper's ablation (MS + MC: +11 rank-1 over AGW*) needs. A
  pair's sub-class is its visible image's camera (vireid's reading: the
  paper's sub-class is "the camera of each image"; the camera pair would make
  nearly every sub-class a singleton at K = 4).
* ``detached`` (the reading before issue 21): the encoder only ever reads
  detached maps and L_sub uses ``ca_feature`` like L_intra/L_inter; with
  ``synergy_div: 0`` the complement losses then cannot change the evaluated
  feature at all.

L_intra and L_inter use the extractor's BN-neck feature, L2-normalised
(``loss.ca_feature``, ``loss.ca_normalize``): the paper names no feature for
their centres, and on unnormalised features L_inter (a negative squared
distance) is unbounded below.

L_global compares synergy centres with centres of the extractor's pooled
(pre-BN) infrared feature f^r, both L2-normalised first (``loss.global_normalize``;
vireid's choice): on raw 2048-d features the squared centre distance is in the
thousands at the start, and regressing it with plain SGD at lr 0.1 from a
2048-d hidden state is unstable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vireid.data.records import INFRARED
from vireid.losses import wrt_loss
from vireid.losses.msclnet import (
    divergence,
    global_complement,
    inter_aggregation,
    intra_aggregation,
    local_complement,
    modality_ce,
    subclass_aggregation,
)
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import flip_average, head_and_backbone_groups
from vireid.models import build_model
from vireid.models.trunk import AGW_NON_LOCAL, TwoStreamSettings
from vireid.schema import setting, to_dict


@dataclass(frozen=True)
class ModelSettings(TwoStreamSettings):
    non_local: tuple[int, ...] = setting(AGW_NON_LOCAL, doc="non-local blocks per stage (AGW's layout)")
    pool: str = setting("gem", choices=("gem", "avg"))
    gem_p: float = setting(3.0, low=1)
    classifier_std: float | None = setting(0.001, low=0)
    test_feature: str = setting("bn", choices=("bn", "pooled"))
    test_normalize: bool = setting(True)
    parts: int = setting(6, low=1, doc="horizontal stripes of the local complement term")
    mogrifier_rounds: int = setting(5, low=0)
    mogrifier_rank: int | None = setting(None, low=1, doc="null = full-rank mogrifier gates")


@dataclass(frozen=True)
class LossSettings:
    synergy_div: float = setting(0.5, low=0, doc="lambda_div")
    synergy_ce: float = setting(1.25, low=0, doc="lambda_t")
    complement_local: float = setting(0.8, low=0, doc="lambda_local")
    complement_global: float = setting(1.5, low=0, doc="lambda_global")
    ca_sub: float = setting(1.0, low=0)
    ca_intra: float = setting(1.0, low=0)
    ca_inter: float = setting(1.0, low=0)
    global_normalize: bool = setting(True, doc="L2-normalise synergy and infrared features before L_global")
    ca_feature: str = setting("bn", choices=("bn", "pooled"))
    ca_normalize: bool = setting(True)
    synergy_routing: str = setting("through_encoder", choices=("through_encoder", "detached"),
                                   doc="through_encoder: L_sub on f^s, back through theta_s into the extractor; "
                                       "detached: the pre-issue-21 reading (encoder on detached maps, L_sub on "
                                       "ca_feature)")
    wrt: float = setting(0.0, low=0)
    label_smoothing: float = setting(0.0, low=0, high=1)


@dataclass(frozen=True)
class RecipeSettings:
    backbone_lr_mult: float = setting(0.1, low=0)


@METHODS.register("msclnet")
class MSCLNetRecipe(Method):
    """``method: msclnet``; config sections ``model``, ``loss``, ``recipe`` (the dataclasses above), ``eval.flip``."""

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        model = self.settings.model
        self.model = build_model("msclnet", num_classes=num_classes, **to_dict(model),
                                 attached_synergy=self.settings.loss.synergy_routing == "through_encoder")

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.settings.recipe.backbone_lr_mult)

    def training_step(self, model, batch) -> dict:
        images, pids, camids, modality = batch
        out = model(images, modality, pids)
        w = self.settings.loss
        terms = {}
        if w.synergy_ce:
            terms["ce"] = w.synergy_ce * modality_ce(out["logits"], pids, modality, w.label_smoothing)
        if w.synergy_div:
            terms["div"] = w.synergy_div * divergence(out["div_visible"], out["div_infrared"])
        if w.complement_local:
            terms["local"] = w.complement_local * local_complement(out["visible_parts"].detach(),
                                                                   out["synergy_parts"])
        if w.complement_global:
            ir = modality == INFRARED
            synergy, infrared = out["synergy_parts"].mean(dim=1), out["pooled"][ir].detach()
            if w.global_normalize:
                synergy, infrared = F.normalize(synergy, dim=1), F.normalize(infrared, dim=1)
            terms["global"] = w.complement_global * global_complement(synergy, pids[out["pair_visible"]],
                                                                      infrared, pids[ir])
        feat = out[w.ca_feature]
        if w.ca_normalize:
            feat = F.normalize(feat, dim=1)
        if w.ca_sub:
            terms["sub"] = w.ca_sub * self._sub_term(out, feat, pids, camids)
        if w.ca_intra:
            terms["intra"] = w.ca_intra * intra_aggregation(feat, pids, camids)
        if w.ca_inter:
            terms["inter"] = w.ca_inter * inter_aggregation(feat, pids)
        if w.wrt:
            terms["wrt"] = w.wrt * wrt_loss(out["pooled"], pids)
        if not terms:
            raise ValueError("every MSCLNet loss weight is 0; nothing to train")
        return {"loss": sum(terms.values()), **terms}

    def _sub_term(self, out: dict, feat: torch.Tensor, pids: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """L_sub on f^s (``through_encoder``: one row per pair, sub-class = the visible camera) or on ``feat``."""
        if self.settings.loss.synergy_routing == "detached":
            return subclass_aggregation(feat, pids, camids)
        synergy = out["synergy_attached"].mean(dim=1)
        if self.settings.loss.ca_normalize:
            synergy = F.normalize(synergy, dim=1)
        vis = out["pair_visible"]
        return subclass_aggregation(synergy, pids[vis], camids[vis])

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)
