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
"""

from .efficientnet import NAME as EFFICIENTNET_LITE0
from .efficientnet import EfficientNetLite, efficientnet_lite0
from .osnet import OSNet, osnet
from .plain import PlainTrunk, plain_width
from .resnet import ResNet, build_resnet, load_pretrained, resnet18, resnet34, resnet50
from .vit import VisionTransformer, build_vit, is_vit

OSNET_PREFIX = "osnet_"
BACKBONES = ("resnet", *(OSNET_PREFIX + w for w in ("x1_0", "x0_75", "x0_5", "x0_25")), EFFICIENTNET_LITE0,
             "plain_w<width>",
             "vit_base", "vit_small", "vit_tiny", "vit_d<dim>_l<depth>_h<heads>")


def build_trunk(backbone: str = "resnet", depth: int = 50, **kwargs):
    """A ResNet (``depth``), OSNet, plain-CNN (width from the name) or ViT trunk or slice; ``kwargs`` go to its
    constructor."""
    if is_vit(backbone):
        return build_vit(backbone, **kwargs)
    if backbone == "resnet":
        return build_resnet(depth, **kwargs)
    if str(backbone).startswith(OSNET_PREFIX) and backbone in BACKBONES:
        return osnet(backbone[len(OSNET_PREFIX):], **kwargs)
    if backbone == EFFICIENTNET_LITE0:
        return efficientnet_lite0(**kwargs)
    width = plain_width(str(backbone))
    if width is not None:
        return PlainTrunk(width, **kwargs)
    raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "EfficientNetLite", "OSNet", "PlainTrunk", "ResNet", "VisionTransformer", "build_resnet",
           "build_trunk", "build_vit", "efficientnet_lite0", "is_vit", "load_pretrained", "osnet", "resnet18",
           "resnet34", "resnet50"]
