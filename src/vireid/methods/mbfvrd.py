"""MBFVRD as a recipe: DIAM + VRD on the AGW backbone, with ID, VSD, WRT and hetero-center losses.

Loss (seed 003, Eq. 9, all weights 1):

    L = sum_i vsd * KL(p(y|b_i) || p(y|z_i))          i = 1, 2 (teacher b_i detached)
      + id * [CE(logits1) + CE(logits2) + CE(z_logits1) + CE(z_logits2)]
      + metric losses (WRT + hetero-center by default) on each branch's pre-BN feature

The paper writes one WRT and one hetero-center term without saying on which
feature; we apply them to both branches' pre-BN features (f1 and f2), which
``loss.metric_branches`` can change ([1], [2] or [1, 2]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vireid.losses import id_loss, vsd_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses, flip_average, head_and_backbone_groups
from vireid.models.mbfvrd import MBFVRD, TEST_FEATURES
from vireid.models.trunk import AGW_NON_LOCAL, TwoStreamSettings
from vireid.schema import setting, to_dict


@dataclass(frozen=True)
class ModelSettings(TwoStreamSettings):
    """``model:`` :class:`MBFVRD`'s arguments (AGW's trunk, two GeM heads, the information bottleneck)."""

    non_local: tuple[int, ...] = setting(AGW_NON_LOCAL, doc="non-local blocks per stage (AGW's layout)")
    gem_p: float = setting(3.0, low=1)
    gem_learnable: bool = setting(True)
    gem_p_min: float | None = setting(1.0, low=0, doc="lower clamp of a learnable p (null: none)")
    gem_p_per_channel: bool = setting(True, doc="one p per channel (Eq. 3); false: one per branch")
    ib_widths: tuple[int, ...] = setting((1024, 512), doc="the information bottleneck's layer widths")
    classifier_std: float | None = setting(0.001, low=0)
    test_feature: str = setting("cat", choices=TEST_FEATURES)
    test_normalize: bool = setting(True)


@dataclass(frozen=True)
class LossSettings(MetricLosses):
    """``loss:`` the weights of Eq. 9 (WRT and hetero-center on by default, on ``metric_branches``)."""

    wrt: float = setting(1.0, low=0)
    hetero_center: float = setting(1.0, low=0)
    id: float = setting(1.0, low=0, doc="the two branch CE terms")
    id_z: float = setting(1.0, low=0, doc="the two IB representation CE terms")
    label_smoothing: float = setting(0.0, low=0, high=1)
    vsd: float = setting(1.0, low=0, doc="both VSD terms (0: the DIAM-only row)")
    vsd_temperature: float = setting(1.0, low=1e-6)
    metric_branches: tuple[int, ...] = setting((1, 2), doc="the branches whose pooled features the metric losses "
                                                               "see: [1], [2] or [1, 2]")


@dataclass(frozen=True)
class RecipeSettings:
    backbone_lr_mult: float = setting(1.0, low=0)


class MBFVRDRecipe(Method):
    """``method: mbfvrd``; config sections ``model``, ``loss``, ``recipe`` (the dataclasses above).

    ``loss.id`` weighs the two branch CE terms, ``loss.id_z`` the two IB
    representation CE terms, ``loss.vsd`` both VSD terms (0 switches VRD's
    distillation off: the DIAM-only row of the paper's ablation).
    """

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        branches = self.settings.loss.metric_branches
        if not branches or not set(branches) <= {1, 2}:
            raise ValueError(f"loss.metric_branches must be a list drawn from [1, 2], got {list(branches)!r}")
        self.metric_branches = tuple(sorted(set(branches)))
        self.model = MBFVRD(num_classes, **to_dict(self.settings.model))

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.settings.recipe.backbone_lr_mult)

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch
        out = model(images, modality)
        w = self.settings.loss
        ce = lambda logits: id_loss(logits, pids, w.label_smoothing)  # noqa: E731
        terms = {"id": w.id * (ce(out["logits1"]) + ce(out["logits2"]))}
        if w.id_z:
            terms["id_z"] = w.id_z * (ce(out["z_logits1"]) + ce(out["z_logits2"]))
        if w.vsd:
            terms["vsd"] = w.vsd * (vsd_loss(out["logits1"], out["z_logits1"], w.vsd_temperature)
                                    + vsd_loss(out["logits2"], out["z_logits2"], w.vsd_temperature))
        for branch in self.metric_branches:
            for name, value in w.terms(out[f"pooled{branch}"], pids, modality).items():
                terms[name] = terms.get(name, 0) + value
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)


METHODS.register("mbfvrd")(MBFVRDRecipe)
