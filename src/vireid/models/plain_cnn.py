"""A plain two-stem CNN: the yardstick every VI-ReID method should beat on the same budget.

Why it exists: a re-ID method earns its complexity only if it beats what a
student writes in an afternoon, trained for the same wall time on the same
data. This is that network: per modality a two-layer stem (3x3 conv/2, 3x3
conv, max-pool), then four shared 3x3 conv layers (max-pool after the first
two), global average pooling, a BN neck and a bias-free classifier -- six
convolutions, no attention, no ImageNet weights. ``width`` 32 gives ~1.3 M
parameters and a 256-d feature.

The layers are :class:`vireid.models.backbones.plain.PlainTrunk`'s, which any method can use as its
backbone (``model.backbone: plain_w32``). Its outputs have the names of :class:`vireid.models.reid_net.ReIDNet`'s
({"map", "pooled", "bn", "logits"} in train mode, the L2-normalised BN feature
in eval mode), so the ``plain`` recipe trains it with ID + batch-hard triplet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.records import INFRARED, VISIBLE
from .backbones.plain import PARTS, PlainTrunk
from .layers import BNNeck, check_modalities, classifier
from .registry import MODELS


@MODELS.register("plain_cnn")
class PlainCNN(nn.Module):
    """Two stems (visible, infrared) + four shared conv layers + average pooling + BN neck + classifier.

    Args:
        num_classes: training identities.
        width: channels of the stems; the shared layers use 2x, 4x, 8x, 8x.
        two_stream: one stem per modality (default) or a shared one.
        test_normalize: L2-normalise the test feature.

    ``forward(images, modality)``: modality (B,) of 0 (visible) / 1 (infrared), required when two_stream.
    """

    def __init__(self, num_classes: int, width: int = 32, two_stream: bool = True, test_normalize: bool = True):
        super().__init__()
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"plain_cnn width must be a positive int, got {width!r}")
        self.two_stream = bool(two_stream)
        self.stems = nn.ModuleList(PlainTrunk(width, parts=PARTS[:1]) for _ in range(2 if self.two_stream else 1))
        self.body = PlainTrunk(width, parts=PARTS[1:])
        self.feature_dim = dim = self.body.out_channels
        self.bn_neck = BNNeck(dim)
        self.classifier = classifier(dim, num_classes)
        self.test_normalize = test_normalize

    def head_parameters(self):
        """BN neck and classifier (the recipe's head learning-rate group)."""
        return [*self.bn_neck.parameters(), *self.classifier.parameters()]

    def stem(self, images: torch.Tensor, modality: torch.Tensor | None) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not self.two_stream:
            return self.stems[0](images)
        if modality is None or modality.shape != images.shape[:1]:
            got = None if modality is None else tuple(modality.shape)
            raise ValueError(f"a two-stem network needs a per-sample modality tensor of shape "
                             f"({images.shape[0]},), got {got}")
        check_modalities(modality)
        vis, ir = modality == VISIBLE, modality == INFRARED
        if bool(vis.all()) or bool(ir.all()):
            return self.stems[0 if bool(vis.all()) else 1](images)
        out_vis, out_ir = self.stems[0](images[vis]), self.stems[1](images[ir])
        x = out_vis.new_empty((images.shape[0], *out_vis.shape[1:]))
        x[vis], x[ir] = out_vis, out_ir
        return x

    def forward(self, images: torch.Tensor, modality: torch.Tensor | None = None):
        x = self.body(self.stem(images, modality))
        pooled = x.mean(dim=(2, 3))
        bn = self.bn_neck(pooled)
        if not self.training:
            return F.normalize(bn, dim=1) if self.test_normalize else bn
        return {"map": x, "pooled": pooled, "bn": bn, "logits": self.classifier(bn)}
