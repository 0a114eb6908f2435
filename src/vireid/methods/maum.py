"""MAUM as a recipe: shared CE + modality-specific CE + memory-augmented unidirectional metrics.

    L = id * CE(shared logits)
      + specific * (L_RGB + L_IR)                    RGB / IR classifiers, each on its own modality's rows
      + unidirectional * (L_{R->I} + L_{I->R})      after ``recipe.memory_warmup_epochs`` epochs

(``vireid.losses.maum``). From the first epoch after the warm-up on, every
step first enqueues the current MS-proxies (the classifier weights as the
previous step left them, i.e. "after each iteration") into the two FIFO
memories, then computes L_{R->I} (RGB features against the IR memory) and
L_{I->R} (IR features against the RGB memory) on the classifiers' input
feature. The memories are detached: the unidirectional terms move the
features, never the proxies, which only their own modality's CE trains.

The memories are buffers of the model (:class:`vireid.models.maum.ProxyMemory`),
so the trainer's checkpoint saves them and a resumed run continues with the
same banks. The loss weights, alpha, delta, the memory sizes and the warm-up
are vireid's choices (the survey gives the equations but no values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vireid.data.records import INFRARED, VISIBLE
from vireid.losses import id_loss
from vireid.losses.maum import modality_specific_ce, unidirectional_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import flip_average, head_and_backbone_groups
from vireid.models import build_model
from vireid.models.trunk import TrunkSettings
from vireid.schema import setting, to_dict


@dataclass(frozen=True)
class ModelSettings(TrunkSettings):
    pool: str = setting("avg", choices=("avg", "gem"))
    neck: str = setting("bn", choices=("bn", "none"))
    classifier_std: float | None = setting(0.001, low=0)
    memory_visible: int = setting(10, low=1, doc="S_RGB: proxy matrices kept in the RGB memory")
    memory_infrared: int = setting(10, low=1, doc="S_IR: proxy matrices kept in the IR memory")
    test_normalize: bool = setting(True)


@dataclass(frozen=True)
class LossSettings:
    id: float = setting(1.0, low=0, doc="shared-classifier CE")
    specific: float = setting(1.0, low=0, doc="L_RGB + L_IR")
    unidirectional: float = setting(1.0, low=0, doc="L_R->I + L_I->R")
    alpha: float = setting(16.0, low=0, doc="scale factor of the unidirectional metric")
    delta: float = setting(0.1, doc="margin of the unidirectional metric")
    label_smoothing: float = setting(0.0, low=0, high=1)


@dataclass(frozen=True)
class RecipeSettings:
    backbone_lr_mult: float = setting(0.1, low=0)
    memory_warmup_epochs: int = setting(10, low=0, doc="epochs before the memories start (CE only)")


@METHODS.register("maum")
class MAUMRecipe(Method):
    """``method: maum``; config sections ``model``, ``loss``, ``recipe`` (the dataclasses above), ``eval.flip``."""

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        model = self.settings.model
        self.model = build_model("maum", num_classes=num_classes, **to_dict(model))
        self.epoch = 0

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.settings.recipe.backbone_lr_mult)

    def on_epoch_start(self, epoch: int, trainer=None) -> None:
        self.epoch = epoch

    @property
    def memory_active(self) -> bool:
        return self.settings.loss.unidirectional > 0 and self.epoch >= self.settings.recipe.memory_warmup_epochs

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch
        if self.memory_active:
            self.model.push_proxies()  # the proxies as the last optimiser step left them
        out = model(images, modality)
        smooth = self.settings.loss.label_smoothing
        terms = {"id": self.settings.loss.id * id_loss(out["logits"], pids, smooth)}
        if self.settings.loss.specific:
            spec = out["logits_specific"]
            terms["ce_rgb"] = self.settings.loss.specific * modality_specific_ce(spec, pids, modality, VISIBLE)
            terms["ce_ir"] = self.settings.loss.specific * modality_specific_ce(spec, pids, modality, INFRARED)
        if self.memory_active:
            feat, a, d = out["feat"], self.settings.loss.alpha, self.settings.loss.delta
            rgb, ir = modality == VISIBLE, modality == INFRARED
            terms["uni_r2i"] = self.settings.loss.unidirectional * unidirectional_loss(
                feat[rgb], pids[rgb], self.model.memory(INFRARED), a, d)
            terms["uni_i2r"] = self.settings.loss.unidirectional * unidirectional_loss(
                feat[ir], pids[ir], self.model.memory(VISIBLE), a, d)
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)
