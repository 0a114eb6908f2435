"""SPOT as a recipe (survey seed 002, section 4.3):

    L_total = L_B + lambda_1 L_IS + lambda_2 L_IP + L_IF,    each L_x = L_id + L_tri

L_B on the backbone's pooled feature, L_IS on the ASR feature, L_IP on the
part-interaction feature, L_IF on the fused feature: cross-entropy on each
branch's BN-neck logits plus a triplet-type metric term on its pre-BN feature
(``loss.triplet``/``loss.wrt``/``loss.hetero_center``, :class:`vireid.methods.common.MetricLosses`;
vireid reads the survey's L_tri as the batch-hard triplet, margin 0.3). The survey gives no
lambda values; both are 1 in vireid's presets. There are no SPOT-specific loss functions, so
there is no ``losses/spot.py``: the terms are vireid's :func:`id_loss` and metric losses.

Two methods share the recipe:

* ``spot``: needs a keypoint file (``data.keypoints``, ``docs/keypoints.md``); batches and test
  images carry 17 heat-maps each;
* ``spot_nopose``: vireid's variant without keypoints: fixed horizontal stripes for the part maps
  and appearance-only attention. Its runs log it and its evaluation reports carry the tag
  ``spot_nopose: fixed stripes, no keypoints``, so its numbers are never mistaken for SPOT's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from vireid.data.image_dataset import batch_extras
from vireid.data.keypoints import DEFAULT_FILE, flip_heatmaps, keypoint_file
from vireid.losses import id_loss
from vireid.methods import METHODS
from vireid.methods.base import Method
from vireid.methods.common import MetricLosses, head_and_backbone_groups
from vireid.models import build_model
from vireid.models.spot import ATTENTIONS, BRANCHES, TEST_FEATURES
from vireid.models.trunk import TwoStreamSettings
from vireid.schema import DataSettings, parse_section, setting, to_dict

log = logging.getLogger(__name__)

NOPOSE_TAG = "spot_nopose: fixed stripes, no keypoints"


@dataclass(frozen=True)
class ModelSettings(TwoStreamSettings):
    structure_channels: int = setting(256, low=1, doc="C_S, the relation network's output width")
    relation_width: int = setting(64, low=1)
    reduction: int = setting(8, low=1, doc="K/Q width = C_I / reduction")
    attention: str = setting("cosine", choices=ATTENTIONS,
                             doc="ASR logits: cosine (cos(K, Q) / temperature, bounded) or dot (the survey's K^T Q)")
    attention_temperature: float = setting(0.1, low=1e-3, doc="tau of the cosine ASR logits (|logit| <= 1 / tau)")
    parts: int = setting(6, low=1, doc="p, part maps")
    heads: int = setting(8, low=1)
    transformer_layers: int = setting(1, low=1)
    transformer_ffn: int | None = setting(None, low=1, doc="feed-forward width (None = C_I)")
    dropout: float = setting(0.1, low=0, high=1)
    pe_base: float = setting(10000.0, low=1, doc="Q of the sinusoidal part encodings")
    pool: str = setting("avg", choices=("avg", "gem"))
    gem_p: float = setting(3.0, low=1)
    classifier_std: float | None = setting(0.001, low=0)
    test_feature: str = setting("fused", choices=TEST_FEATURES)
    test_normalize: bool = setting(True)


@dataclass(frozen=True)
class RecipeSettings:
    backbone_lr_mult: float = setting(0.1, low=0)


@dataclass(frozen=True)
class LossSettings(MetricLosses):
    id: float = setting(1.0, low=0, doc="weight of L_id in every branch")
    lambda_asr: float = setting(1.0, low=0, doc="lambda_1, weight of L_IS")
    lambda_part: float = setting(1.0, low=0, doc="lambda_2, weight of L_IP")
    label_smoothing: float = setting(0.0, low=0, high=1)


@METHODS.register("spot")
class SpotRecipe(Method):
    """``method: spot``; sections ``model`` (:class:`ModelSettings`), ``loss`` (:class:`LossSettings`
    plus the metric-loss keys of :class:`MetricLosses`), ``recipe``, ``eval.flip``."""

    pose = True
    uses_heatmaps = True

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def __init__(self, cfg: dict, num_classes: int):
        super().__init__(cfg, num_classes)
        self.model = build_model("spot", num_classes=num_classes, pose=self.pose, **to_dict(self.settings.model))
        if not self.pose:
            log.info("%s: part maps are fixed horizontal stripes and attention sees appearance only; "
                     "no keypoints are used (this is not SPOT as published)", self.name)

    @classmethod
    def check_inputs(cls, cfg: dict, root) -> None:
        """Before any data is read: ``spot`` refuses a dataset without its keypoint file."""
        setting_ = parse_section(DataSettings, cfg.get("data"), "data").keypoints
        path = keypoint_file(root, setting_)
        if path is None:
            raise ValueError(f"method spot needs per-image keypoints: set data.keypoints (the presets use "
                             f"{DEFAULT_FILE}, read from the dataset root); method spot_nopose "
                             f"(preset spot_nopose_sysu) trains without them")
        if not path.is_file():
            raise FileNotFoundError(
                f"method spot needs a keypoint file and {path} does not exist (data.keypoints: {setting_}). "
                f"`vireid synth` writes {DEFAULT_FILE} for its synthetic data; for a real dataset run a COCO-17 "
                f"pose estimator and write its output in vireid's format (docs/keypoints.md); or train "
                f"spot_nopose_sysu, the variant with fixed stripes and no keypoints")

    def param_groups(self):
        return head_and_backbone_groups(self.model, self.settings.recipe.backbone_lr_mult)

    def training_step(self, model, batch) -> dict:
        images, pids, _, modality = batch[:4]
        heatmaps = batch_extras(batch).get("heatmaps")
        out = model(images, modality, heatmaps) if self.pose else model(images, modality)
        loss = self.settings.loss
        weights = {"base": 1.0, "asr": loss.lambda_asr, "part": loss.lambda_part, "fused": 1.0}
        terms = {}
        for branch in BRANCHES:
            if not weights[branch]:
                continue
            w = weights[branch]
            if loss.id:
                terms[f"id_{branch}"] = w * loss.id * id_loss(out["logits_" + branch], pids, loss.label_smoothing)
            for name, value in loss.terms(out[branch], pids, modality, suffix=f"_{branch}").items():
                terms[name] = w * value
        if not terms:
            raise ValueError("every SPOT loss weight is 0; set loss.id or a metric loss (loss.triplet, loss.wrt)")
        return {"loss": sum(terms.values()), **terms}

    @torch.no_grad()
    def embed(self, images: torch.Tensor, modality: torch.Tensor, heatmaps: torch.Tensor | None = None):
        if self.pose and heatmaps is None:
            raise ValueError("method spot embeds an image only with its keypoint heat-maps (evaluate with "
                             "`vireid eval` on a dataset root holding the keypoint file); spot_nopose needs none")
        extra = (heatmaps,) if self.pose else ()
        feat = self.model(images, modality, *extra)
        if self.flip:  # the mirrored image with mirrored heat-maps (left and right joints swapped)
            flipped = (flip_heatmaps(heatmaps),) if self.pose else ()
            feat = 0.5 * (feat + self.model(images.flip(3), modality, *flipped))
        return feat


@METHODS.register("spot_nopose")
class SpotNoPoseRecipe(SpotRecipe):
    """``method: spot_nopose``: SPOT's branches and losses with fixed stripe part maps and no keypoints."""

    pose = False
    uses_heatmaps = False
    report_tags = (NOPOSE_TAG,)

    @classmethod
    def check_inputs(cls, cfg: dict, root) -> None:
        if parse_section(DataSettings, cfg.get("data"), "data").keypoints:
            raise ValueError("method spot_nopose does not read keypoints (its part maps are fixed stripes); "
                             "remove data.keypoints, or train method spot to use them")
