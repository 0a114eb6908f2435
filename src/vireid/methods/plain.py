"""``plain``: the plain-CNN baseline recipe (ID + batch-hard triplet on :class:`PlainCNN`).

The yardstick of ``configs/baseline_sysu.yaml``: what a method must beat on
the same data and wall time. The step is the baseline recipe's (ID loss on
the BN-neck logits, the switched-on metric losses on the pooled feature);
only the network differs.
"""

from __future__ import annotations

import copy
import inspect

from vireid.methods import METHODS
from vireid.methods.baseline import LOSS_KEYS, BaselineRecipe
from vireid.methods.common import MetricLosses, eval_flip, recipe_sections
from vireid.models.plain_cnn import PlainCNN

MODEL_KEYS = tuple(inspect.signature(PlainCNN.__init__).parameters)[1:]
RECIPE_KEYS = ("backbone_lr_mult",)


@METHODS.register("plain")
class PlainRecipe(BaselineRecipe):
    """Config sections: ``model`` (PlainCNN arguments), ``loss`` (as the baseline recipe's), ``recipe``
    (``backbone_lr_mult``), ``eval.flip``."""

    def __init__(self, cfg: dict, num_classes: int):
        cfg = copy.deepcopy(cfg)
        self.name = cfg["method"]
        model_cfg, loss, recipe = recipe_sections(cfg, num_classes, MODEL_KEYS, LOSS_KEYS, RECIPE_KEYS)
        self.model = PlainCNN(**model_cfg)
        self.id_weight = float(loss.get("id", 1.0))
        self.label_smoothing = float(loss.get("label_smoothing", 0.0))
        self.metric = MetricLosses.from_dict(loss)
        self.backbone_lr_mult = recipe.get("backbone_lr_mult", 1.0)
        self.channel_exchange = False
        self.flip = eval_flip(cfg)
        self.num_classes = num_classes
