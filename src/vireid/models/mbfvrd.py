"""MBFVRD (Wang, Wang, Chen, J. Chongqing Technology & Business Univ. 41(4), 2024; seed 003).

AGW's two-stream backbone (:class:`vireid.models.reid_net.Backbone`) with

* DIAM, two heads on the layer4 map, each with its own learnable-p GeM
  (one p per channel, Eq. 3's p_k, seed 003:84-89; ``gem_p_per_channel:
  false`` = one scalar p per branch, vireid's form before issue 21):
  global1: f1 = GeM1(x), b1 = BN1(f1) -> FC1;
  global2: f2 = b1 + GeM2(x), b2 = BN2(f2) -> FC2.
  Metric losses use f1, f2 (before BN), ID losses b1, b2 (BNNeck convention).
* VRD: one information-bottleneck MLP shared by both branches,
  z_i = IB(b_i) with IB = Linear(D, 1024) ReLU Linear(1024, 512) ReLU, and a
  classifier per branch on z_i; the recipe adds KL(p(y|b_i) || p(y|z_i)).

The paper does not say which feature is tested; ``test_feature`` chooses
("cat": the L2-normalised b1 and b2 side by side, the default; "bn1"; "bn2").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BNNeck, GeM, classifier
from .registry import MODELS
from .reid_net import AGW_NON_LOCAL, Backbone, init_classifier

TEST_FEATURES = ("cat", "bn1", "bn2")


class InformationBottleneck(nn.Sequential):
    """VRD's shared MLP: Linear + ReLU layers of the given widths (2048 -> 1024 -> 512 in the paper)."""

    def __init__(self, in_dim: int, widths=(1024, 512)):
        widths = tuple(widths)
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"information bottleneck widths must be positive ints, got {widths!r}")
        layers, dim = [], in_dim
        for w in widths:
            layers += [nn.Linear(dim, int(w)), nn.ReLU(inplace=True)]
            dim = int(w)
        super().__init__(*layers)
        self.out_dim = dim


@MODELS.register("mbfvrd")
class MBFVRD(nn.Module):
    """The MBFVRD network.

    Args:
        num_classes: training identities.
        depth, last_stride, pretrained, two_stream, non_local, non_local_width, backbone: see
            :class:`vireid.models.reid_net.Backbone` (AGW's settings by default).
        gem_p, gem_learnable: initial GeM exponent of both branches (3, learnable).
        gem_p_per_channel: a learnable p per channel (Eq. 3, the default) or one per branch (False).
        gem_p_min: lower clamp of a learnable p (1 = average pooling; None = no clamp). Ours: trained at
            the heads' lr 0.1, an unclamped p went below zero within 30 steps (NaN).
        ib_widths: widths of the shared information-bottleneck MLP (1024, 512).
        classifier_std: N(0, std) classifier init (None = PyTorch default).
        test_feature: "cat", "bn1" or "bn2"; test_normalize: L2-normalise (each part, for "cat").

    Train mode returns {"pooled1", "pooled2", "bn1", "bn2", "logits1", "logits2",
    "z1", "z2", "z_logits1", "z_logits2"}; eval mode the test feature.
    """

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, pretrained: str | None = None,
                 two_stream: bool = True, non_local=AGW_NON_LOCAL, non_local_width: str | int = "agw",
                 gem_p: float = 3.0, gem_learnable: bool = True, gem_p_min: float | None = 1.0,
                 gem_p_per_channel: bool = True, ib_widths=(1024, 512),
                 classifier_std: float | None = 0.001, test_feature: str = "cat", test_normalize: bool = True,
                 backbone: str = "resnet", frozen_blocks: int = 0):
        super().__init__()
        if test_feature not in TEST_FEATURES:
            raise ValueError(f"MBFVRD test_feature must be one of {TEST_FEATURES}, got {test_feature!r}")
        self.backbone = Backbone(depth, last_stride, pretrained, two_stream, non_local, non_local_width, backbone,
                                 frozen_blocks=frozen_blocks)
        dim = self.backbone.out_channels
        if gem_p_per_channel and not gem_learnable:
            raise ValueError("MBFVRD gem_p_per_channel: true needs gem_learnable: true (a fixed p is one number); "
                             "set gem_p_per_channel: false for a fixed p")
        channels = dim if gem_p_per_channel else None
        self.pool1 = GeM(gem_p, learnable=gem_learnable, p_min=gem_p_min, channels=channels)
        self.pool2 = GeM(gem_p, learnable=gem_learnable, p_min=gem_p_min, channels=channels)
        self.bn1, self.bn2 = BNNeck(dim), BNNeck(dim)
        self.ib = InformationBottleneck(dim, ib_widths)
        self.classifier1 = init_classifier(classifier(dim, num_classes), classifier_std)
        self.classifier2 = init_classifier(classifier(dim, num_classes), classifier_std)
        self.z_classifier1 = init_classifier(classifier(self.ib.out_dim, num_classes), classifier_std)
        self.z_classifier2 = init_classifier(classifier(self.ib.out_dim, num_classes), classifier_std)
        self.test_feature = test_feature
        self.test_normalize = test_normalize
        self.feature_dim = 2 * dim if test_feature == "cat" else dim

    def head_parameters(self):
        """Parameters outside the backbone, except the GeM exponents (trained at the heads' learning rate;
        the exponents go with the backbone's lower rate)."""
        return [p for name, p in self.named_parameters()
                if not name.startswith("backbone.") and not name.startswith(("pool1.", "pool2."))]

    def forward(self, images: torch.Tensor, modality: torch.Tensor | None = None):
        x = self.backbone(images, modality)
        f1 = self.pool1(x)
        b1 = self.bn1(f1)
        f2 = b1 + self.pool2(x)
        b2 = self.bn2(f2)
        if not self.training:
            return self._test_feature(b1, b2)
        z1, z2 = self.ib(b1), self.ib(b2)
        return {"map": x, "pooled1": f1, "pooled2": f2, "bn1": b1, "bn2": b2,
                "logits1": self.classifier1(b1), "logits2": self.classifier2(b2),
                "z1": z1, "z2": z2, "z_logits1": self.z_classifier1(z1), "z_logits2": self.z_classifier2(z2)}

    def _test_feature(self, b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
        norm = (lambda t: F.normalize(t, dim=1)) if self.test_normalize else (lambda t: t)
        if self.test_feature == "bn1":
            return norm(b1)
        if self.test_feature == "bn2":
            return norm(b2)
        return torch.cat([norm(b1), norm(b2)], dim=1)
