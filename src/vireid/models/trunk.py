"""The trunk's settings, written once: every method whose network stands on a backbone embeds them.

A method's ``model`` section dataclass subclasses :class:`TrunkSettings`
(IDKL, MAUM, NFormer: backbone, depth, last stride, weights) or
:class:`TwoStreamSettings` (the AGW family: also the per-modality stem and
non-local blocks of :class:`vireid.models.reid_net.Backbone`), so the keys and
their checks are the same in every preset, the way fast-reid's
``MODEL.BACKBONE`` subtree is; a method redeclares a field only to change its
default (AGW's non-local layout, NFormer's shared stem). The keys stay flat in
the YAML (``model.depth``, not ``model.trunk.depth``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vireid.schema import setting


@dataclass(frozen=True)
class TrunkSettings:
    """``model.backbone``/``depth``/``last_stride``/``pretrained``: which trunk, and from which weights."""

    backbone: str = setting("resnet", doc="resnet (model.depth), osnet_x1_0..x0_25, efficientnet_lite0, "
                                          "plain_w<width> or a ViT (vireid.models.backbones)")
    depth: int = setting(50, choices=(18, 34, 50), doc="ResNet depth (read by backbone: resnet only)")
    last_stride: int = setting(1, choices=(1, 2), doc="stride of the last stage (1: the re-ID convention)")
    pretrained: str | None = setting(None, doc="null (random init), imagenet, a weight name "
                                               "(resnet50.tv_in1k, ...) or a file (vireid.models.backbones.weights)")
    frozen_blocks: int = setting(0, low=0, doc="efficientnet_lite0 only: the stem conv and its first N blocks kept "
                                               "at their loaded weights (no gradient, BN on running statistics)")


@dataclass(frozen=True)
class TwoStreamSettings(TrunkSettings):
    """The AGW-style trunk: one stem per modality (or a shared one) and non-local blocks."""

    two_stream: bool = setting(True, doc="one stem per modality (AGW's layout) instead of a shared one")
    non_local: tuple[int, ...] = setting((0, 0, 0, 0), doc="non-local blocks after the last n blocks of each stage")
    non_local_width: str | int = setting("agw", doc="agw (1 inner channel, AGW's code), half (C/2) or an integer")


AGW_NON_LOCAL = (0, 2, 3, 0)  # AGW's layout: 2 blocks in layer2, 3 in layer3
