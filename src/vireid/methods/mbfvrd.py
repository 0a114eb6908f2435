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

import copy
import inspect

import torch

from vireid.losses import id_loss, vsd_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses, eval_flip, flip_average, head_and_backbone_groups, recipe_sections
from vireid.models.mbfvrd import MBFVRD

MODEL_KEYS = tuple(inspect.signature(MBFVRD.__init__).parameters)[1:]
LOSS_KEYS = ("id", "id_z", "label_smoothing", "vsd", "vsd_temperature", "metric_branches", *MetricLosses.KEYS)
RECIPE_KEYS = ("backbone_lr_mult",)


class MBFVRDRecipe(Method):
    """``method: mbfvrd``; config sections ``model`` (MBFVRD arguments), ``loss``, ``recipe``, ``eval.flip``.

    ``loss.id`` weighs the two branch CE terms, ``loss.id_z`` the two IB
    representation CE terms, ``loss.vsd`` both VSD terms (0 switches VRD's
    distillation off: the DIAM-only row of the paper's ablation).
    """

    def __init__(self, cfg: dict, num_classes: int):
        cfg = copy.deepcopy(cfg)
        self.name = cfg["method"]
        model_cfg, loss, recipe = recipe_sections(cfg, num_classes, MODEL_KEYS, LOSS_KEYS, RECIPE_KEYS)
        self.model = MBFVRD(**model_cfg)
        self.id_weight = float(loss.get("id", 1.0))
        self.id_z_weight = float(loss.get("id_z", 1.0))
        self.vsd_weight = float(loss.get("vsd", 1.0))
        self.vsd_temperature = float(loss.get("vsd_temperature", 1.0))
        self.label_smoothing = float(loss.get("label_smoothing", 0.0))
        branches = loss.get("metric_branches", [1, 2])
        if not isinstance(branches, (list, tuple)) or not set(branches) <= {1, 2}:
            raise ValueError(f"loss.metric_branches must be a list drawn from [1, 2], got {branches!r}")
        self.metric_branches = tuple(sorted(set(branches)))
        self.metric = MetricLosses.from_dict({"wrt": 1.0, "hetero_center": 1.0, **loss})
        self.backbone_lr_mult = recipe.get("backbone_lr_mult", 1.0)
        self.flip = eval_flip(cfg)

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.backbone_lr_mult)

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch
        out = model(images, modality)
        ce = lambda logits: id_loss(logits, pids, self.label_smoothing)  # noqa: E731
        terms = {"id": self.id_weight * (ce(out["logits1"]) + ce(out["logits2"]))}
        if self.id_z_weight:
            terms["id_z"] = self.id_z_weight * (ce(out["z_logits1"]) + ce(out["z_logits2"]))
        if self.vsd_weight:
            terms["vsd"] = self.vsd_weight * (
                vsd_loss(out["logits1"], out["z_logits1"], self.vsd_temperature)
                + vsd_loss(out["logits2"], out["z_logits2"], self.vsd_temperature))
        for branch in self.metric_branches:
            for name, value in self.metric.terms(out[f"pooled{branch}"], pids, modality).items():
                terms[name] = terms.get(name, 0) + value
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)


METHODS.register("mbfvrd")(MBFVRDRecipe)
