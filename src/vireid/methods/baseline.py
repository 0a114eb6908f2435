"""The re-ID baseline recipe, and AGW and CAJ as its configurations.

One recipe on :class:`vireid.models.reid_net.ReIDNet`: ID loss on the BN-neck
logits plus the metric losses of :class:`vireid.methods.common.MetricLosses`
on the pooled (pre-BN) feature. The names differ only in their configs:

* ``agw`` (``configs/agw_sysu.yaml``): two-stream ResNet-50 with non-local
  blocks, GeM, ID + WRT, SGD with the backbone at 0.1 x lr.
* ``caj`` (``configs/caj_sysu.yaml``): the same network; CAJ's channel
  augmentations (``data.augment: caj``), the tri-modal batch
  (``recipe.channel_exchange: true``) and ID + ESD (``loss.adp``).

Tri-modal batch: the visible images, a channel-exchanged copy of them
(ChannelExchange(gray=2): every image becomes its R, G or B channel, 1/3
each) and the infrared images go through the model together (both visible
views through the visible stem) with labels [visible, visible, infrared] and
one shared classifier. With ``data.augment: caj`` the loader draws the
second view from the raw image with its own crop, flip and erasing, as the
reference does (the batch then carries it as a fifth element); a batch
without it (other augmentations) channel-exchanges the first view instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vireid.data.channel_aug import ChannelExchange
from vireid.data.records import VISIBLE
from vireid.losses import id_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses, flip_average, head_and_backbone_groups
from vireid.models.layers import GEM_FORMS
from vireid.models.reid_net import TEST_FEATURES, ReIDNet
from vireid.models.trunk import AGW_NON_LOCAL, TwoStreamSettings
from vireid.schema import setting, to_dict


@dataclass(frozen=True)
class ModelSettings(TwoStreamSettings):
    """``model:`` :class:`ReIDNet`'s arguments (AGW's network: non-local blocks, GeM, BN neck)."""

    non_local: tuple[int, ...] = setting(AGW_NON_LOCAL, doc="non-local blocks after the last n blocks of each "
                                                            "stage (AGW: 2 in layer2, 3 in layer3)")
    pool: str = setting("gem", choices=("gem", "avg", "cls"), doc="cls: a ViT's class token")
    gem_p: float = setting(3.0, low=1)
    gem_learnable: bool = setting(False)
    gem_form: str = setting("clamp", choices=GEM_FORMS, doc="root_eps: AGW's eps inside the root")
    classifier_std: float | None = setting(0.001, low=0, doc="null: PyTorch's default classifier init")
    test_feature: str = setting("bn", choices=TEST_FEATURES)
    test_normalize: bool = setting(True)
    bn_neck_std: float = setting(0.0, low=0)
    patch_size: int = setting(16, low=1, doc="ViT backbones only")
    patch_stride: int = setting(12, low=1, doc="ViT backbones only (< patch_size: overlapping patches)")


@dataclass(frozen=True)
class LossSettings(MetricLosses):
    """``loss:`` the ID loss on the BN-neck logits and the metric losses on the pooled feature."""

    id: float = setting(1.0, low=0)
    label_smoothing: float = setting(0.0, low=0, high=1)


@dataclass(frozen=True)
class RecipeSettings:
    backbone_lr_mult: float = setting(1.0, low=0, doc="the backbone's LR relative to train.lr (AGW: 0.1)")
    channel_exchange: bool = setting(False, doc="CAJ's tri-modal batch")


CHANNEL_EXCHANGE = ChannelExchange(gray=2)  # CAJ's: each visible image becomes its R, G or B channel (1/3 each)


def tri_modal(images: torch.Tensor, pids: torch.Tensor, modality: torch.Tensor, exchange=CHANNEL_EXCHANGE,
              second: torch.Tensor | None = None):
    """[visible, channel-exchanged visible, infrared] images, labels and modalities (CAJ's joint batch).

    ``second``: the visible samples' own channel-exchanged views (in batch
    order), drawn from the raw images by the loader; without it the first
    views are channel-exchanged.
    """
    vis = modality == VISIBLE
    if not bool(vis.any()) or bool(vis.all()):
        raise ValueError("the tri-modal (CAJ) batch needs visible and infrared samples in every batch")
    if second is None or second.numel() == 0:
        second = exchange(images[vis])
    elif second.shape[0] != int(vis.sum()) or second.shape[1:] != images.shape[1:]:
        raise ValueError(f"the batch's second views have shape {tuple(second.shape)}; expected one "
                         f"{tuple(images.shape[1:])} view per visible sample ({int(vis.sum())})")
    images = torch.cat([images[vis], second, images[~vis]])
    pids = torch.cat([pids[vis], pids[vis], pids[~vis]])
    modality = torch.cat([modality[vis], modality[vis], modality[~vis]])
    return images, pids, modality


class BaselineRecipe(Method):
    """ID + metric losses on :class:`ReIDNet` (``method: baseline``, ``agw`` or ``caj``).

    Config sections: ``model`` (:class:`ModelSettings`), ``loss`` (:class:`LossSettings`), ``recipe``
    (:class:`RecipeSettings`).
    """

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        self.model = self.build_model(num_classes)

    def build_model(self, num_classes: int):
        return ReIDNet(num_classes, **to_dict(self.settings.model))

    @classmethod
    def single_modality_problem(cls, cfg: dict) -> str | None:
        """ID + WRT/triplet/ADP need identities only; CAJ's tri-modal batch and the hetero-center triplet
        need infrared images (a two-stream stem just leaves its infrared copy unused)."""
        method, settings = cfg.get("method"), cls.parse_settings(cfg)
        if settings.recipe.channel_exchange:
            return (f"method {method!r} with recipe.channel_exchange: true builds CAJ's visible / channel-exchanged / "
                    "infrared batch, which needs infrared images; set recipe.channel_exchange: false")
        if settings.loss.hetero_center > 0:
            return (f"method {method!r} with loss.hetero_center > 0 pulls each identity's visible and infrared "
                    "centres together, which needs infrared images; set loss.hetero_center: 0")
        return None

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.settings.recipe.backbone_lr_mult)

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch[:4]
        second = batch[4] if len(batch) > 4 else None  # CAJ's raw-image second views (data.augment: caj)
        if self.settings.recipe.channel_exchange:
            images, pids, modality = tri_modal(images, pids, modality, second=second)
        out = model(images, modality)
        loss = self.settings.loss
        terms = {"id": loss.id * id_loss(out["logits"], pids, loss.label_smoothing)}
        terms.update(loss.terms(out["pooled"], pids, modality))
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)


for _name in ("baseline", "agw", "caj"):
    METHODS.register(_name)(BaselineRecipe)
