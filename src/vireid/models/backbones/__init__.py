"""Backbones with torchvision- / torchreid-compatible parameter names (neither library is used).

``build_trunk(backbone, depth, parts, last_stride)`` is what the method models
call, so every method can run on every backbone: ``backbone="resnet"`` with
``depth`` 18/34/50, ``"osnet_x1_0"``, ``"osnet_x0_75"``, ``"osnet_x0_5"``,
``"osnet_x0_25"``, or the plain CNN ``"plain_w<width>"`` (e.g. ``plain_w32``). All families build the
same five split points ("stem",
"layer1".."layer4") and expose ``stage(part)``, ``stage_channels``,
``out_channels`` and ``unbuilt_prefixes()``.
"""

from .osnet import OSNet, osnet
from .plain import PlainTrunk, plain_width
from .resnet import ResNet, build_resnet, load_pretrained, resnet18, resnet34, resnet50

OSNET_PREFIX = "osnet_"
BACKBONES = ("resnet", *(OSNET_PREFIX + w for w in ("x1_0", "x0_75", "x0_5", "x0_25")), "plain_w<width>")


def build_trunk(backbone: str = "resnet", depth: int = 50, **kwargs):
    """A ResNet (``depth``), OSNet or plain-CNN (width from the name) trunk or slice; ``kwargs`` go to its
    constructor."""
    if backbone == "resnet":
        return build_resnet(depth, **kwargs)
    if backbone in BACKBONES:
        return osnet(backbone[len(OSNET_PREFIX):], **kwargs)
    width = plain_width(str(backbone))
    if width is not None:
        return PlainTrunk(width, **kwargs)
    raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "OSNet", "PlainTrunk", "ResNet", "build_resnet", "build_trunk", "load_pretrained", "osnet",
           "resnet18",
           "resnet34", "resnet50"]
