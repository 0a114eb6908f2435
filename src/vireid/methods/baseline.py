"""The re-ID baseline recipe, and AGW and CAJ as its configurations.

One recipe on :class:`vireid.models.baseline.ReIDNet`: ID loss on the BN-neck
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

import copy
import inspect

import torch

from vireid.data.channel_aug import ChannelExchange
from vireid.data.records import VISIBLE
from vireid.losses import id_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses, eval_flip, flip_average, head_and_backbone_groups, recipe_sections
from vireid.models.baseline import ReIDNet

MODEL_KEYS = tuple(inspect.signature(ReIDNet.__init__).parameters)[1:]
LOSS_KEYS = ("id", "label_smoothing", *MetricLosses.KEYS)
RECIPE_KEYS = ("backbone_lr_mult", "channel_exchange")


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

    Config sections: ``model`` (ReIDNet arguments), ``loss`` (``id``,
    ``label_smoothing`` and the metric-loss keys), ``recipe``
    (``backbone_lr_mult``, ``channel_exchange``), ``eval.flip``.
    """

    def __init__(self, cfg: dict, num_classes: int):
        cfg = copy.deepcopy(cfg)
        self.name = cfg["method"]
        model_cfg, loss, recipe = recipe_sections(cfg, num_classes, MODEL_KEYS, LOSS_KEYS, RECIPE_KEYS)
        self.model = ReIDNet(**model_cfg)
        self.id_weight = float(loss.get("id", 1.0))
        self.label_smoothing = float(loss.get("label_smoothing", 0.0))
        self.metric = MetricLosses.from_dict(loss)
        self.backbone_lr_mult = recipe.get("backbone_lr_mult", 1.0)
        self.channel_exchange = bool(recipe.get("channel_exchange", False))
        self.flip = eval_flip(cfg)
        self.num_classes = num_classes

    @classmethod
    def single_modality_problem(cls, cfg: dict) -> str | None:
        """ID + WRT/triplet/ADP need identities only; CAJ's tri-modal batch and the hetero-center triplet
        need infrared images (a two-stream stem just leaves its infrared copy unused)."""
        method = cfg.get("method")
        if (cfg.get("recipe") or {}).get("channel_exchange"):
            return (f"method {method!r} with recipe.channel_exchange: true builds CAJ's visible / channel-exchanged / "
                    "infrared batch, which needs infrared images; set recipe.channel_exchange: false")
        if float((cfg.get("loss") or {}).get("hetero_center", 0.0) or 0.0) > 0:
            return (f"method {method!r} with loss.hetero_center > 0 pulls each identity's visible and infrared "
                    "centres together, which needs infrared images; set loss.hetero_center: 0")
        return None

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.backbone_lr_mult)

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch[:4]
        second = batch[4] if len(batch) > 4 else None  # CAJ's raw-image second views (data.augment: caj)
        if self.channel_exchange:
            images, pids, modality = tri_modal(images, pids, modality, second=second)
        out = model(images, modality)
        terms = {"id": self.id_weight * id_loss(out["logits"], pids, self.label_smoothing)}
        terms.update(self.metric.terms(out["pooled"], pids, modality))
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        return flip_average(self.model, images, modality, self.flip)


for _name in ("baseline", "agw", "caj"):
    METHODS.register(_name)(BaselineRecipe)
