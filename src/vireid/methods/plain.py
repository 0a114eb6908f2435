"""``plain``: the plain-CNN baseline recipe (ID + batch-hard triplet on :class:`PlainCNN`).

The yardstick of ``configs/baseline_sysu.yaml``: what a method must beat on
the same data and wall time. The step is the baseline recipe's (ID loss on
the BN-neck logits, the switched-on metric losses on the pooled feature);
only the network differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from vireid.methods import METHODS
from vireid.methods.baseline import BaselineRecipe, LossSettings, RecipeSettings
from vireid.models.plain_cnn import PlainCNN
from vireid.schema import setting, to_dict


@dataclass(frozen=True)
class ModelSettings:
    """``model:`` :class:`PlainCNN`'s arguments."""

    width: int = setting(32, low=1, doc="channels of the first conv layer (doubling twice)")
    two_stream: bool = setting(True, doc="one stem per modality")
    test_normalize: bool = setting(True)


@METHODS.register("plain")
class PlainRecipe(BaselineRecipe):
    """Config sections: ``model`` (:class:`ModelSettings`), ``loss`` and ``recipe`` (the baseline recipe's)."""

    sections = {"model": ModelSettings, "loss": LossSettings, "recipe": RecipeSettings}

    def build_model(self, num_classes: int):
        return PlainCNN(num_classes, **to_dict(self.settings.model))
