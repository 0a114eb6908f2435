"""Backbones with torchvision- / torchreid-compatible parameter names (neither library is used).

``build_trunk(backbone, depth, parts, last_stride)`` is what the method models
call, so every method can run on every backbone: ``backbone="resnet"`` with
``depth`` 18/34/50, ``"osnet_x1_0"``, ``"osnet_x0_75"``, ``"osnet_x0_5"``,
``"osnet_x0_25"``, ``"efficientnet_lite0"`` (see :mod:`~vireid.models.backbones.efficientnet` for its split
points) or the plain CNN ``"plain_w<width>"`` (e.g. ``plain_w32``). All families build the
same five split points ("stem",
"layer1".."layer4") and expose ``stage(part)``, ``stage_channels``,
``out_channels`` and ``unbuilt_prefixes()``. A ViT (``"vit_base"``, ``"vit_small"``, ``"vit_tiny"``,
``"vit_d<dim>_l<depth>_h<heads>"``) splits only into its patch embedding ("stem") and the transformer
(layer1-4 together), which returns tokens, not a map: see :mod:`vireid.models.backbones.vit`.

Each family registers itself in its own module (:func:`~vireid.models.backbones.registry.register_backbone`:
names, factory, default ImageNet weights, weight rule); every module of this package is imported here, so a
new backbone file is found without editing a list. The weight policy is :mod:`~vireid.models.backbones.weights`.
"""

from vireid.registry import import_submodules

from .efficientnet import EfficientNetLite, efficientnet_lite0
from .osnet import OSNet, osnet
from .plain import PlainTrunk
from .registry import backbone_names, find_backbone, register_backbone, unregister_backbone
from .resnet import ResNet, build_resnet, resnet18, resnet34, resnet50
from .vit import VisionTransformer, build_vit, is_vit
from .weights import load_pretrained

import_submodules(__name__)  # backbone files beyond the ones imported above register themselves on import

BACKBONES = backbone_names()  # the names registered by this package's modules (see build_trunk's error for all)


def build_trunk(backbone: str = "resnet", depth: int = 50, **kwargs):
    """The trunk (or slice) of the registered ``backbone`` (``depth``: a ResNet's); ``kwargs`` go to its
    constructor. An unknown name is a ValueError listing the registered ones."""
    return find_backbone(backbone).build(backbone, depth, **kwargs)


def freeze_blocks(parts, blocks: int, backbone: str) -> None:
    """Keep the stem and the first ``blocks`` blocks of every slice in ``parts`` at their loaded weights.

    Why here: every method's network is built from trunk slices, and freezing is the slice's job
    (``EfficientNetLite.freeze``: no gradient, BN on running statistics); this is the one place that checks
    the backbone can do it, so ``model.frozen_blocks`` means the same in every method. 0 freezes nothing.
    """
    if not blocks:
        return
    if not all(hasattr(part, "freeze") for part in parts):
        raise ValueError(f"model.frozen_blocks={blocks!r} needs a backbone that can freeze its low blocks "
                         f"(efficientnet_lite0), not {backbone!r}; set model.frozen_blocks: 0")
    for part in parts:
        part.freeze(blocks)


__all__ = ["BACKBONES", "EfficientNetLite", "OSNet", "PlainTrunk", "ResNet", "VisionTransformer", "backbone_names",
           "build_resnet", "build_trunk", "build_vit", "efficientnet_lite0", "find_backbone", "freeze_blocks", "is_vit",
           "load_pretrained", "osnet", "register_backbone", "resnet18", "resnet34", "resnet50",
           "unregister_backbone"]
