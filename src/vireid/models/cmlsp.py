"""CM-LSP-GE's network: an attention two-stream ResNet, a global branch, a BN-GE branch and h stripes.

CM-LSP-GE (Wang, Li, Ma, "Cross-modal Local Shortest Path and Global
Enhancement for Visible-Thermal Person Re-Identification"; survey seed 002,
section 6) names its parts but the survey defines only the losses and the
stripe distance. vireid's readings (their sizes are settings in ``configs/cmlsp_sysu.yaml``):

* "attention-based two-stream ResNet": AGW's backbone
  (:class:`vireid.models.reid_net.Backbone`: per-modality stem, shared
  layer1-4, non-local attention blocks after layer2/layer3);
* global feature: GeM (or average) pooling of the layer4 map, then a BN neck
  and a classifier (L_id^g; hetero-center triplet L_Tri^g on the pooled feature);
* BN-GE, "batch-normalisation global feature enhancement": not defined by the
  survey. **vireid's reading** (after the normalisation-based channel
  attention of NAM, Liu et al. 2021): the BN scale factors rank the channels,

      e = g * sigmoid(w * BN(g)),   w_c = C |gamma_c| / sum_k |gamma_k|   (mean 1)

  so a channel is kept where this sample is above the batch's mean and the
  BN has learnt the channel matters -- the "enhanced difference between
  classes" the survey describes. e gets its own BN neck and classifier
  (L_id^eg) and the hetero-center triplet (L_Tri^eg);
* local branch: the layer4 map average-pooled into h horizontal stripes, a
  shared 1x1 conv + BN reduction to ``local_dim`` channels (the survey gives
  no width), and one classifier per stripe. No ReLU after the BN (AlignedReID
  has one): in a 6-epoch CPU run of ours the BN shifts all went negative, every
  stripe feature became 0 and the local triplet sat at its margin with no
  gradient.

Train mode returns {"global", "global_bn", "logits", "enhanced", "enhanced_bn", "logits_enhanced",
"local" (B, h, local_dim), "logits_local" (B, h, C)}. Eval mode: ``test_feature`` -- "cat" (L2-normalised
global and enhanced BN features side by side; vireid's choice, the survey does not say), "global" or "enhanced".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BNNeck, classifier
from .registry import MODELS
from .reid_net import AGW_NON_LOCAL, Backbone, init_classifier, make_pool

TEST_FEATURES = ("cat", "global", "enhanced")


class BNGlobalEnhancement(nn.Module):
    """vireid's BN-GE: e = g * sigmoid(w * BN(g)), w = C |gamma| / sum |gamma| (see the module docstring)."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)

    def channel_weights(self) -> torch.Tensor:
        gamma = self.bn.weight.abs()
        return gamma * gamma.numel() / gamma.sum().clamp(min=1e-12)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return g * torch.sigmoid(self.channel_weights() * self.bn(g))


class StripeHead(nn.Module):
    """(B, C, H, W) map -> h horizontal stripe features (B, h, dim): average pool per stripe, shared 1x1
    conv + BN reduction (no ReLU, so a stripe feature cannot die to all zeros)."""

    def __init__(self, in_channels: int, stripes: int, dim: int):
        super().__init__()
        self.stripes = stripes
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, dim, 1, bias=False), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] < self.stripes:
            raise ValueError(f"the feature map is {x.shape[2]} rows high, fewer than the {self.stripes} stripes; "
                             f"use taller images or fewer stripes (model.stripes)")
        pooled = F.adaptive_avg_pool2d(x, (self.stripes, 1))  # (B, C, h, 1)
        return self.reduce(pooled).squeeze(3).transpose(1, 2)


@MODELS.register("cmlsp")
class CMLSPNet(nn.Module):
    """The CM-LSP-GE network.

    Args:
        num_classes: training identities.
        depth, last_stride, pretrained, two_stream, non_local, non_local_width: see
            :class:`vireid.models.reid_net.Backbone` (AGW's settings by default).
        pool, gem_p: global pooling ("gem" p = 3, or "avg").
        stripes: h, the number of horizontal stripes; local_dim: their reduced width.
        classifier_std: N(0, std) classifier init (None = PyTorch default).
        test_feature: "cat", "global" or "enhanced"; test_normalize: L2-normalise (each part, for "cat").
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 two_stream: bool = True, non_local=AGW_NON_LOCAL, non_local_width: str | int = "agw",
                 pool: str = "gem", gem_p: float = 3.0, stripes: int = 6, local_dim: int = 256,
                 classifier_std: float | None = 0.001, test_feature: str = "cat", test_normalize: bool = True,
                 backbone: str = "resnet", frozen_blocks: int = 0):
        super().__init__()
        if test_feature not in TEST_FEATURES:
            raise ValueError(f"CM-LSP-GE test_feature must be one of {TEST_FEATURES}, got {test_feature!r}")
        if stripes < 1 or local_dim < 1:
            raise ValueError(f"stripes and local_dim must be >= 1, got {stripes} and {local_dim}")
        self.backbone = Backbone(depth, last_stride, pretrained, two_stream, non_local, non_local_width, backbone,
                                 frozen_blocks=frozen_blocks)
        dim = self.backbone.out_channels
        self.pool = make_pool(pool, gem_p)
        self.global_neck = BNNeck(dim)
        self.classifier = init_classifier(classifier(dim, num_classes), classifier_std)
        self.enhance = BNGlobalEnhancement(dim)
        self.enhanced_neck = BNNeck(dim)
        self.classifier_enhanced = init_classifier(classifier(dim, num_classes), classifier_std)
        self.stripes = StripeHead(dim, stripes, local_dim)
        self.classifiers_local = nn.ModuleList(
            init_classifier(classifier(local_dim, num_classes), classifier_std) for _ in range(stripes))
        self.test_feature = test_feature
        self.test_normalize = test_normalize
        self.feature_dim = 2 * dim if test_feature == "cat" else dim

    def head_parameters(self):
        """Parameters outside the backbone (necks, BN-GE, stripe reduction, classifiers)."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]

    def forward(self, images: torch.Tensor, modality: torch.Tensor | None = None):
        x = self.backbone(images, modality)
        g = self.pool(x)
        e = self.enhance(g)
        g_bn, e_bn = self.global_neck(g), self.enhanced_neck(e)
        if not self.training:
            return self._test_feature(g_bn, e_bn)
        local = self.stripes(x)
        logits_local = torch.stack([head(local[:, i]) for i, head in enumerate(self.classifiers_local)], dim=1)
        return {"map": x, "global": g, "global_bn": g_bn, "logits": self.classifier(g_bn),
                "enhanced": e, "enhanced_bn": e_bn, "logits_enhanced": self.classifier_enhanced(e_bn),
                "local": local, "logits_local": logits_local}

    def _test_feature(self, g_bn: torch.Tensor, e_bn: torch.Tensor) -> torch.Tensor:
        norm = (lambda t: F.normalize(t, dim=1)) if self.test_normalize else (lambda t: t)
        if self.test_feature == "global":
            return norm(g_bn)
        if self.test_feature == "enhanced":
            return norm(e_bn)
        return torch.cat([norm(g_bn), norm(e_bn)], dim=1)
